"""--chaos: the experiment starts with the load and is stopped (healed) when the load stops; the fault is in
the run's journal, the experiment's record in experiments.jsonl, and the report sees both."""
from __future__ import annotations

import json


def test_chaos_experiment_runs_during_the_load_and_heals_at_stop(run_locust, tmp_path):
    exp = tmp_path / "latency.yaml"
    exp.write_text(
        "title: short broker latency\n"
        "timeline:\n"
        "  - {name: broker-latency, at: 1, duration: 60, fault: latency, target: broker, target_kind: proxy,\n"
        "     parameters: {latency: 50, jitter: 0, stream: downstream}}\n")
    run = run_locust("stamping.py", "-u", "1", "-r", "1", "-t", "4s", "--chaos", str(exp), "--thresholds",
                     "stamping")
    lines = [json.loads(x) for x in (run.run_dir / "chaos.jsonl").read_text().splitlines()]
    assert len(lines) == 1, run.output[-3000:]
    fault = lines[0]
    assert fault["name"] == "broker-latency" and fault["outcome"] == "healed"
    info = json.loads((run.run_dir / "run.json").read_text())
    # injected during the load, healed by the test stop (long before the fault's own 60 s)
    assert info["started_at"] < fault["started_at"] < fault["healed_at"] <= info["ended_at"] + 5
    # the experiment's own record: stopped by the end of the load, its fault named
    (record,) = [json.loads(x) for x in (run.run_dir / "experiments.jsonl").read_text().splitlines()]
    assert record["title"] == "short broker latency" and record["file"] == str(exp)
    assert record["status"] == "interrupted" and record["fault_ids"] == [fault["fault_id"]]
    analysis = json.loads((run.run_dir / "analysis.json").read_text())
    assert "broker-latency" in json.dumps(analysis)
    assert [e["status"] for e in analysis["experiments"]] == ["interrupted"]
