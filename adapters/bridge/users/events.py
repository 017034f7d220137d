"""EventBatchUser: raw envelopes in batches straight to Kafka, for the database adapter.

The seeds' database-adapter plan publishes a batch of 1,500 events and checks
that the adapter stores every one in ``event_logs`` once, keeps the order per
key, ignores a re-delivered event and dead-letters what is not an envelope.
This user does exactly that, batch after batch:

- N valid envelopes (``--batch-size``, default 1,500) in the run's namespace,
  spread over a few keys, each with the next sequence number of its key;
- a share of them published again, same bytes and same ``event_id``
  (``--resend-share``): they must be stored once, from the first copy;
- a few malformed messages (``--malformed``: not JSON, not an object, missing
  fields, wrong types, a null value), each under its own key
  ``<namespace>/dlq/<uuid>``, since ``dead_letters`` has no namespace column.

Each publish is one ``kafka`` request (enqueue to broker ack; the whole batch
is enqueued at once, in order, so per-key order holds on the wire). Then the
user polls PostgreSQL and fires ``e2e batch→stored`` (first publish to every
acknowledged event in ``event_logs``) and ``e2e batch→dead-lettered`` (every
malformed message in ``dead_letters`` with the reason the adapter must give),
plus two ``check`` requests on what was stored: ``batch→ordered`` (per key,
sequence order = offset order = insert order) and ``batch→idempotent`` (each
re-sent event is stored from its first copy's offset). The adapter's lag
(insert time minus envelope time, its own definition) goes to ``lag/``.

Ledger kinds: ``adapter-event`` (one row per valid event, and one per re-send)
and ``dead-letter`` (one per malformed message); the bridge adapter's truth reads both.
"""
from __future__ import annotations

import asyncio
import itertools
import os
import random
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import gevent
from locust import events, task

from adapters.bridge.adapter import GROUP_DB_ADAPTER, LOAD_MARK, TOPICS
from adapters.bridge.batches import EVENT_TYPE, MALFORMED, dead_letter_prefix
from harness.context import option
from harness.kafka import Producer
from harness.users import KafkaUser
from rundir.write import write_lag

KEYS_PER_USER = 16
POLL_S = 0.02

KIND_EVENT = "adapter-event"
KIND_DEAD_LETTER = "dead-letter"
NAME_EVENT = "adapter-event"
NAME_RESEND = "adapter-event re-sent"
NAME_MALFORMED = "malformed"
NAME_STORED = "batch→stored"
NAME_DEAD = "batch→dead-lettered"
NAME_ORDERED = "batch→ordered"
NAME_IDEMPOTENT = "batch→idempotent"

_user_ids = itertools.count()


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--batch-size", type=int, default=1500,
                        help="EventBatchUser: valid events per batch (the seeds' 1,500)")
    parser.add_argument("--resend-share", type=float, default=0.05,
                        help="EventBatchUser: share of a batch published a second time with the same event_id")
    parser.add_argument("--malformed", type=int, default=5,
                        help="EventBatchUser: malformed messages per batch (must be dead-lettered)")


@dataclass
class BatchMessage:
    """One message of a batch: what to send, and (filled on the loop thread) what the broker said."""

    kind: str                      # ledger kind
    item_id: str                   # event id, or the malformed message's key
    key: str
    name: str                      # request name
    build: Callable[[], bytes | None] | None = None  # valid events: the envelope is made at enqueue time
    value: bytes | None = None
    first: "BatchMessage | None" = None  # a re-send: the message whose bytes it repeats
    seq: int = 0
    reason: str = ""               # malformed: what the dead letter's reason must say
    ts: float = 0.0                # wall clock at enqueue
    t0: float = 0.0                # perf_counter at enqueue
    t1: float = 0.0                # perf_counter at ack (or failure)
    error: str | None = None
    partition: int | None = None
    offset: int | None = None

    @property
    def acked(self) -> bool:
        return self.t1 > 0 and self.error is None


def _acked(m: BatchMessage, fut: asyncio.Future) -> None:
    m.t1 = time.perf_counter()
    if fut.cancelled():
        m.error = "cancelled"
    elif fut.exception() is not None:
        m.error = repr(fut.exception())
    else:
        meta = fut.result()
        m.partition, m.offset = meta.partition, meta.offset


async def publish_batch(producer: Producer, topic: str, batch: list[BatchMessage], ack_timeout_s: float) -> None:
    """Enqueue every message in order (one coroutine, so per-key order holds), then wait for the acks.

    aiokafka keeps at most one request in flight per partition, so the broker
    stores each key's messages in the order they were enqueued.
    """
    p = await producer._ensure()  # the process's producer; its send() would wait for each ack in turn
    pending: list[asyncio.Future] = []
    for m in batch:
        m.ts, m.t0 = time.time(), time.perf_counter()
        if m.build is not None:
            m.value = m.build()
        elif m.first is not None:
            m.value = m.first.value
        try:
            fut = await p.send(topic, m.value, key=m.key.encode())
        except Exception as exc:  # noqa: BLE001 - a refused publish is a failed request
            m.t1, m.error = time.perf_counter(), repr(exc)
            continue
        fut.add_done_callback(lambda f, m=m: _acked(m, f))
        pending.append(fut)
    if pending:
        await asyncio.wait(pending, timeout=ack_timeout_s)
    for m in batch:
        if m.t1 == 0:
            m.t1, m.error = time.perf_counter(), f"no ack within {ack_timeout_s:g} s"


_STORED = """
SELECT event_id::text, partition, "offset", extract(epoch FROM inserted_at)::float8, extract(epoch FROM event_time)::float8
FROM event_logs WHERE event_id = ANY($1::uuid[])"""
_DEAD = """
SELECT convert_from(key, 'UTF8'), reason FROM dead_letters WHERE consumer = $1 AND key = ANY($2::bytea[])"""


@dataclass
class Batch:
    """One batch: every message in publish order, and the valid events' first copies and the malformed ones."""

    batch_id: str
    messages: list[BatchMessage]
    firsts: list[BatchMessage]
    dead: list[BatchMessage]


@dataclass
class Seen:
    """What PostgreSQL held for a batch, and when (perf_counter) the poll first saw all of it."""

    rows: dict[str, tuple[int, int, float, float]]  # event id -> partition, offset, inserted_at, event_time
    reasons: dict[str, str]                         # dead letter key -> reason
    stored_at: float | None
    dead_at: float | None


async def await_batch(conn: asyncpg.Connection, event_ids: list[str], dead_keys: list[str], deadline: float) -> Seen:
    """Poll ``event_logs`` (by primary key) and ``dead_letters`` until both hold the batch or the deadline.

    Each poll asks only for what is still missing; the time is the poll that found the last one.
    """
    seen = Seen({}, {}, None if event_ids else time.perf_counter(), None if dead_keys else time.perf_counter())
    while True:
        missing = [uuid.UUID(i) for i in event_ids if i not in seen.rows]
        if missing:
            for event_id, partition, offset, inserted, event_time in await conn.fetch(_STORED, missing):
                seen.rows[event_id] = (partition, offset, inserted, event_time)
            if len(seen.rows) == len(event_ids):
                seen.stored_at = time.perf_counter()
        missing_dl = [k.encode() for k in dead_keys if k not in seen.reasons]
        if missing_dl:
            for key, reason in await conn.fetch(_DEAD, GROUP_DB_ADAPTER, missing_dl):
                seen.reasons[key] = reason
            if len(seen.reasons) == len(dead_keys):
                seen.dead_at = time.perf_counter()
        if (seen.stored_at is not None and seen.dead_at is not None) or time.perf_counter() >= deadline:
            return seen
        await asyncio.sleep(POLL_S)


def order_violations(firsts: list[BatchMessage], rows: dict[str, tuple[int, int, float, float]]) -> list[str]:
    """Per key, in sequence order: one partition, offsets rising, insert times not going back."""
    by_key: dict[str, list[BatchMessage]] = defaultdict(list)
    for m in firsts:
        if m.item_id in rows:
            by_key[m.key].append(m)
    problems = []
    for key, msgs in by_key.items():
        msgs.sort(key=lambda m: m.seq)
        stored = [rows[m.item_id] for m in msgs]
        if len({s[0] for s in stored}) > 1:
            problems.append(f"key {key}: stored from several partitions")
        for (a, b), (ma, mb) in zip(itertools.pairwise(stored), itertools.pairwise(msgs)):
            if b[1] <= a[1]:
                problems.append(f"key {key}: seq {mb.seq} at offset {b[1]}, before seq {ma.seq} at {a[1]}")
            if b[2] < a[2]:
                problems.append(f"key {key}: seq {mb.seq} inserted before seq {ma.seq}")
    return problems


class EventBatchUser(KafkaUser):
    """Publishes batches of raw envelopes (ordered per key, some re-sent, a few malformed) and checks them stored."""

    abstract = False
    ack_timeout_s: float = 30.0
    e2e_timeout_s: float = 15.0

    def on_start(self) -> None:
        super().on_start()
        self.batch_size = int(option(self.environment, "batch_size", 1500))
        self.resend_share = float(option(self.environment, "resend_share", 0.05))
        self.malformed = int(option(self.environment, "malformed", 5))
        # unique across every process and machine of the run, like NodeUser's node ids
        self.user_key = f"{self.run.namespace}-{socket.gethostname()}-{os.getpid()}-{next(_user_ids)}"
        self.keys = [f"{self.user_key}-k{i}" for i in range(KEYS_PER_USER)]
        self.next_seq = dict.fromkeys(self.keys, 0)
        self.batches = 0
        self.topic = TOPICS.stamped
        self.db: asyncpg.Connection = self.bus.bridge.run(
            asyncpg.connect(self.run.address("DATABASE_URL")), timeout=30)

    def on_stop(self) -> None:
        db, self.db = getattr(self, "db", None), None
        if db is not None:
            async def close() -> None:
                db.terminate()  # a poll the stop interrupted may still be running on it

            self.bus.bridge.run(close(), timeout=5)

    def plan(self) -> Batch:
        """The next batch: valid events with the next sequence numbers of their keys, malformed ones, re-sends."""
        batch_id = f"{self.user_key}-b{self.batches}"
        self.batches += 1
        firsts: list[BatchMessage] = []
        for i in range(self.batch_size):
            key = self.keys[i % len(self.keys)]
            self.next_seq[key] += 1
            firsts.append(self._event(batch_id, key, self.next_seq[key]))
        dead: list[BatchMessage] = []
        for i in range(self.malformed):
            sort, value, reason = MALFORMED[i % len(MALFORMED)]
            key = f"{dead_letter_prefix(self.run.namespace)}{uuid.uuid4()}"
            dead.append(BatchMessage(KIND_DEAD_LETTER, key, key, NAME_MALFORMED,
                                     build=lambda v=value: v(self.run.namespace), reason=reason))
        resends = [BatchMessage(KIND_EVENT, m.item_id, m.key, NAME_RESEND, first=m, seq=m.seq)
                   for m in random.sample(firsts, round(self.resend_share * len(firsts)))]
        # malformed ones spread through the valid ones; re-sends after them all (a late re-delivery)
        ordered: list[BatchMessage] = list(firsts)
        for j, m in enumerate(dead):
            ordered.insert((j + 1) * len(ordered) // (len(dead) + 1), m)
        return Batch(batch_id, ordered + resends, firsts, dead)

    def _event(self, batch_id: str, key: str, seq: int) -> BatchMessage:
        event_id = uuid.uuid4()
        source = self.user_key

        def build() -> bytes | None:
            return self.event(EVENT_TYPE, {"key": key, "seq": seq, "batch": batch_id}, topic=self.topic, key=key,
                              source=source, event_id=str(event_id),
                              metadata={"load": LOAD_MARK, "batch": batch_id}).value

        return BatchMessage(KIND_EVENT, str(event_id), key, NAME_EVENT, build=build, seq=seq)

    @task
    def batch(self) -> None:
        ts_intended = self.intended()
        b = self.plan()
        ts, t0 = time.time(), time.perf_counter()
        call = self.bus.bridge.submit(publish_batch(self.bus.producer, self.topic, b.messages, self.ack_timeout_s))
        try:
            call.wait(self.ack_timeout_s + 10)
        except Exception as exc:  # noqa: BLE001 - the bridge itself failed: every unanswered message failed
            for m in b.messages:
                if m.t1 == 0:
                    m.t0, m.t1, m.error = m.t0 or t0, time.perf_counter(), f"publish failed: {exc!r}"
        finally:  # ledger rows even when the stop interrupts the batch (stored later = recovered, not unexpected)
            for m in b.messages:
                self.ledger(m.kind, m.item_id, m.ts or ts, m.acked)
        for m in b.messages:
            self.fire("kafka", m.name, m.ts or ts, (m.t1 - m.t0) * 1000.0, length=len(m.value or b""),
                      error=m.error, key=m.item_id)
        self.verify(b, ts, t0, ts_intended)

    def verify(self, b: Batch, ts: float, t0: float, ts_intended: float | None) -> None:
        """Wait until PostgreSQL holds the batch; fire the e2e and check requests; write the lag samples."""
        acked = {m.item_id for m in b.messages if m.acked}  # an event is acknowledged if any of its copies is
        want_events = [m.item_id for m in b.firsts if m.item_id in acked]
        want_dead = [m.item_id for m in b.dead if m.acked]
        deadline = t0 + self.e2e_timeout_s
        seen: Seen = self.bus.bridge.run(await_batch(self.db, want_events, want_dead, deadline),
                                         timeout=max(0.0, deadline - time.perf_counter()) + 10)

        error = None
        if seen.stored_at is None:
            error = (f"{len(want_events) - len(seen.rows)} of {len(want_events)} acknowledged events not stored "
                     f"within {self.e2e_timeout_s:g} s")
        end = seen.stored_at or time.perf_counter()
        self.fire("e2e", NAME_STORED, ts, (end - t0) * 1000.0, error=error, key=b.batch_id, ts_intended=ts_intended)

        if b.dead:
            expected = {m.item_id: m.reason for m in b.dead}
            wrong = [f"{reason!r}" for key, reason in seen.reasons.items() if expected[key] not in reason]
            error = None
            if seen.dead_at is None:
                error = (f"{len(want_dead) - len(seen.reasons)} of {len(want_dead)} acknowledged malformed messages "
                         f"not dead-lettered within {self.e2e_timeout_s:g} s")
            elif wrong:
                error = f"dead-lettered without the expected reason: {'; '.join(wrong)[:300]}"
            end = seen.dead_at or time.perf_counter()
            self.fire("e2e", NAME_DEAD, ts, (end - t0) * 1000.0, error=error, key=b.batch_id)

        check_ts, check_t0 = time.time(), time.perf_counter()
        problems = order_violations(b.firsts, seen.rows)
        self.fire("check", NAME_ORDERED, check_ts, (time.perf_counter() - check_t0) * 1000.0,
                  error=f"{len(problems)} out of order: {'; '.join(problems[:3])}" if problems else None,
                  key=b.batch_id)

        # an event published twice must be stored from its first copy (when that one was acknowledged)
        check_ts, check_t0 = time.time(), time.perf_counter()
        later = [m.item_id for m in b.messages if m.first is not None and m.first.acked and m.item_id in seen.rows
                 and seen.rows[m.item_id][:2] != (m.first.partition, m.first.offset)]
        self.fire("check", NAME_IDEMPOTENT, check_ts, (time.perf_counter() - check_t0) * 1000.0,
                  error=f"{len(later)} re-sent events stored from a later copy" if later else None, key=b.batch_id)

        if seen.rows:
            lag = {"ts": [r[2] for r in seen.rows.values()], "consumer": [GROUP_DB_ADAPTER] * len(seen.rows),
                   "lag_ms": [(r[2] - r[3]) * 1000.0 for r in seen.rows.values()],
                   "lag_messages": [None] * len(seen.rows)}  # a time lag; the sampler counts messages
            # a native thread writes the file, so the gevent hub (every other user) does not wait for it
            gevent.get_hub().threadpool.apply(write_lag, (self.run.run_dir, lag))
