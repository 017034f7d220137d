"""Load shapes against the real stack: a burst is journalled and fully registered; a node's heartbeats
keep their intended start times next to the actual ones; shapes honour -t."""
from __future__ import annotations

import json

import pandas as pd


def test_burst_registers_every_node_and_is_journalled(run_locust):
    run = run_locust("introspection.py,locustfiles/shapes/burst.py", "-t", "5s", "--burst", "60")
    s = run.samples()
    reg = s[s["name"] == "introspection→registered"]
    assert len(reg) == 60 and reg["ok"].all(), run.output[-3000:]
    lines = [json.loads(x) for x in (run.run_dir / "chaos.jsonl").read_text().splitlines()]
    bursts = [x for x in lines if x["action"] == "burst"]
    assert len(bursts) == 1 and bursts[0]["parameters"]["users"] == 60
    assert bursts[0]["started_at"] <= reg["ts_start"].min() + 1.0
    assert s["ts_start"].max() - s["ts_start"].min() < 7  # -t honoured by the shape


def test_node_heartbeats_keep_their_intended_start(run_locust):
    run = run_locust("introspection.py", "-u", "2", "-r", "2", "-t", "4s", "--heartbeat", "0.05", "--no-report")
    s = run.samples()
    hb = s[s["name"] == "NODE_HEARTBEAT"].copy()
    assert len(hb) > 40 and hb["ts_intended"].notna().all(), run.output[-3000:]
    # the actual start is never before the intended one, and slots are one interval apart per node
    assert (hb["ts_start"] >= hb["ts_intended"] - 0.002).all()
    # two nodes at 20/s each: every pair of consecutive slots spans one node's interval (50 ms)
    gaps = pd.Series(sorted(hb["ts_intended"])).diff().dropna()
    pairs = gaps.rolling(2).sum().dropna()
    assert abs(pairs.median() - 0.05) < 0.005
