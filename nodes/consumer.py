"""Batch consumers that no message can stop, and that never apply an event twice.

Each batch: every message that is not a valid envelope goes to the
`dead_letters` table and the dead-letter topic with its reason; the valid
ones are de-duplicated on `event_id` against `processed_events` (the
consumer's receipts, also what the outbox reads to know an event was
confirmed) and handed to the node's handler; and the consumer's next offsets
are stored in `consumer_offsets` — all in one transaction.

A batch whose transaction fails is treated by why it failed
(`nodes.failures`): transient trouble (the database or the network) retries
the same batch, with backoff and jitter, for as long as it lasts, so per-key
order holds and nothing is lost. A message the store refuses for what it
contains (or that the handler refuses, raising `Unprocessable`), or one
the handler fails on, is isolated by halving the batch (each half applied
in order, in its own transaction), and that one message
is dead-lettered — at once when the store refused it, after
`handler_attempts` tries when the handler failed — with the class, the
error and the attempt count; the rest of its batch is applied and the
offset moves on. A dead-lettered envelope gets its receipt, so the outbox
stops resending it and a replay does not dead-letter it twice.

A supervisor restarts the consumer's loop, with backoff, when anything
unforeseen ends it. The consumer knows its lag (the broker's high watermark
minus its own next unapplied offset, per partition) and when it last made
progress (a batch applied, or nothing left to read); `stuck()` says why it
is stuck when it has had lag and no progress for `stall_after_s`, and the
node's /ready answers not-ready with that reason.

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
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord
from aiokafka.errors import KafkaError

from nodes.bus import MAX_MESSAGE_BYTES, EventBus, start_with_retry, stop_client
from nodes.envelope import InvalidEnvelope, OnexEnvelopeV1, parse_envelope
from nodes.failures import HANDLER, REFUSED, TRANSIENT, Unprocessable, classify, describe

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


INVALID = "invalid"  # the dead-letter class of a message that is not a valid envelope


@dataclass
class ConsumerStats:
    """What /stats shows per consumer (``vars()`` of it, plus ``lag`` and ``since_progress_s``)."""

    batches: int = 0
    received: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)  # per class: invalid, refused, handler
    retries: int = 0  # transactions tried again: transient trouble, or a handler failure before its dead letter
    isolations: int = 0  # batches halved to find the message that failed them
    restarts: int = 0  # the loop ended by something unforeseen and was started again
    rebuilds: int = 0
    largest_batch: int = 0
    last_batch_at: float = 0.0
    last_progress_at: float = 0.0
    retrying_since: float | None = None  # the current batch has failed since then (None: not retrying)
    last_error: str | None = None


@dataclass
class _Item:
    """One fetched message: its envelope, or why it is not one."""

    record: ConsumerRecord
    received: Received | None
    invalid_reason: str | None = None


def _jitter(delay: float) -> float:
    """Full jitter (a random wait up to ``delay``), so nodes that failed together do not retry together."""
    return random.uniform(delay / 2, delay)


def _headers(record: ConsumerRecord) -> dict[str, str]:
    """A message's Kafka headers as text, fit for a jsonb column (which refuses NUL)."""
    return {str(k).replace("\x00", "\ufffd"): (v or b"").decode("utf-8", "replace").replace("\x00", "\ufffd")
            for k, v in (record.headers or ())}


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
        handler_attempts: int = 3,
        stall_after_s: float = 30.0,
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
        self.handler_attempts = max(1, handler_attempts)
        self.stall_after_s = stall_after_s
        self.stats = ConsumerStats(last_progress_at=time.time())
        self._positions: dict[tuple[str, int], int] = {}  # (topic, partition) -> next offset not yet applied
        self._forwarding: set[asyncio.Task] = set()
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
        self._positions = {}
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
        self._task = asyncio.create_task(self._supervise(), name=f"consumer-{self.group_id}")

    async def stop(self) -> None:
        self._stopping = True
        for task in list(self._forwarding):
            task.cancel()
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
            await stop_client(consumer, 2)

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

    # -- progress ----------------------------------------------------------------------------
    def lag(self) -> int | None:
        """Messages the broker holds past what this consumer applied (None: not known yet)."""
        consumer = self._consumer
        if consumer is None:
            return None
        total, known = 0, False
        for tp in consumer.assignment():
            high, pos = consumer.highwater(tp), self._positions.get((tp.topic, tp.partition))
            if high is not None and pos is not None:
                total, known = total + max(0, high - pos), True
        return total if known else None

    def stuck(self, now: float | None = None) -> str | None:
        """Why the consumer is stuck (lag and no progress for ``stall_after_s``), or None."""
        now = time.time() if now is None else now
        lag = self.lag()
        quiet = now - self.stats.last_progress_at
        if not lag or quiet < self.stall_after_s:
            return None
        why = f"consumer {self.group_id} made no progress for {quiet:.0f} s with a lag of {lag}"
        if self.stats.retrying_since is not None and self.stats.last_error:
            why += f" (retrying since {now - self.stats.retrying_since:.0f} s: {self.stats.last_error})"
        return why

    def snapshot(self) -> dict[str, Any]:
        """The stats, with the lag and the age of the last progress, for /stats."""
        body = dict(vars(self.stats))
        body["dead_letters"] = dict(self.stats.dead_letters)
        body["lag"] = self.lag()
        body["since_progress_s"] = round(time.time() - self.stats.last_progress_at, 3)
        body["stuck"] = self.stuck()
        return body

    def _progressed(self) -> None:
        self.stats.last_progress_at = time.time()
        self.stats.retrying_since = None

    # -- the loop --------------------------------------------------------------------------
    async def _supervise(self) -> None:
        """Run the loop; when something unforeseen ends it, log it and start again with a new client."""
        delay = 0.5
        while not self._stopping:
            started = time.monotonic()
            try:
                await self._run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the supervisor's whole point
                if self._stopping:
                    return
                self.stats.restarts += 1
                self.stats.last_error = describe(exc)
                if time.monotonic() - started > 60:
                    delay = 0.5  # it ran a good while: a new failure, not the same one again
                wait = _jitter(delay)
                log.error("consumer %s stopped by %s; restarting in %.1f s", self.group_id, describe(exc), wait,
                          exc_info=exc)
                await asyncio.sleep(wait)
                delay = min(delay * 2, 30.0)
                self._rebuild_reason = f"restart after {type(exc).__name__}"
                self._rebuild.set()

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
                if not self.lag():
                    self._progressed()  # nothing to read is progress: a consumer with no work is not stuck
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
            for tp, tp_records in batch.items():
                self._positions.setdefault((tp.topic, tp.partition), tp_records[0].offset)
            await self._process(records)
            try:
                await asyncio.wait_for(self._consumer.commit(), 2)
            except (KafkaError, asyncio.TimeoutError) as exc:
                # the batch is applied and its positions stored; a redelivery is de-duplicated
                log.warning("consumer %s commit failed: %r", self.group_id, exc)

    # -- one batch -------------------------------------------------------------------------
    def _parse(self, r: ConsumerRecord) -> _Item:
        try:
            env = parse_envelope(r.value)
        except InvalidEnvelope as exc:
            return _Item(r, None, str(exc))
        except Exception as exc:  # noqa: BLE001 - a message the validation itself chokes on is not an envelope
            return _Item(r, None, f"unreadable envelope: {describe(exc)}")
        key = r.key.decode("utf-8", "replace") if r.key else None
        return _Item(r, Received(env, r.topic, r.partition, r.offset, key))

    async def _process(self, records: list[ConsumerRecord]) -> None:
        items = [self._parse(r) for r in records]
        await self._apply_isolating(items)
        s = self.stats
        s.batches += 1
        s.received += len(records)
        s.largest_batch = max(s.largest_batch, len(records))
        s.last_batch_at = time.time()

    async def _apply_isolating(self, items: list[_Item]) -> None:
        """Apply ``items`` in order; the message that makes a transaction fail is isolated and dead-lettered."""
        delay, attempts = 0.1, 0
        while True:
            try:
                letters = await self._apply(items)
            except Exception as exc:  # noqa: BLE001 - classified below; nothing a message does ends the consumer
                if self._stopping:
                    raise
                kind = classify(exc)
                self.stats.last_error = describe(exc)
                if kind == TRANSIENT:
                    self._retrying(delay, exc, "transient")
                    await asyncio.sleep(_jitter(delay))
                    delay = min(delay * 2, 5.0)
                    continue
                if len(items) > 1:
                    self.stats.isolations += 1
                    middle = len(items) // 2
                    await self._apply_isolating(items[:middle])
                    await self._apply_isolating(items[middle:])
                    return
                attempts += 1
                if kind == HANDLER and attempts < self.handler_attempts:
                    self._retrying(delay, exc, f"handler, attempt {attempts} of {self.handler_attempts}")
                    await asyncio.sleep(_jitter(delay))
                    delay = min(delay * 2, 5.0)
                    continue
                await self._dead_letter_one(items[0], kind, exc, attempts)
                return
            self._applied(items, letters)
            return

    def _retrying(self, delay: float, exc: BaseException, why: str) -> None:
        self.stats.retries += 1
        if self.stats.retrying_since is None:
            self.stats.retrying_since = time.time()
        log.warning("consumer %s batch failed (%s), retrying in <= %.1f s: %s", self.group_id, why, delay,
                    describe(exc))

    def _applied(self, items: list[_Item], letters: list[tuple[ConsumerRecord, dict[str, str]]]) -> None:
        """Book-keeping after a committed transaction: positions, progress, stats, the dead-letter topic."""
        for item in items:
            r = item.record
            key = (r.topic, r.partition)
            self._positions[key] = max(self._positions.get(key, 0), r.offset + 1)
        self._progressed()
        if self.after_commit is not None:
            self.after_commit()
        for r, headers in letters:
            self.stats.dead_lettered += 1
            self.stats.dead_letters[headers["class"]] = self.stats.dead_letters.get(headers["class"], 0) + 1
            self._forward(r, headers)

    def _forward(self, r: ConsumerRecord, headers: dict[str, str]) -> None:
        # not awaited: a broker that is away must not hold up the consumer for a best-effort copy
        task = asyncio.ensure_future(self._forward_dead_letter(r, headers))
        self._forwarding.add(task)
        task.add_done_callback(self._forwarding.discard)

    async def _apply(self, items: list[_Item]) -> list[tuple[ConsumerRecord, dict[str, str]]]:
        """One transaction: dead letters of the invalid items, the valid ones handled once, the next offsets.

        Returns the dead letters written (record, their dead-letter headers), to forward once committed.
        """
        valid = [item.received for item in items if item.received is not None]
        invalid = [item for item in items if item.received is None]
        letters = [(i.record, {"reason": i.invalid_reason or "", "class": INVALID, "attempts": "1"}) for i in invalid]
        records = [item.record for item in items]
        if self.pool is None:
            if valid:
                await self.handler(None, valid)
            self.stats.applied += len(valid)
            return letters
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                if letters:
                    await self._insert_dead_letters(conn, letters)
                fresh = await self._fresh(conn, valid)
                if fresh:
                    await self.handler(conn, fresh)
                await self._store_offsets(conn, records)
        self.stats.applied += len(fresh)
        self.stats.duplicates += len(valid) - len(fresh)
        return letters

    async def _fresh(self, conn: asyncpg.Connection, valid: list[Received]) -> list[Received]:
        """The events not applied before (their receipts are written here, in the batch's transaction)."""
        if not self.dedupe or not valid:
            return valid
        rows = await conn.fetch(
            "INSERT INTO processed_events (consumer, event_id) SELECT $1, unnest($2::uuid[])"
            " ON CONFLICT DO NOTHING RETURNING event_id",
            self.group_id,
            [rec.envelope.event_id for rec in valid],
        )
        new_ids: set[uuid.UUID] = {row["event_id"] for row in rows}
        fresh = []
        for rec in valid:  # the same event twice in one batch: keep the first
            if rec.envelope.event_id in new_ids:
                new_ids.discard(rec.envelope.event_id)
                fresh.append(rec)
        return fresh

    async def _store_offsets(self, conn: asyncpg.Connection, records: list[ConsumerRecord]) -> None:
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

    async def _insert_dead_letters(self, conn: asyncpg.Connection,
                                   letters: list[tuple[ConsumerRecord, dict[str, str]]]) -> None:
        await conn.executemany(
            'INSERT INTO dead_letters (consumer, topic, partition, "offset", key, value, reason, class, attempts,'
            " error, headers) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            [(self.group_id, r.topic, r.partition, r.offset, r.key, r.value, h["reason"].replace("\x00", "\\0"),
              h["class"], int(h["attempts"]), h.get("error"), _headers(r)) for r, h in letters],
        )

    async def _dead_letter_one(self, item: _Item, kind: str, exc: BaseException, attempts: int) -> None:
        """Dead-letter the one message that failed its transaction, with its receipt, and move past it.

        Retried (as transient trouble is) until it is written: losing the message is not an option.
        """
        error = describe(exc)
        if isinstance(exc, Unprocessable):
            reason = f"refused by the handler: {exc}"
        elif kind == REFUSED:
            reason = f"refused by the store: {error}"
        else:
            reason = f"handler failed {attempts} time{'s' if attempts > 1 else ''}: {error}"
        log.error("consumer %s dead-letters %s[%d]@%d: %s", self.group_id, item.record.topic, item.record.partition,
                  item.record.offset, reason)
        letter = (item.record, {"reason": reason, "class": kind if kind == REFUSED else HANDLER,
                                "attempts": str(attempts), "error": error})
        delay = 0.1
        while True:
            try:
                if self.pool is not None:
                    async with self.pool.acquire() as conn:
                        async with conn.transaction():
                            await self._insert_dead_letters(conn, [letter])
                            if item.received is not None:  # its receipt: the outbox stops resending it
                                await self._fresh(conn, [item.received])
                            await self._store_offsets(conn, [item.record])
                break
            except Exception as retry_exc:  # noqa: BLE001
                if self._stopping:
                    raise
                self._retrying(delay, retry_exc, "writing a dead letter")
                await asyncio.sleep(_jitter(delay))
                delay = min(delay * 2, 5.0)
        self._applied([item], [letter])

    async def _forward_dead_letter(self, r: ConsumerRecord, letter: dict[str, str]) -> None:
        """Best effort: the `dead_letters` row is already committed, the topic is for live watchers."""
        producer = self.bus.producer
        if producer is None:
            return
        headers = [
            ("reason", letter["reason"].encode()[:1000]),
            ("class", letter["class"].encode()),
            ("attempts", letter["attempts"].encode()),
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
