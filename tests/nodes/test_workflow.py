"""Orchestrator → events → reducer → PostgreSQL, end to end on the real stack."""
from __future__ import annotations

import asyncio
import uuid

from nodes.envelope import EventType


async def submit(http, urls, **body) -> dict:
    body.setdefault("content", f"content {uuid.uuid4()}")
    async with http.post(f"{urls['ORCHESTRATOR_URL']}/workflows", json=body) as resp:
        assert resp.status == 202, await resp.text()
        return await resp.json()


async def test_workflow_end_to_end_persisted_in_order(http, urls, db, watch, wait_db):
    accepted = await submit(http, urls, namespace="wf-e2e")
    wid, cid = accepted["workflow_id"], uuid.UUID(accepted["correlation_id"])
    assert accepted["state"] == "pending"

    events = await watch.wait_for(
        lambda e: e.correlation_id == cid and e.event_type == EventType.WORKFLOW_COMPLETED, timeout=10
    )
    assert events[0].payload["workflow_id"] == wid
    flow = [e for _, e in watch.seen if e.correlation_id == cid and e.payload.get("workflow_id") == wid]
    assert [e.event_type for e in flow] == [
        EventType.WORKFLOW_STARTED,
        EventType.STATE_TRANSITION,  # → processing
        EventType.STATE_TRANSITION,  # → stamped
        EventType.STATE_TRANSITION,  # → completed
        EventType.WORKFLOW_COMPLETED,
    ]
    assert [e.payload.get("to_state") for e in flow[1:4]] == ["processing", "stamped", "completed"]
    assert [e.payload["sequence"] for e in flow] == [0, 1, 2, 3, 4]

    async with http.get(f"{urls['ORCHESTRATOR_URL']}/workflows/{wid}") as resp:
        body = await resp.json()
    assert body["state"] == "completed" and body["intelligence"] == "skipped" and len(body["stamp_hash"]) == 64

    await wait_db("SELECT state FROM workflow_executions WHERE workflow_id = $1", uuid.UUID(wid),
                  expect=lambda v: v == "completed")
    row = await db.fetchrow("SELECT * FROM workflow_executions WHERE workflow_id = $1", uuid.UUID(wid))
    assert (row["events"], row["last_sequence"], row["out_of_order"]) == (5, 4, 0)
    assert row["duration_ms"] > 0
    ns = await db.fetchrow("SELECT * FROM bridge_states WHERE namespace = 'wf-e2e'")
    assert ns["workflows_started"] >= 1 and ns["workflows_completed"] >= 1
    # the stamp the workflow made is stored, in the workflow's namespace
    stamp = await db.fetchrow("SELECT * FROM metadata_stamps WHERE file_hash = $1", body["stamp_hash"])
    assert stamp["namespace"] == "wf-e2e"
    # and the database adapter logged every event of the flow once
    await wait_db("SELECT count(*) FROM event_logs WHERE correlation_id = $1", cid, expect=lambda v: v >= 6)
    assert await db.fetchval(
        "SELECT count(*) FROM event_logs WHERE correlation_id = $1 AND topic = 'workflow-events.v1'", cid) == 5


async def test_hundred_concurrent_workflows_no_loss_no_duplicates(http, urls, db, wait_db):
    namespace = f"wf-100-{uuid.uuid4().hex[:6]}"
    accepted = await asyncio.gather(*(submit(http, urls, namespace=namespace) for _ in range(100)))
    ids = [uuid.UUID(a["workflow_id"]) for a in accepted]
    assert len(set(ids)) == 100
    await wait_db("SELECT count(*) FROM workflow_executions WHERE namespace = $1 AND state = 'completed'",
                  namespace, expect=lambda v: v == 100, timeout=30)
    rows = await db.fetch("SELECT workflow_id, events, out_of_order FROM workflow_executions WHERE namespace = $1",
                          namespace)
    assert sorted(r["workflow_id"] for r in rows) == sorted(ids)
    assert all(r["events"] == 5 and r["out_of_order"] == 0 for r in rows)
    totals = await db.fetchrow("SELECT * FROM bridge_states WHERE namespace = $1", namespace)
    assert (totals["workflows_started"], totals["workflows_completed"], totals["workflows_failed"]) == (100, 100, 0)
    assert totals["transitions"] == 300


async def test_resubmitting_the_same_workflow_id_is_accepted_once(http, urls, db, wait_db):
    wid = str(uuid.uuid4())
    first = await submit(http, urls, workflow_id=wid, namespace="wf-idem")
    second = await submit(http, urls, workflow_id=wid, namespace="wf-idem")
    assert first["workflow_id"] == second["workflow_id"] == wid
    await wait_db("SELECT state FROM workflow_executions WHERE workflow_id = $1", uuid.UUID(wid),
                  expect=lambda v: v == "completed")
    assert await db.fetchval("SELECT events FROM workflow_executions WHERE workflow_id = $1", uuid.UUID(wid)) == 5


async def test_bad_workflow_bodies_get_clear_errors(http, urls):
    base = f"{urls['ORCHESTRATOR_URL']}/workflows"
    cases = [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),  # Python's JSON reader recurses
        (b'{"content": 1' + b"0" * 5000 + b"}", 400, "not valid JSON"),  # over its 4300-digit integer limit
        (b'{"namespace": "x"}', 422, "content"),
        (b'{"content": "x", "use_intelligence": "yes"}', 422, "use_intelligence"),
        (b'{"content": "x", "workflow_id": "nope"}', 422, "UUID"),
    ]
    for body, status, words in cases:
        async with http.post(base, data=body, headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == status, (body, await resp.text())
            assert words in (await resp.json())["error"]
    async with http.get(f"{base}/{uuid.uuid4()}") as resp:
        assert resp.status == 404
    async with http.get(f"{base}/not-a-uuid") as resp:
        assert resp.status == 400
