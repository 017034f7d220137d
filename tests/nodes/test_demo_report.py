"""A short real run analysed end to end: the demo's flows on the real stack → run directory → report."""
from __future__ import annotations

import json

from analysis.report import build_report
from rundir.write import write_ledger, write_run_info, write_samples, write_truth
from nodes.demo import drive


async def test_demo_flows_land_in_a_report_with_nothing_lost(stack, tmp_path):
    said: list[str] = []
    samples, ledger, truth = await drive(stack.env, said.append)
    assert {s["name"] for s in samples if s["type"] == "e2e"} == {
        "workflow→completed", "stamp→stamped", "introspection→registered"}
    assert all(s["ok"] for s in samples) and len(said) == 3
    run_dir = tmp_path / "run"
    write_run_info(run_dir, {"run_id": "demo-test", "scenario": "demo", "started_at": samples[0]["ts_start"],
                             "ended_at": samples[-1]["ts_start"] + 1, "arguments": {},
                             "stack": {"mode": "embedded", "database": "postgresql://u:secret@127.0.0.1/db"}})
    write_samples(run_dir, samples)
    write_ledger(run_dir, ledger)
    write_truth(run_dir, truth)
    verdict = build_report(run_dir, thresholds=None)
    analysis = json.loads((run_dir / "analysis.json").read_text())
    html = (run_dir / "index.html").read_text()
    assert verdict.report_path and "workflow→completed" in html and "secret" not in html
    # every item the flows caused was acknowledged and stored exactly once
    totals = analysis["loss"]["totals"]
    assert (totals["sent"], totals["ok"], totals["lost"], totals["duplicated"], totals["leaked"]) == (3, 3, 0, 0, 0)
    assert {t["kind"]: t["count"] for t in truth} == {"workflow": 1, "stamp": 1, "introspection": 1}
