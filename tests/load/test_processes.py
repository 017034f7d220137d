"""Samples and ledger from a 2-process run (``--processes 2``) merge completely: counts equal Locust's totals."""
from __future__ import annotations

from rundir.read import read_folder


def test_two_processes_merge_completely(run_locust):
    run = run_locust("bridge.py", "--processes", "2", "-u", "6", "-r", "6", "-t", "6s", "--no-report",
                     timeout=180)
    assert run.run_dir.joinpath("run.json").is_file(), run.output[-3000:]
    # every worker finished before the quit, as the master asked (harness/lifecycle.py _finish_workers)
    assert "did not report their end" not in run.output and "Uncaught exception" not in run.output, run.output[-3000:]
    samples = run.samples()
    stats = run.locust_stats()
    # both worker processes wrote their own files
    assert samples["process"].nunique() == 2, run.output[-3000:]
    # per name, the raw samples equal Locust's own final totals, failures included
    counts = samples.groupby("name").size()
    failures = samples[~samples["ok"]].groupby("name").size()
    for name, row in stats.iterrows():
        assert counts.get(name, 0) == row["num_requests"], (name, counts.get(name, 0), row["num_requests"])
        assert failures.get(name, 0) == row["num_failures"], name
    assert len(samples) == stats["num_requests"].sum()
    # one ledger row per item the load sent: every publish and every submit/stamp; a request the
    # stop interrupted has a ledger row (it may still be stored) but no sample: at most one per user
    ledger = run.ledger()
    sent = sum(counts.get(n, 0) for n in ("NODE_INTROSPECTION", "NODE_HEARTBEAT", "POST /stamp", "POST /workflows"))
    assert sent <= len(ledger) <= sent + 6
    assert set(ledger["process"]) == set(samples["process"])
    # node ids are unique across processes
    nodes = ledger[ledger["kind"] == "introspection"].groupby("item_id")["process"].nunique()
    assert (nodes == 1).all()
    # the sampler (in the master) measures the master and both workers it forked, each as its own part
    parts = set(read_folder(run.run_dir, "resources").to_pandas()["part"])
    assert "locust" in parts and len({p for p in parts if p.startswith("locust-")}) == 2, parts
