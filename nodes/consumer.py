"""Batch consumers that never stop on bad input and never apply an event twice.

Each batch: every message that is not a valid envelope goes to the
`dead_letters` table and the dead-letter topic with its reason; the valid
ones are de-duplicated on `event_id` against `processed_events` (the
consumer's receipts, also what the outbox reads to know an event was
confirmed) and handed to the node's handler; and the consumer's next offsets
are stored in `consumer_offsets` — all in one transaction. A batch whose
transaction fails is retried as it is, so per-key order holds.

Why offsets live in PostgreSQL and not (only) in Kafka: a memory broker that
restarts comes back with an empty log, and an aiokafka client that has not
noticed yet may commit its old offsets into it, which would make the next
consumer skip the replayed events. Positions are therefore stored per broker
incarnation (see `nodes.bus`) and every partition assignment seeks to the
stored position of the current incarnation, or to the beginning of a new
log. The Kafka group is named after the incarnation too (`<group>.<id>`), so
a stale client never holds up a rebalance of the new one. Offsets are still
committed to Kafka afterwards, for tools that show lag.

The consumer rebuilds its aiokafka client on a new broker epoch and when it
stalls: no records while the broker holds data past its position.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Awaitable, Callable

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord
from aiokafka.errors import KafkaError

from nodes.bus import MAX_MESSAGE_BYTES, EventBus, start_with_retry
from nodes.envelope import InvalidEnvelope, OnexEnvelopeV1, parse_envelope

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Received:
    """A valid envelope and where it came from."""

    envelope: OnexEnvelopeV1
    topic: str
    partition: int
    offset: int
    key: str | None


Handler = Callable[[asyncpg.Connection | None, list[Received]], Awaitable[None]]


@dataclass
class ConsumerStats:
    batches: int = 0
    received: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    rebuilds: int = 0
    largest_batch: int = 0
    last_batch_at: float = 0.0


class _SeekToStoredOffsets(ConsumerRebalanceListener):
    """On every assignment, continue from the positions stored for this broker incarnation."""

    def __init__(self, owner: "BatchConsumer", consumer: AIOKafkaConsumer):
        self.owner = owner
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked) -> None:
        pass

    async def on_partitions_assigned(self, assigned) -> None:
        if not assigned:
            return
        stored = await self.owner.stored_offsets()
        for tp in assigned:
            if (tp.topic, tp.partition) in stored:
                self.consumer.seek(tp, stored[(tp.topic, tp.partition)])
            else:
                await self.consumer.seek_to_beginning(tp)


class BatchConsumer:
    def __init__(
        self,
        *,
        group_id: str,
        topics: list[str],
        bus: EventBus,
        handler: Handler,
        dead_letter_topic: str,
        pool: asyncpg.Pool | None = None,
        dedupe: bool = True,
        max_records: int = 2000,
        timeout_ms: int = 20,
        after_commit: Callable[[], None] | None = None,
        session_timeout_ms: int = 10000,
        fetch_max_wait_ms: int = 50,
    ):
        self.group_id = group_id
        self.topics = topics
        self.bus = bus
        self.pool = pool
        self.handler = handler
        self.dead_letter_topic = dead_letter_topic
        self.dedupe = dedupe and pool is not None
        self.max_records = max_records
        self.timeout_ms = timeout_ms
        self.session_timeout_ms = session_timeout_ms
        # Tansu does not answer a waiting fetch as soon as data arrives: the wait is added latency
        # (50 ms: ~9 ms median; 500 ms: ~115 ms), and idle fetches are most of an idle broker's CPU
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.after_commit = after_commit  # e.g. wake the outbox relay for events the handler added
        self.stats = ConsumerStats()
        self._consumer: AIOKafkaConsumer | None = None
        self._rebuild = asyncio.Event()
        self._rebuild_reason = ""
        self._epoch = 0
        self._incarnation = ""
        self._stopping = False
        self._task: asyncio.Task | None = None
        bus.on_new_epoch(self._on_epoch)

    async def _on_epoch(self, epoch: int) -> None:
        self._rebuild_reason = f"new broker incarnation (epoch {epoch})"
        self._rebuild.set()

    def kafka_group_id(self) -> str:
        """The Kafka group: one per broker incarnation, when positions are kept in PostgreSQL.

        A client of the old incarnation that reconnected to the new broker may sit in the
        group, and a rebalance would wait for it; a group of the new incarnation starts clean.
        """
        if self.pool is None or not self._incarnation:
            return self.group_id
        return f"{self.group_id}.{self._incarnation[:8]}"

    async def stored_offsets(self) -> dict[tuple[str, int], int]:
        """Next offsets per (topic, partition) stored for the broker incarnation in use."""
        if self.pool is None:
            return {}
        rows = await self.pool.fetch(
            "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer = $1 AND incarnation = $2",
            self.group_id,
            self._incarnation,
        )
        return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}

    def _new_consumer(self) -> AIOKafkaConsumer:
        # a client belongs to one broker epoch; its positions are stored under that incarnation
        self._epoch, self._incarnation = self.bus.epoch, self.bus.incarnation or ""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bus.bootstrap_servers,
            group_id=self.kafka_group_id(),
            client_id=f"{self.group_id}-consumer",
            auto_offset_reset="earliest",  # a restarted memory broker has lost the group's offsets
            enable_auto_commit=False,
            max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=max(100, self.session_timeout_ms // 5),
            metadata_max_age_ms=5000,
        )
        return consumer

    async def _start_consumer(self, wait_s: float) -> None:
        """Start a new client and subscribe it afterwards.

        Subscribing before `start()` makes aiokafka wait there for the group's first
        assignment, which Tansu hands out only after a few seconds; subscribed after,
        the join runs in the background (and /ready says so until partitions arrive).
        """
        self._consumer = self._new_consumer()
        await start_with_retry(self._consumer.start, f"consumer {self.group_id}", wait_s)
        # without a database (the re-introspection consumer) Kafka's committed offsets are used
        listener = _SeekToStoredOffsets(self, self._consumer) if self.pool is not None else None
        self._consumer.subscribe(self.topics, listener=listener)

    @property
    def assigned(self) -> bool:
        """Whether the client has partitions to read (false while it joins its group)."""
        return bool(self._consumer is not None and self._consumer.assignment())

    async def start(self, wait_s: float = 30.0) -> None:
        await self._start_consumer(wait_s)
        self._task = asyncio.create_task(self._run(), name=f"consumer-{self.group_id}")

    async def stop(self) -> None:
        self._stopping = True
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        await self._close_consumer()

    async def _close_consumer(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            try:
                await asyncio.wait_for(consumer.stop(), 2)
            except Exception:
                log.debug("consumer did not stop cleanly", exc_info=True)

    async def _rebuild_consumer(self, why: str) -> None:
        log.warning("rebuilding consumer %s: %s", self.group_id, why)
        self.stats.rebuilds += 1
        await self._close_consumer()
        await self._start_consumer(3600)

    async def _stalled(self) -> bool:
        """True when the broker holds records past our position but none arrive."""
        consumer = self._consumer
        if consumer is None:
            return False
        assignment = consumer.assignment()
        if not assignment:
            return True
        for tp in assignment:
            high = consumer.highwater(tp)
            try:
                pos = await asyncio.wait_for(consumer.position(tp), 2)
            except Exception:
                return False
            if high is not None and pos is not None and high > pos:
                return True
        return False

    async def _run(self) -> None:
        idle_since = time.monotonic()
        suspect = 0
        while not self._stopping:
            if self._rebuild.is_set():
                self._rebuild.clear()
                await self._rebuild_consumer(self._rebuild_reason)
                idle_since = time.monotonic()
            assert self._consumer is not None
            try:
                # bounded: during a rebalance getmany waits for an assignment, and a rebuild must not wait
                batch = await asyncio.wait_for(
                    self._consumer.getmany(timeout_ms=self.timeout_ms, max_records=self.max_records), 1.0
                )
            except asyncio.TimeoutError:
                continue
            except KafkaError as exc:
                log.warning("consumer %s fetch failed: %r", self.group_id, exc)
                await asyncio.sleep(0.2)
                continue
            records = [r for tp_records in batch.values() for r in tp_records]
            if not records:
                if time.monotonic() - idle_since > 5.0:
                    idle_since = time.monotonic()
                    suspect = suspect + 1 if await self._stalled() else 0
                    if suspect >= 2:
                        suspect = 0
                        self._rebuild_reason = "stalled: the broker holds records past our position"
                        self._rebuild.set()
                continue
            idle_since = time.monotonic()
            suspect = 0
            if not self.bus.reachable or self.bus.epoch != self._epoch:
                # The broker went away (maybe to come back empty) or is a new incarnation: do not
                # apply what a client of the old one fetched — its positions may point into the middle
                # of the new log. Step back; the rebuilt client reads from the stored positions.
                for tp, tp_records in batch.items():
                    self._consumer.seek(tp, tp_records[0].offset)
                await asyncio.sleep(0.05)
                continue
            await self._process(records)
            try:
                await asyncio.wait_for(self._consumer.commit(), 2)
            except (KafkaError, asyncio.TimeoutError) as exc:
                # the batch is applied and its positions stored; a redelivery is de-duplicated
                log.warning("consumer %s commit failed: %r", self.group_id, exc)

    async def _process(self, records: list[ConsumerRecord]) -> None:
        valid: list[Received] = []
        invalid: list[tuple[ConsumerRecord, str]] = []
        for r in records:
            try:
                env = parse_envelope(r.value)
            except InvalidEnvelope as exc:
                invalid.append((r, str(exc)))
                continue
            valid.append(Received(env, r.topic, r.partition, r.offset, r.key.decode("utf-8", "replace") if r.key else None))
        delay = 0.1
        while True:
            try:
                applied = await self._apply(records, valid, invalid)
                if self.after_commit is not None:
                    self.after_commit()
                break
            except (asyncpg.PostgresError, OSError, asyncio.TimeoutError, asyncpg.InterfaceError) as exc:
                if self._stopping:
                    raise
                log.warning("consumer %s batch failed, retrying: %r", self.group_id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        for r, reason in invalid:
            await self._forward_dead_letter(r, reason)
        s = self.stats
        s.batches += 1
        s.received += len(records)
        s.applied += applied
        s.duplicates += len(valid) - applied
        s.dead_lettered += len(invalid)
        s.largest_batch = max(s.largest_batch, len(records))
        s.last_batch_at = time.time()

    async def _apply(
        self, records: list[ConsumerRecord], valid: list[Received], invalid: list[tuple[ConsumerRecord, str]]
    ) -> int:
        if self.pool is None:
            await self.handler(None, valid)
            return len(valid)
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                if invalid:
                    await conn.executemany(
                        'INSERT INTO dead_letters (consumer, topic, partition, "offset", key, value, reason)'
                        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                        [(self.group_id, r.topic, r.partition, r.offset, r.key, r.value, reason) for r, reason in invalid],
                    )
                fresh = valid
                if self.dedupe and valid:
                    ids = [rec.envelope.event_id for rec in valid]
                    rows = await conn.fetch(
                        "INSERT INTO processed_events (consumer, event_id) SELECT $1, unnest($2::uuid[])"
                        " ON CONFLICT DO NOTHING RETURNING event_id",
                        self.group_id,
                        ids,
                    )
                    new_ids: set[uuid.UUID] = {row["event_id"] for row in rows}
                    fresh = []
                    for rec in valid:  # the same event twice in one batch: keep the first
                        if rec.envelope.event_id in new_ids:
                            new_ids.discard(rec.envelope.event_id)
                            fresh.append(rec)
                if fresh:
                    await self.handler(conn, fresh)
                next_offsets: dict[tuple[str, int], int] = {}
                for r in records:
                    key = (r.topic, r.partition)
                    next_offsets[key] = max(next_offsets.get(key, 0), r.offset + 1)
                await conn.execute(
                    "INSERT INTO consumer_offsets AS c (consumer, incarnation, topic, partition, next_offset)"
                    " SELECT $1, $2, t, p, o FROM unnest($3::text[], $4::int[], $5::bigint[]) AS x(t, p, o)"
                    " ON CONFLICT (consumer, incarnation, topic, partition) DO UPDATE"
                    " SET next_offset = GREATEST(c.next_offset, EXCLUDED.next_offset), updated_at = clock_timestamp()",
                    self.group_id,
                    self._incarnation,
                    [k[0] for k in next_offsets],
                    [k[1] for k in next_offsets],
                    list(next_offsets.values()),
                )
                return len(fresh)

    async def _forward_dead_letter(self, r: ConsumerRecord, reason: str) -> None:
        """Best effort: the `dead_letters` row is already committed, the topic is for live watchers."""
        producer = self.bus.producer
        if producer is None:
            return
        headers = [
            ("reason", reason.encode()[:1000]),
            ("source_topic", r.topic.encode()),
            ("source_partition", str(r.partition).encode()),
            ("source_offset", str(r.offset).encode()),
            ("consumer", self.group_id.encode()),
        ]
        try:
            await asyncio.wait_for(
                producer.send_and_wait(self.dead_letter_topic, r.value, key=r.key, headers=headers), 5
            )
        except Exception as exc:
            log.warning("dead letter from %s not forwarded to %s: %r", r.topic, self.dead_letter_topic, exc)

