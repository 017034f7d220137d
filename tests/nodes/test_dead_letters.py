"""Malformed messages go to the dead letters with a reason; consumers keep going; duplicates are stored once."""
from __future__ import annotations

import os
import uuid

import orjson
from aiokafka import AIOKafkaConsumer

from nodes.bus import assign_at_end

from nodes.config import GROUP_DB_ADAPTER, GROUP_REDUCER
from nodes.envelope import EventType, new_envelope


def valid_event(namespace: str = "dlq-test"):
    return new_envelope(EventType.STATE_TRANSITION,
                        {"workflow_id": str(uuid.uuid4()), "from_state": "a", "to_state": "b", "sequence": 1},
                        source_node_id="test", namespace=namespace)


async def test_malformed_messages_are_dead_lettered_and_consumers_keep_going(producer, topics, db, wait_db, stack):
    marker = uuid.uuid4().hex
    good = new_envelope(EventType.STATE_TRANSITION, {"workflow_id": str(uuid.uuid4()), "sequence": 1},
                        source_node_id="test", namespace="dlq-test").model_dump(mode="json")
    missing = {k: v for k, v in good.items() if k != "event_type"}
    wrong_types = {**good, "event_id": 42, "timestamp": "yesterday", "payload": "not an object"}
    unknown_type = {**good, "event_type": "NOT_A_TYPE"}
    garbage = os.urandom(1024 * 1024)
    bad = [
        (b"this is not json " + marker.encode(), "not JSON"),
        (orjson.dumps(missing), "event_type"),
        (orjson.dumps(wrong_types), "event_id"),
        (orjson.dumps(unknown_type), "event_type"),
        (b"[1, 2, 3]", "not a JSON object"),
        (garbage, "not JSON"),
    ]
    dl_consumer = AIOKafkaConsumer(bootstrap_servers=stack.env["KAFKA_BOOTSTRAP_SERVERS"],
                                   max_partition_fetch_bytes=4 * 1024 * 1024, enable_auto_commit=False)
    await dl_consumer.start()
    await assign_at_end(dl_consumer, [topics.dead_letter])
    before = await db.fetchval("SELECT coalesce(max(id), 0) FROM dead_letters")
    key = f"dlq-{marker}".encode()
    for value, _ in bad:
        await producer.send_and_wait(topics.workflow, value, key=key)
    after = valid_event()  # a valid event behind the bad ones, same partition
    await producer.send_and_wait(topics.workflow, after.to_bytes(), key=key)

    # both consumers of the workflow topic went on to the valid event ...
    await wait_db("SELECT count(*) FROM event_logs WHERE event_id = $1", after.event_id, expect=lambda v: v == 1)
    await wait_db("SELECT count(*) FROM processed_events WHERE event_id = $1 AND consumer = $2", after.event_id,
                  GROUP_REDUCER, expect=lambda v: v == 1)
    # ... and each dead-lettered every bad message with its reason, payload kept whole
    for group in (GROUP_DB_ADAPTER, GROUP_REDUCER):
        rows = await wait_db("SELECT count(*) FROM dead_letters WHERE id > $1 AND consumer = $2 AND key = $3",
                             before, group, key, expect=lambda v: v == len(bad))
        assert rows == len(bad)
        stored = await db.fetch("SELECT value, reason FROM dead_letters WHERE id > $1 AND consumer = $2 AND key = $3"
                                " ORDER BY id", before, group, key)
        for (value, words), row in zip(bad, stored):
            assert bytes(row["value"]) == value
            assert words in row["reason"], (words, row["reason"])

    # the dead-letter topic carries them too, with the reason in a header
    seen = []
    while len(seen) < 2 * len(bad):
        batch = await dl_consumer.getmany(timeout_ms=5000)
        assert batch, f"only {len(seen)} dead letters on {topics.dead_letter}"
        seen += [r for records in batch.values() for r in records if r.key == key]
    await dl_consumer.stop()
    headers = dict(seen[0].headers)
    assert headers["source_topic"] == topics.workflow.encode() and headers["reason"]


async def test_same_event_twice_is_stored_once(producer, topics, db, wait_db, http, urls):
    env = valid_event()
    async with http.get(f"{urls['DATABASE_ADAPTER_URL']}/stats") as resp:
        duplicates_before = (await resp.json())["duplicates_seen"]
    for _ in range(2):
        await producer.send_and_wait(topics.workflow, env.to_bytes(), key=b"dup")
    marker = valid_event()
    await producer.send_and_wait(topics.workflow, marker.to_bytes(), key=b"dup")
    await wait_db("SELECT count(*) FROM event_logs WHERE event_id = $1", marker.event_id, expect=lambda v: v == 1)
    assert await db.fetchval("SELECT count(*) FROM event_logs WHERE event_id = $1", env.event_id) == 1
    row = await db.fetchrow("SELECT events FROM workflow_executions WHERE workflow_id = $1",
                            uuid.UUID(env.payload["workflow_id"]))
    assert row["events"] == 1
    async with http.get(f"{urls['DATABASE_ADAPTER_URL']}/stats") as resp:
        stats = await resp.json()
    assert stats["duplicates_seen"] == duplicates_before + 1
    assert stats["lag_ms"]["p95"] is not None
