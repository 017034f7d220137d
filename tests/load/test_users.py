"""Each user kind against the real stack: exact samples, e2e matched by correlation id, ledger vs truth."""
from __future__ import annotations

import asyncio

import asyncpg


def _ok(run) -> None:
    assert run.run_dir.joinpath("run.json").is_file(), run.output[-3000:]


def _correlations_stored(database_url: str, event_type: str, ids: list[str]) -> set[str]:
    async def q() -> set[str]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch("SELECT correlation_id::text FROM event_logs WHERE event_type = $1 "
                                    "AND correlation_id::text = ANY($2::text[])", event_type, ids)
            return {r[0] for r in rows}
        finally:
            await conn.close()

    return asyncio.run(q())


def test_node_user_registers_and_heartbeats(run_locust, stack):
    run = run_locust("introspection.py", "-u", "5", "-r", "5", "-t", "5s")
    _ok(run)
    s = run.samples()
    reg = s[s["name"] == "introspection→registered"]
    assert len(reg) == 5 and reg["ok"].all(), run.output[-3000:]
    assert (s[s["name"] == "NODE_HEARTBEAT"]["ok"]).sum() >= 5
    # every node registered under the run's namespace, nothing lost
    truth = run.truth()
    nodes = set(run.ledger().query("kind == 'introspection'")["item_id"])
    assert len(nodes) == 5
    assert nodes == set(truth.query("kind == 'introspection'")["item_id"])
    # the e2e event matched is the registry's answer to *our* correlation id
    stored = _correlations_stored(stack.env["DATABASE_URL"], "NODE_REGISTERED", list(reg["key"]))
    assert stored == set(reg["key"])
    assert run.returncode in (0, 1), run.output[-3000:]


def test_stamping_user_checks_blake3(run_locust, stack):
    run = run_locust("stamping.py", "-u", "2", "-r", "2", "-t", "5s", "--stamp-sizes", "100,5000")
    _ok(run)
    s = run.samples()
    stamps = s[s["name"] == "POST /stamp"]
    assert len(stamps) > 5 and stamps["ok"].all(), run.output[-3000:]
    assert (s[s["name"] == "GET /stamp/{hash}"]["ok"]).all()
    e2e = s[s["name"] == "stamp→stamped"]
    assert len(e2e) == len(stamps) and e2e["ok"].all()
    assert set(e2e["key"]) <= _correlations_stored(stack.env["DATABASE_URL"], "METADATA_STAMPED", list(e2e["key"]))
    ledger, truth = run.ledger(), run.truth()
    stored = set(truth.query("kind == 'stamp'")["item_id"])
    # every acknowledged stamp is stored; every stored one was sent (a request the stop
    # interrupted has a ledger row, acknowledged or not, and may or may not be stored)
    assert set(ledger[ledger["acked"]]["item_id"]) <= stored <= set(ledger["item_id"])


def test_workflow_user_completes(run_locust, stack):
    run = run_locust("workflows.py", "-u", "2", "-r", "2", "-t", "5s", "--intelligence", "0.5")
    _ok(run)
    s = run.samples()
    done = s[s["name"].isin(["workflow→completed", "workflow→completed with intelligence"])]
    assert len(done) > 3 and done["ok"].all(), run.output[-3000:]
    assert set(done["name"]) == {"workflow→completed", "workflow→completed with intelligence"}  # half each
    assert (s[s["name"] == "POST /workflows"]["ok"]).all()
    assert (s[s["name"] == "GET /workflows/{id}"]["ok"]).all()
    stored = _correlations_stored(stack.env["DATABASE_URL"], "WORKFLOW_COMPLETED", list(done["key"]))
    assert stored == set(done["key"])
    # each e2e sample shares its correlation id with the submit that started it
    assert set(done["key"]) <= set(s[s["name"] == "POST /workflows"]["key"])
    assert (done["latency_ms"] > 0).all()
    ledger, stored = run.ledger(), set(run.truth().query("kind == 'workflow'")["item_id"])
    assert set(ledger[ledger["acked"]]["item_id"]) <= stored <= set(ledger["item_id"])


def test_timeout_is_a_failure(run_locust):
    run = run_locust("workflows.py", "-u", "1", "-r", "1", "-t", "3s", "--e2e-timeout", "0.001",
                     "--intelligence", "0", "--no-report")
    s = run.samples()
    done = s[s["name"] == "workflow→completed"]
    assert len(done) >= 1 and not done["ok"].any()
    assert done["error"].str.contains("no result event").all()
    stats = run.locust_stats()
    assert stats.loc["workflow→completed", "num_failures"] == len(done)
    assert run.returncode == 1  # Locust's own rule: failed requests without a report -> 1
