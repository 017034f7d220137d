"""--stack embedded: the master starts its own stack before the test and stops it after (workers do not)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from rundir.read import read_folder

ROOT = Path(__file__).resolve().parents[2]
LOCUST = str(Path(sys.executable).with_name("locust"))


def test_embedded_stack_lifecycle(tmp_path):
    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL",
                                                             "BRIDGESTORM_STATE")}
    proc = subprocess.run(
        [LOCUST, "-f", str(ROOT / "locustfiles" / "stamping.py"), "--headless", "--processes", "2", "-u", "2",
         "-r", "2", "-t", "3s", "--stack", "embedded", "--run-dir", str(run_dir), "--drain", "3", "--only-summary",
         "--thresholds", "stamping"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    out = proc.stdout + proc.stderr
    info = json.loads((run_dir / "run.json").read_text())
    assert info["stack"]["mode"] == "embedded", out[-3000:]
    samples = read_folder(run_dir, "samples").to_pandas()
    assert (samples["name"] == "POST /stamp").sum() > 0 and samples["ok"].all(), out[-3000:]
    assert out.count("starting the embedded stack") == 1  # the master only, not the two workers
    # stopped after the run: no process of the stack is left
    from stack.state import StateFile

    sf = StateFile(info["stack"]["state"])
    alive = [p.name for p in sf.read().parts.values() if p.kind == "process" and p.process() is not None] \
        if sf.exists() else []
    assert alive == [], out[-3000:]
    assert (run_dir / "locust" / "report.html").is_file()
    assert (run_dir / "truth").is_dir() and (run_dir / "index.html").is_file()
