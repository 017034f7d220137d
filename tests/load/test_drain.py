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
