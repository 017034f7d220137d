"""Helpers to run Locust as users run it (a subprocess, bounded by -t) against the session's stack."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from rundir.read import read_folder

from rundir.schema import TRUTH_SCHEMA

ROOT = Path(__file__).resolve().parents[2]
LOCUST = str(Path(sys.executable).with_name("locust"))


@dataclass
class LocustRun:
    returncode: int
    output: str
    run_dir: Path
    csv_prefix: Path

    def samples(self) -> pd.DataFrame:
        return read_folder(self.run_dir, "samples").to_pandas()

    def ledger(self) -> pd.DataFrame:
        return read_folder(self.run_dir, "ledger").to_pandas()

    def truth(self) -> pd.DataFrame:
        t = read_folder(self.run_dir, "truth")
        return t.to_pandas() if t is not None else pd.DataFrame(columns=TRUTH_SCHEMA.names)

    def locust_stats(self) -> pd.DataFrame:
        """Locust's own final totals (its --json-file, written at shutdown), one row per name."""
        rows = json.loads(Path(f"{self.csv_prefix}.json").read_text())
        return pd.DataFrame(rows).set_index("name")


@pytest.fixture
def run_locust(stack_state_path, tmp_path):
    """``run_locust("stamping.py", "-u", "2", "-t", "5s", ...)`` -> LocustRun (headless, external stack)."""

    def run(locustfile: str, *args: str, timeout: float = 120.0, name: str = "run") -> LocustRun:
        run_dir = tmp_path / name
        csv_prefix = tmp_path / f"{name}-locust"
        env = dict(os.environ, BRIDGESTORM_STATE=stack_state_path)
        cmd = [LOCUST, "-f", str(",".join(str(ROOT / "locustfiles" / f) if not f.startswith("locustfiles/") else str(ROOT / f) for f in locustfile.split(","))), "--headless", "--stack", "external",
               "--stack-state", stack_state_path, "--run-dir", str(run_dir), "--json-file", str(csv_prefix),
               "--only-summary", "--drain", "5", *args]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        return LocustRun(proc.returncode, proc.stdout + proc.stderr, run_dir, csv_prefix)

    return run
