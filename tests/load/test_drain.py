"""The drain waits for what the load saw acknowledged, not only for a quiet database."""
from __future__ import annotations

import logging
import uuid

import asyncpg

from adapters.bridge.adapter import BridgeAdapter
from harness import drain


async def test_drain_waits_for_acknowledged_items_and_names_what_is_missing(stack, caplog):
    url = stack.env["DATABASE_URL"]
    namespace = f"drain-{uuid.uuid4().hex[:8]}"
    stored = f"node-{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("INSERT INTO node_registrations (node_id, node_type, namespace, status)"
                           " VALUES ($1, 'compute', $2, 'registered')", stored, namespace)
    finally:
        await conn.close()

    adapter, env = BridgeAdapter(), {"DATABASE_URL": url}
    with caplog.at_level(logging.WARNING, logger="harness.drain"):
        rows = await drain.drain_and_read(adapter, env, namespace, drain_s=5, settle_s=0.2,
                                          expected={("introspection", stored)})
    assert [(r["kind"], r["item_id"]) for r in rows] == [("introspection", stored)]
    assert not [r for r in caplog.records if "drain:" in r.getMessage()]

    never = f"node-{uuid.uuid4().hex[:8]}"
    with caplog.at_level(logging.WARNING, logger="harness.drain"):
        rows = await drain.drain_and_read(adapter, env, namespace, drain_s=1, settle_s=0.2,
                                          expected={("introspection", stored), ("introspection", never)})
    assert drain.missing_items({("introspection", stored), ("introspection", never)}, rows) == {
        ("introspection", never)}
    warnings = [r.getMessage() for r in caplog.records if "drain:" in r.getMessage()]
    assert warnings and "1 introspection" in warnings[-1], warnings


async def test_the_truth_sees_leaks_and_duplicates(stack):
    """Items sent are found under whatever namespace they were stored, and effects no unique key prevents count.

    Rows written straight into the real database, as a faulty node would: a workflow stored under another
    tenant (a leak), a stamp whose METADATA_STAMPED went out twice and a node whose introspection the
    registry applied twice (duplicates), next to clean items of the same kinds.
    """
    import pandas as pd

    from analysis.loss import account

    url = stack.env["DATABASE_URL"]
    ns, other = f"truth-{uuid.uuid4().hex[:8]}", f"other-{uuid.uuid4().hex[:8]}"
    leaked_wf, clean_wf = str(uuid.uuid4()), str(uuid.uuid4())
    dup_hash, clean_hash = uuid.uuid4().hex * 2, uuid.uuid4().hex * 2
    dup_node, clean_node = f"node-{uuid.uuid4().hex[:8]}", f"node-{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(url)
    try:
        for wf, where in ((leaked_wf, other), (clean_wf, ns)):
            await conn.execute("INSERT INTO workflow_executions (workflow_id, namespace, state) "
                               "VALUES ($1::uuid, $2, 'completed')", wf, where)
        for digest, events in ((dup_hash, 2), (clean_hash, 1)):
            await conn.execute("INSERT INTO metadata_stamps (stamp_id, namespace, file_hash, content_type, size_bytes,"
                               " hash_time_ms) VALUES ($1, $2, $3, 'text/plain', 1, 0.1)", uuid.uuid4(), ns, digest)
            for _ in range(events):
                await log_event(conn, "METADATA_STAMPED", ns, digest, {"file_hash": digest})
        for node, applied in ((dup_node, 2), (clean_node, 1)):
            await conn.execute("INSERT INTO node_registrations (node_id, node_type, namespace, status, introspections)"
                               " VALUES ($1, 'compute', $2, 'registered', $3)", node, ns, applied)
            await log_event(conn, "NODE_INTROSPECTION", ns, node, {"node_id": node})
    finally:
        await conn.close()

    sent = {"workflow": {leaked_wf, clean_wf}, "stamp": {dup_hash, clean_hash}, "introspection": {dup_node, clean_node}}
    rows = await BridgeAdapter().read_truth({"DATABASE_URL": url}, ns, sent.keys(), sent)
    ledger = pd.DataFrame([{"kind": k, "item_id": i, "namespace": ns, "ts_sent": 0.0, "acked": True, "process": "t"}
                           for k, ids in sent.items() for i in ids])
    loss = account(ledger, pd.DataFrame(rows))
    by_kind = loss.by_kind.set_index("kind")
    assert by_kind.loc["workflow", "leaked"] == 1 and by_kind.loc["workflow", "ok"] == 2
    assert by_kind.loc["stamp", "duplicated"] == 1 and by_kind.loc["introspection", "duplicated"] == 1
    assert loss.totals["leaked"] == 1 and loss.totals["duplicated"] == 2 and loss.totals["lost"] == 0


async def log_event(conn: asyncpg.Connection, event_type: str, namespace: str, key: str, payload: dict) -> None:
    import json

    await conn.execute(
        "INSERT INTO event_logs (event_id, event_type, topic, partition, \"offset\", key, namespace, correlation_id,"
        " source_node_id, event_time, payload, metadata) VALUES ($1, $2, 'test', 0, 0, $3, $4, $5, 'test', now(),"
        " $6::jsonb, '{}'::jsonb)", uuid.uuid4(), event_type, key, namespace, uuid.uuid4(), json.dumps(payload))
