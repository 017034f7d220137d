"""Distributed runs produce one merged run directory and one report.

`--processes 2` (one machine, Locust forks the workers) and a master with
two separately started workers (as on several machines, here on loopback).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from stack.processes import free_port

REPO = Path(__file__).resolve().parents[2]
LOCUST = [sys.executable, "-m", "locust"]


def check_merged(run_dir: Path, workers: int, tail: str) -> None:
    for part in ("run.json", "analysis.json", "index.html"):
        assert (run_dir / part).exists(), f"{part} missing\n{tail}"
    samples = pd.concat([pd.read_parquet(f) for f in (run_dir / "samples").glob("*.parquet")])
    assert samples["process"].nunique() == workers, samples["process"].unique()
    analysis = json.loads((run_dir / "analysis.json").read_text())
    assert analysis["counts"]["samples"] == len(samples), analysis["counts"]
    totals = analysis["loss"]["totals"]
    assert totals["sent"] > 0 and (totals["lost"], totals["duplicated"], totals["leaked"]) == (0, 0, 0), totals


def test_processes_two_one_report(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run(LOCUST + ["-f", "locustfiles/bridge.py", "--headless", "--processes", "2", "-u", "6",
                                    "-r", "6", "-t", "8s", "--stack", "embedded", "--run-dir", str(run_dir),
                                    "--drain", "5"],
                          cwd=REPO, capture_output=True, text=True, timeout=240)
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode in (0, 1), tail
    check_merged(run_dir, 2, tail)


def test_master_and_two_workers_one_report(tmp_path):
    run_dir = tmp_path / "run"
    port = free_port()
    master = subprocess.Popen(
        LOCUST + ["-f", "locustfiles/bridge.py", "--master", "--master-bind-host", "127.0.0.1",
                  "--master-bind-port", str(port), "--headless", "--expect-workers", "2", "-u", "6", "-r", "6",
                  "-t", "8s", "--stack", "embedded", "--run-dir", str(run_dir), "--drain", "5"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    workers = [subprocess.Popen(LOCUST + ["-f", "locustfiles/bridge.py", "--worker", "--master-host", "127.0.0.1",
                                          "--master-port", str(port)],
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(2)]
    try:
        out, _ = master.communicate(timeout=240)
    finally:
        for w in workers + [master]:
            if w.poll() is None:
                w.kill()
    for w in workers:
        w.wait(30)
    tail = out[-3000:]
    assert master.returncode in (0, 1), tail
    check_merged(run_dir, 2, tail)
