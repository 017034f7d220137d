"""Batch consumers that never stop on bad input and never apply an event twice.

Each batch: every message that is not a valid envelope goes to the
`dead_letters` table and the dead-letter topic with its reason; the valid
ones are de-duplicated on `event_id` against `processed_events` (the
consumer's receipts, also what the outbox reads to know an event was
confirmed) and handed to the node's handler, all in one transaction; only
then are the offsets committed. A batch whose transaction fails is retried
as it is, so per-key order holds.

The consumer rebuilds its aiokafka client on a new broker epoch (see
`nodes.bus`) and when it stalls: no records while the broker holds data past
its position.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Awaitable, Callable

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord
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
        self.after_commit = after_commit  # e.g. wake the outbox relay for events the handler added
        self.stats = ConsumerStats()
        self._consumer: AIOKafkaConsumer | None = None
        self._rebuild = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task | None = None
        bus.on_new_epoch(self._on_epoch)

    async def _on_epoch(self, epoch: int) -> None:
        self._rebuild.set()

    def _new_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=self.bus.bootstrap_servers,
            group_id=self.group_id,
            client_id=f"{self.group_id}-consumer",
            auto_offset_reset="earliest",  # a restarted memory broker has lost the group's offsets
            enable_auto_commit=False,
            max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
            fetch_max_wait_ms=50,
            session_timeout_ms=10000,
            heartbeat_interval_ms=1000,
            metadata_max_age_ms=5000,
        )

    async def start(self, wait_s: float = 30.0) -> None:
        self._consumer = self._new_consumer()
        await start_with_retry(self._consumer.start, f"consumer {self.group_id}", wait_s)
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
                await asyncio.wait_for(consumer.stop(), 5)
            except Exception:
                log.debug("consumer did not stop cleanly", exc_info=True)

    async def _rebuild_consumer(self, why: str) -> None:
        log.warning("rebuilding consumer %s: %s", self.group_id, why)
        self.stats.rebuilds += 1
        await self._close_consumer()
        self._consumer = self._new_consumer()
        await start_with_retry(self._consumer.start, f"consumer {self.group_id}", 3600)

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
                await self._rebuild_consumer("new broker epoch")
                idle_since = time.monotonic()
            assert self._consumer is not None
            try:
                batch = await self._consumer.getmany(timeout_ms=self.timeout_ms, max_records=self.max_records)
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
                        self._rebuild.set()
                continue
            idle_since = time.monotonic()
            suspect = 0
            await self._process(records)
            try:
                await self._consumer.commit()
            except KafkaError as exc:
                # the batch is applied; a redelivery is de-duplicated
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
                applied = await self._apply(valid, invalid)
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

    async def _apply(self, valid: list[Received], invalid: list[tuple[ConsumerRecord, str]]) -> int:
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

