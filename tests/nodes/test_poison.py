"""Messages that stopped a consumer before, and what the consumer does with each now (nodes/consumer.py).

Each test publishes the bad message between two real events of the same key
(same partition, so the real event after it can only be applied if the
consumer moved past it) and checks both consumers of the topic: the bad one
is in the dead-letter table with its class, the store's error and the
attempt count; the real ones are applied.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid

import aiohttp
import orjson
import pytest

from nodes.config import GROUP_DB_ADAPTER, GROUP_REDUCER, GROUP_REGISTRY, Topics
from nodes.envelope import EventType, new_envelope


def introspection(node_id: str, **payload) -> bytes:
    body = {"node_id": node_id, "node_type": "poison-test", "capabilities": {}, "endpoints": {}, **payload}
    return new_envelope(EventType.NODE_INTROSPECTION, body, source_node_id=node_id, namespace="poison-test").to_bytes()


def transition(workflow_id: str, sequence: int, **extra) -> bytes:
    body = {"workflow_id": workflow_id, "from_state": "a", "to_state": "b", "sequence": sequence, **extra}
    return new_envelope(EventType.STATE_TRANSITION, body, source_node_id="poison-test", namespace="poison-test").to_bytes()


async def dead_letters(wait_db, db, key: bytes, groups: tuple[str, ...], count: int = 1) -> dict[str, list]:
    """The dead letters of ``key`` per consumer group, once every group has ``count``."""
    for group in groups:
        await wait_db("SELECT count(*) FROM dead_letters WHERE key = $1 AND consumer = $2", key, group,
                      expect=lambda v: v >= count, timeout=20)
    rows = await db.fetch("SELECT consumer, class, attempts, error, reason, value FROM dead_letters WHERE key = $1"
                          " ORDER BY id", key)
    return {g: [r for r in rows if r["consumer"] == g] for g in groups}


# A valid envelope PostgreSQL refuses to store, and the SQLSTATE each consumer's store answers: the
# registry keeps node_type in a text column (22021), the adapter the whole payload as jsonb (22P05)
REFUSED = {
    "nul in a json string": ({"capabilities": {"note": "a\u0000b"}}, {GROUP_REGISTRY: "22P05", GROUP_DB_ADAPTER: "22P05"}),
    "nul in a text column": ({"node_type": "type\u0000with-nul"}, {GROUP_REGISTRY: "22021", GROUP_DB_ADAPTER: "22P05"}),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
async def test_a_message_the_store_refuses_is_dead_lettered_and_the_next_one_applied(
        name, producer, topics: Topics, db, wait_db, http, urls):
    payload, sqlstate = REFUSED[name]
    key = f"poison-{uuid.uuid4().hex}".encode()
    before, after = f"before-{key.decode()}", f"after-{key.decode()}"
    await producer.send_and_wait(topics.introspection, introspection(before), key=key)
    await producer.send_and_wait(topics.introspection, introspection(f"poison-{key.decode()}", **payload), key=key)
    await producer.send_and_wait(topics.introspection, introspection(after), key=key)

    for node_id in (before, after):
        await wait_db("SELECT count(*) FROM node_registrations WHERE node_id = $1", node_id,
                      expect=lambda v: v == 1, timeout=20)
    letters = await dead_letters(wait_db, db, key, (GROUP_REGISTRY, GROUP_DB_ADAPTER))
    for group, rows in letters.items():
        assert len(rows) == 1, (group, rows)
        row = rows[0]
        assert row["class"] == "refused" and row["attempts"] == 1, (group, dict(row))
        assert f"[{sqlstate[group]}]" in row["error"] and "refused by the store" in row["reason"], (group, row["reason"])
    # the adapter logged the real events around it, and nothing of the poison one
    assert await db.fetchval("SELECT count(*) FROM event_logs WHERE key = $1", key.decode()) == 2
    async with http.get(f"{urls['REGISTRY_URL']}/stats") as resp:
        stats = (await resp.json())["consumers"][GROUP_REGISTRY]
    assert stats["dead_letters"].get("refused", 0) >= 1 and stats["stuck"] is None


async def test_a_value_the_driver_cannot_encode_is_refused(producer, topics: Topics, db, wait_db):
    """A sequence number past the reducer's int column: asyncpg refuses it before the server sees it."""
    key = f"poison-{uuid.uuid4().hex}".encode()
    workflow = str(uuid.uuid4())
    await producer.send_and_wait(topics.workflow, transition(workflow, 1), key=key)
    await producer.send_and_wait(topics.workflow, transition(str(uuid.uuid4()), 2 ** 40), key=key)
    await producer.send_and_wait(topics.workflow, transition(workflow, 2), key=key)

    await wait_db("SELECT last_sequence FROM workflow_executions WHERE workflow_id = $1", uuid.UUID(workflow),
                  expect=lambda v: v == 2, timeout=20)
    letters = await dead_letters(wait_db, db, key, (GROUP_REDUCER,))
    (row,) = letters[GROUP_REDUCER]
    assert row["class"] == "refused" and "DataError" in row["error"], dict(row)
    # the database adapter stores the same event (its payload is JSON there): applied, not dead-lettered
    assert await db.fetchval("SELECT count(*) FROM event_logs WHERE key = $1", key.decode()) == 3


async def test_a_handler_failure_is_retried_then_dead_lettered_with_its_attempts(producer, topics: Topics, db,
                                                                                  wait_db):
    """A payload nested deeper than the database adapter's JSON encoder goes (orjson stops at 255 levels: "Recursion limit reached").

    The registry stores it (PostgreSQL's jsonb takes it); the adapter's handler fails on it every time,
    so after its three attempts it is dead-lettered as a handler failure, and the next event is logged.
    """
    deep: dict = {}
    node = deep
    for _ in range(300):
        node["x"] = {}
        node = node["x"]
    key = f"poison-{uuid.uuid4().hex}".encode()
    deep_id, after = f"deep-{key.decode()}", f"after-{key.decode()}"
    body = orjson.loads(introspection(deep_id))
    body["payload"]["capabilities"] = deep  # past what pydantic serialises too: written with the stdlib
    await producer.send_and_wait(topics.introspection, json.dumps(body).encode(), key=key)
    await producer.send_and_wait(topics.introspection, introspection(after), key=key)

    await wait_db("SELECT count(*) FROM event_logs WHERE key = $1", key.decode(), expect=lambda v: v == 1, timeout=20)
    letters = await dead_letters(wait_db, db, key, (GROUP_DB_ADAPTER,))
    (row,) = letters[GROUP_DB_ADAPTER]
    assert row["class"] == "handler" and row["attempts"] == 3, dict(row)
    assert "handler failed 3 times" in row["reason"] and "Recursion limit" in row["error"], row["reason"]
    assert await db.fetchval("SELECT count(*) FROM dead_letters WHERE key = $1 AND consumer = $2",
                             key, GROUP_REGISTRY) == 0
    for node_id in (deep_id, after):
        await wait_db("SELECT count(*) FROM node_registrations WHERE node_id = $1", node_id,
                      expect=lambda v: v == 1, timeout=20)


async def test_an_envelope_the_validation_chokes_on_is_dead_lettered(producer, topics: Topics, db, wait_db):
    """A timestamp that is valid where it was written but before year 1 in UTC (OverflowError, not a ValueError)."""
    key = f"poison-{uuid.uuid4().hex}".encode()
    body = orjson.loads(introspection(f"early-{key.decode()}"))
    body["timestamp"] = "0001-01-01T00:00:00+14:00"
    after = f"after-{key.decode()}"
    await producer.send_and_wait(topics.introspection, orjson.dumps(body), key=key)
    await producer.send_and_wait(topics.introspection, introspection(after), key=key)
    await wait_db("SELECT count(*) FROM node_registrations WHERE node_id = $1", after, expect=lambda v: v == 1,
                  timeout=20)
    letters = await dead_letters(wait_db, db, key, (GROUP_REGISTRY, GROUP_DB_ADAPTER))
    for group, rows in letters.items():
        assert [r["class"] for r in rows] == ["invalid"] and "out of range" in rows[0]["reason"], (group, rows)


async def test_headers_are_kept_with_the_dead_letter(producer, topics: Topics, db, wait_db):
    key = f"poison-{uuid.uuid4().hex}".encode()
    marker = f"test:{uuid.uuid4().hex}:malformed"
    await producer.send_and_wait(topics.heartbeat, b"\xff not json", key=key,
                                 headers=[("bridgestorm-injection", marker.encode()), ("odd", b"\x00\xfe")])
    letters = await dead_letters(wait_db, db, key, (GROUP_REGISTRY, GROUP_DB_ADAPTER))
    for rows in letters.values():
        stored = await db.fetchval("SELECT headers FROM dead_letters WHERE key = $1 AND consumer = $2", key,
                                   rows[0]["consumer"])
        headers = json.loads(stored) if isinstance(stored, str) else stored
        assert headers["bridgestorm-injection"] == marker and "\x00" not in headers["odd"]


async def test_a_consumer_without_progress_is_not_ready_with_the_reason(tmp_path):
    """A reducer cut off from PostgreSQL while events arrive: not ready, and why; all applied once it returns."""
    import asyncpg
    from aiokafka import AIOKafkaProducer

    from stack.embedded import StackOptions, down, up
    from stack.proxy.client import ToxiproxyClient

    state_path = str(tmp_path / "stack.json")
    stack = await asyncio.to_thread(up, StackOptions(state_path=state_path, nodes=["reducer"],
                                                     node_env={"CONSUMER_STALL_AFTER_SECONDS": "2"}))
    producer = AIOKafkaProducer(bootstrap_servers=stack.env["KAFKA_BOOTSTRAP_SERVERS"], acks="all")
    proxy = ToxiproxyClient(stack.env["TOXIPROXY_URL"])
    ready_url = f"{stack.env['REDUCER_URL']}/ready"
    try:
        await producer.start()
        workflows = [str(uuid.uuid4()) for _ in range(20)]
        await producer.send_and_wait(Topics().workflow, transition(workflows[0], 1), key=workflows[0].encode())
        async with aiohttp.ClientSession() as http:
            await _until(lambda: _ready(http, ready_url), lambda body: body["ready"], 30)
            proxy.set_enabled("postgres", False)
            for wf in workflows:
                await producer.send_and_wait(Topics().workflow, transition(wf, 2), key=wf.encode())
            body = await _until(lambda: _ready(http, ready_url),
                                lambda body: any("made no progress" in p for p in body["problems"]), 30)
            stuck = next(p for p in body["problems"] if "made no progress" in p)
            assert GROUP_REDUCER in stuck and "lag" in stuck, stuck
            async with http.get(f"{stack.env['REDUCER_URL']}/stats") as resp:
                consumer = (await resp.json())["consumers"][GROUP_REDUCER]
            assert consumer["lag"] > 0 and consumer["since_progress_s"] >= 2 and consumer["stuck"], consumer
            proxy.set_enabled("postgres", True)
            await _until(lambda: _ready(http, ready_url), lambda body: body["ready"], 60)
        db = await asyncpg.connect(stack.env["DATABASE_URL"])
        try:
            rows = await db.fetch("SELECT workflow_id::text, last_sequence, events FROM workflow_executions"
                                  " WHERE workflow_id = ANY($1::uuid[])", workflows)
        finally:
            await db.close()
        got = {r["workflow_id"]: (r["last_sequence"], r["events"]) for r in rows}
        assert got[workflows[0]] == (2, 2) and all(got[wf] == (2, 1) for wf in workflows[1:]), got
    finally:
        proxy.set_enabled("postgres", True)
        await producer.stop()
        await asyncio.to_thread(down, state_path)


async def _ready(http: aiohttp.ClientSession, url: str) -> dict:
    async with http.get(url) as resp:
        return await resp.json()


async def _until(read, done, timeout: float):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = await read()
            if done(last):
                return last
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"not reached within {timeout} s; last: {last}")
