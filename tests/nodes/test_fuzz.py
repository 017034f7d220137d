"""Every class of chaos/messages.py's catalogue, made from real envelopes, against every node that consumes them.

For one class at a time, on the workflow topic (reducer, database adapter)
and the introspection topic (registry, database adapter): a real event
(the template), then the class's mutations of it in batches of eight, each
batch followed by a real event on the same key, so a real event can only be
applied once the consumer has got past every mutation before it. Then:

- every real event is applied (the workflow's last sequence, every node
  registered, every event logged), within a bound;
- every mutation, in every consumer group of its topic, is dead-lettered
  once (a row at its topic, partition and offset) or applied: the
  consumer's receipt for its event id and, for the database adapter, the
  event logged. A duplicate of the template is applied once in all; the
  reducer applies nothing without a usable workflow id and sequence (it
  used to skip those silently, which looked applied);
- no consumer is stuck or restarted, and every node is ready.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import orjson
import pytest

from chaos.messages import CLASSES, bad_messages
from nodes.config import GROUP_DB_ADAPTER, GROUP_REDUCER, GROUP_REGISTRY, Topics
from nodes.envelope import EventType, InvalidEnvelope, new_envelope, parse_envelope

BATCH = 8
BOUND_S = 90.0  # every real event applied within this, for a class on one topic (seen: a few seconds)
NODES = {GROUP_REDUCER: "REDUCER_URL", GROUP_REGISTRY: "REGISTRY_URL", GROUP_DB_ADAPTER: "DATABASE_ADAPTER_URL"}


def transition(workflow_id: str, sequence: int) -> bytes:
    body = {"workflow_id": workflow_id, "from_state": "a", "to_state": "b", "sequence": sequence}
    return new_envelope(EventType.STATE_TRANSITION, body, source_node_id="fuzz-test", namespace="fuzz-test").to_bytes()


def introspection(node_id: str) -> bytes:
    body = {"node_id": node_id, "node_type": "fuzz-test", "capabilities": {"a": 1}, "endpoints": {"http": "x"}}
    return new_envelope(EventType.NODE_INTROSPECTION, body, source_node_id=node_id, namespace="fuzz-test").to_bytes()


def event_id(value: bytes | None) -> uuid.UUID | None:
    """The event id a consumer would take the message under, or None when it is not a valid envelope."""
    try:
        return parse_envelope(value).event_id
    except InvalidEnvelope:
        return None


class Topic:
    """One topic under test: its groups, its real events, and how to see they were applied."""

    def __init__(self, name: str, groups: tuple[str, ...], key: str):
        self.name, self.groups, self.key = name, groups, key
        self.workflow = str(uuid.uuid4())

    def real(self, i: int) -> bytes:
        if self.name.startswith("node-introspection"):
            return introspection(f"{self.key}-real-{i}")
        return transition(self.workflow, i + 1)

    async def applied(self, db, count: int) -> bool:
        if self.name.startswith("node-introspection"):
            got = await db.fetchval("SELECT count(*) FROM node_registrations WHERE node_id LIKE $1",
                                    f"{self.key}-real-%")
            return got == count
        got = await db.fetchval("SELECT last_sequence FROM workflow_executions WHERE workflow_id = $1",
                                uuid.UUID(self.workflow))
        return got == count


async def publish(producer, topic: Topic, cls: str, seed: int) -> tuple[list, list[uuid.UUID], object]:
    """The template, then the mutations in batches each followed by a real event; returns what was sent."""
    template = topic.real(0)
    key = topic.key.encode()
    await producer.send_and_wait(topic.name, template, key=key)
    real_ids = [event_id(template)]
    sent = []
    messages = bad_messages(template, seed=seed, classes=[cls])  # a seed per topic: no event id shared
    assert messages, cls
    for start in range(0, len(messages), BATCH):
        for bad in messages[start:start + BATCH]:
            meta = await producer.send_and_wait(topic.name, bad.value, key=key,
                                                headers=[("bridgestorm-injection", f"fuzz:{bad.label}".encode())])
            sent.append((bad, meta))
        real = topic.real(len(real_ids))
        await producer.send_and_wait(topic.name, real, key=key)
        real_ids.append(event_id(real))
    return sent, real_ids, template


def _a_workflow_event(value: bytes | None) -> bool:
    payload = parse_envelope(value).payload
    try:
        uuid.UUID(str(payload["workflow_id"]))
        int(payload.get("sequence", 0))
        return True
    except (KeyError, ValueError, TypeError):
        return False


async def outcome(db, group: str, bad, meta) -> str:
    letters = await db.fetchval('SELECT count(*) FROM dead_letters WHERE consumer = $1 AND topic = $2'
                                ' AND partition = $3 AND "offset" = $4', group, meta.topic, meta.partition,
                                meta.offset)
    if letters:
        return "dead-lettered" if letters == 1 else f"dead-lettered {letters} times"
    eid = event_id(bad.value)
    if eid is None:
        return "lost (invalid, no dead letter)"
    receipt = await db.fetchval("SELECT count(*) FROM processed_events WHERE consumer = $1 AND event_id = $2",
                                group, eid)
    if not receipt:
        return "lost (no receipt, no dead letter)"
    if group == GROUP_DB_ADAPTER and not await db.fetchval("SELECT count(*) FROM event_logs WHERE event_id = $1", eid):
        elsewhere = await db.fetch('SELECT topic, partition, "offset", class, reason FROM dead_letters'
                                   " WHERE consumer = $1 AND headers->>'bridgestorm-injection' = $2", group,
                                   f"fuzz:{bad.label}")
        return f"lost (receipt, not logged; at {meta.topic}[{meta.partition}]@{meta.offset}; letters: " \
               f"{[dict(r) for r in elsewhere]})"
    return "applied"


@pytest.mark.parametrize("cls", CLASSES)
async def test_every_mutation_is_dead_lettered_or_applied_and_the_real_events_go_on(cls, producer, db, http, urls):
    topics = Topics()
    cases = [Topic(topics.workflow, (GROUP_REDUCER, GROUP_DB_ADAPTER), f"fuzz-{cls}-wf-{uuid.uuid4().hex[:8]}"),
             Topic(topics.introspection, (GROUP_REGISTRY, GROUP_DB_ADAPTER), f"fuzz-{cls}-in-{uuid.uuid4().hex[:8]}")]
    restarts_before = await consumer_stats(http, urls, "restarts")
    published = [await publish(producer, t, cls, seed=10 * CLASSES.index(cls) + i) for i, t in enumerate(cases)]

    started = time.monotonic()
    for topic, (sent, real_ids, _) in zip(cases, published):
        while not await topic.applied(db, len(real_ids)):
            assert time.monotonic() - started < BOUND_S, f"{topic.name}: real events not all applied in {BOUND_S} s"
            await asyncio.sleep(0.1)
        logged = await db.fetchval("SELECT count(*) FROM event_logs WHERE event_id = ANY($1::uuid[])", real_ids)
        while logged < len(real_ids):
            assert time.monotonic() - started < BOUND_S, f"{topic.name}: real events not all logged in {BOUND_S} s"
            await asyncio.sleep(0.1)
            logged = await db.fetchval("SELECT count(*) FROM event_logs WHERE event_id = ANY($1::uuid[])", real_ids)
    print(f"{cls}: every real event applied {time.monotonic() - started:.1f} s after the last was sent")

    outcomes: Counter = Counter()
    wrong = []
    for topic, (sent, real_ids, _) in zip(cases, published):
        for group in topic.groups:
            for bad, meta in sent:
                result = await outcome(db, group, bad, meta)
                outcomes[(group, result)] += 1
                if result not in ("dead-lettered", "applied"):
                    wrong.append(f"{group} {bad.label}: {result}")
                if group == GROUP_REDUCER and result == "applied" and not _a_workflow_event(bad.value):
                    wrong.append(f"{group} {bad.label}: applied, though it has no workflow_id and sequence")
                if bad.cls == "duplicate" and result != "applied":
                    wrong.append(f"{group} {bad.label}: a duplicate must be taken (and ignored), not {result}")
        if cls == "duplicate" and topic.name == topics.workflow:
            events = await db.fetchval("SELECT events FROM workflow_executions WHERE workflow_id = $1",
                                       uuid.UUID(topic.workflow))
            assert events == len(real_ids), f"the duplicate was applied twice: {events} events"
        if cls == "out-of-order" and topic.name == topics.workflow:
            # each stale event is taken, counted as out of order, and leaves the state where the newest put it
            # (`applied` above: the last sequence is the last real event's)
            row = await db.fetchrow("SELECT events, out_of_order FROM workflow_executions WHERE workflow_id = $1",
                                    uuid.UUID(topic.workflow))
            assert (row["events"], row["out_of_order"]) == (len(real_ids) + len(sent), len(sent)), dict(row)
    print(cls, dict(outcomes))
    assert not wrong, wrong

    for group, url_key in NODES.items():
        async with http.get(f"{urls[url_key]}/ready") as resp:
            body = await resp.json()
            assert resp.status == 200 and body["ready"], (group, body)
    assert await consumer_stats(http, urls, "restarts") == restarts_before, "a consumer task died and was restarted"


async def consumer_stats(http, urls, field: str) -> dict[str, int]:
    out = {}
    for group, url_key in NODES.items():
        async with http.get(f"{urls[url_key]}/stats") as resp:
            out[group] = (await resp.json())["consumers"][group][field]
    return out
