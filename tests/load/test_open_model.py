"""Open-model load (--rate): arrivals keep coming while the system is broken; what no user could start is dropped.

The stamping node is paused for 3 s in the middle of a run at 20 arrivals/s
with two users: both users hang in their POST, the clock keeps offering, and
the arrivals nobody could start within --max-lateness become `dropped`
samples with their intended start. Offered (started + dropped) stays at the
rate through the fault.
"""
from __future__ import annotations

import numpy as np

RATE = 20.0


def test_arrivals_come_at_the_rate_and_are_dropped_while_every_user_is_stuck(run_locust, tmp_path):
    exp = tmp_path / "pause-stamping.yaml"
    exp.write_text(
        "title: stamping paused\n"
        "timeline:\n"
        "  - {name: stamping-pause, at: 3, duration: 3, fault: pause, target: stamping, target_kind: process}\n")
    run = run_locust("stamping.py", "-u", "2", "-r", "2", "-t", "10s", "--rate", str(RATE), "--chaos", str(exp),
                     "--no-report", "--stamp-sizes", "256")
    s = run.samples()
    tail = run.output[-3000:]
    requests = s[s["type"].isin(["POST", "GET", "dropped"])]
    assert requests["ts_intended"].notna().all(), tail
    # the actual start is never before the intended one
    started = requests[requests["type"] != "dropped"]
    assert (started["ts_start"] >= started["ts_intended"] - 0.002).all()
    # each request knows when it could start: at its intended start, or later when no user was free;
    # after the pause the freed users take arrivals that waited for them (the system's time, not the generator's)
    first = started[started["ts_ready"].notna()]
    assert set(first["type"]) == {"POST", "GET"} and len(first) == len(started), tail
    assert (first["ts_ready"] >= first["ts_intended"]).all() and (first["ts_start"] >= first["ts_ready"] - 0.002).all()
    assert (first["ts_ready"] > first["ts_intended"] + 0.5).any(), tail
    # offered = started + dropped, at the rate, second by second, faults included
    t0 = requests["ts_intended"].min()
    per_second = np.bincount((requests["ts_intended"] - t0).astype(int))[1:8]  # whole seconds inside the run
    assert per_second.min() >= 0.8 * RATE and per_second.max() <= 1.2 * RATE, (per_second, tail)
    dropped = requests[requests["type"] == "dropped"]
    # both users hang for the 3 s pause; arrivals older than the 1 s max lateness are dropped: ~2 s of them
    assert 0.5 * 2 * RATE <= len(dropped) <= 1.5 * 3 * RATE, (len(dropped), tail)
    assert dropped["name"].eq("StampingUser").all() and (~dropped["ok"]).all()
    assert dropped["error"].str.startswith("dropped: no free StampingUser").all()
