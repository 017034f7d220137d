"""The soak's short form: broker kills, pauses and restarts on a seeded timeline under workflow and
stamping load, on a stack of its own; nothing acknowledged is lost, reordered, doubled or left hanging.

The long form (`benchmarks/soak.py --faults 50`) is the figure; this runs the same code over one round.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_nodes_survive_a_round_of_broker_faults_with_nothing_lost_reordered_doubled_or_hung():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--faults", "6", "--round-seconds", "30",
                           "--seed", "7", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    lines = proc.stdout.strip().splitlines()
    assert lines, f"the soak printed nothing (exit {proc.returncode})\n{proc.stderr[-3000:]}"
    counts = json.loads(lines[-1])
    why = f"{counts}\n{proc.stderr[-3000:]}"
    assert counts["faults"] >= 6 and counts["workflows"] > 50 and counts["stamps"] > 50, why
    assert (counts["lost"], counts["out_of_order"], counts["duplicated"], counts["hung"]) == (0, 0, 0, 0), why
    assert proc.returncode == 0, why
