"""Headless exit code: 0 when the thresholds pass, 1 when one fails; the report is in the run directory."""
from __future__ import annotations

import json


def test_exit_code_follows_thresholds(run_locust, tmp_path):
    passing = tmp_path / "pass.yaml"
    passing.write_text("description: lenient\nthresholds:\n  - errors(POST /stamp) < 50%\n  - lost(stamp) == 0\n")
    failing = tmp_path / "fail.yaml"
    failing.write_text("description: impossible\nthresholds:\n  - p95(POST /stamp) < 0.001ms\n")

    ok = run_locust("stamping.py", "-u", "1", "-r", "1", "-t", "3s", "--thresholds", str(passing), name="ok")
    assert ok.returncode == 0, ok.output[-3000:]
    assert json.loads((ok.run_dir / "analysis.json").read_text())["verdict"] == "pass"
    assert (ok.run_dir / "index.html").is_file()

    bad = run_locust("stamping.py", "-u", "1", "-r", "1", "-t", "3s", "--thresholds", str(failing), name="bad")
    assert bad.returncode == 1, bad.output[-3000:]
    assert "FAIL" in bad.output
