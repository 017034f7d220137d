"""The transactional outbox: events are written with the state change that caused them, then relayed.

A node never publishes to Kafka directly: it adds the event to `outbox` in
the same transaction as its own rows, so an acknowledged request can never
lose its events when the broker is down. The relay publishes rows in id
order, marks them sent on the broker's ack, and a confirmation sweep marks
them confirmed once every consumer group that must consume them has a
receipt in `processed_events`. When the broker comes back as a new
incarnation (a memory broker comes back empty), everything sent but not
confirmed is replayed; consumers are idempotent, so a replay is safe.

Per-key order: a pass sends rows in id order as *one batch per partition*
(aiokafka's `create_batch`/`send_batch`), and the next pass starts only when
every batch of this one is acknowledged or failed. A batch is in the log
whole or not at all, so a failed event can never be sent again behind a
later event of its partition that made it: sent one by one, a pass's events
of one partition could span several batches, and when an earlier one failed
(its retries expired while the broker was paused or killed) a later one
still got in, which the reducer saw as events out of order (3 in a soak of
53 broker faults). Rows that do not fit their partition's batch wait for the
next pass, with every later row of that partition.

The relay sends only while the bus is trusted (`EventBus.trusted`: the
broker's incarnation read since the producer's last broken connection), and a
failed send drops the producer it went through: so a replay after a restart
goes out before anything newer, and no batch of an old producer reaches the
new log behind the relay's back.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import asyncpg
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.partitioner import DefaultPartitioner

from nodes.bus import EventBus
from nodes.config import Topics, required_consumers
from nodes.envelope import OnexEnvelopeV1

log = logging.getLogger(__name__)

RELAY_BATCH = 500
CONFIRM_INTERVAL_S = 1.0
FORGET_CONFIRMED_AFTER_S = 300.0
PARTITIONER = DefaultPartitioner()  # aiokafka's own: a row lands where producer.send(key=...) would put it


_PASS = "SELECT id, topic, key, value FROM outbox WHERE producer = $1 AND sent_at IS NULL ORDER BY id LIMIT $2"


class Outbox:
    def __init__(self, pool: asyncpg.Pool, bus: EventBus, producer_id: str, topics: Topics):
        self.pool = pool
        self.bus = bus
        self.producer_id = producer_id
        self.topics = topics
        self.sent = 0
        self.replayed = 0
        self.failures = 0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        bus.on_new_epoch(self._replay_on_epoch)

    async def add(self, conn: asyncpg.Connection, topic: str, key: str, envelope: OnexEnvelopeV1) -> None:
        """Add an event inside the caller's transaction; call `wake()` after it commits."""
        await self.add_many(conn, [(topic, key, envelope)])

    async def add_many(self, conn: asyncpg.Connection, events: list[tuple[str, str, OnexEnvelopeV1]]) -> None:
        await conn.executemany(
            "INSERT INTO outbox (event_id, producer, topic, key, value, required) VALUES ($1, $2, $3, $4, $5, $6)",
            [
                (env.event_id, self.producer_id, topic, key, env.to_bytes(), required_consumers(self.topics, topic))
                for topic, key, env in events
            ],
        )

    def insert_rows_sql(self, first_param: int, where: str = "TRUE") -> str:
        """An ``INSERT INTO outbox ... SELECT`` of the events given by `columns()`, for a caller that adds its
        events in the same statement as its own change: one round trip instead of a transaction's four.

        Parameters ``$first_param .. $first_param+5`` are the arrays `columns()` returns, in order.
        """
        p = [f"${first_param + i}" for i in range(6)]
        return ("INSERT INTO outbox (event_id, producer, topic, key, value, required)"
                f" SELECT e.event_id, {p[0]}::text, e.topic, e.key, e.value, {p[1]}::text[]"
                f" FROM unnest({p[2]}::uuid[], {p[3]}::text[], {p[4]}::text[], {p[5]}::bytea[])"
                f" WITH ORDINALITY AS e(event_id, topic, key, value, n) WHERE {where}"
                # ids (the relay's order) follow the events' order explicitly, not the scan's
                " ORDER BY e.n")

    def columns(self, topic: str, events: list[tuple[str, OnexEnvelopeV1]]) -> list:
        """The parameters of `insert_rows_sql` for (key, envelope) events that all go to `topic`."""
        return [self.producer_id, required_consumers(self.topics, topic), [env.event_id for _, env in events],
                [topic] * len(events), [key for key, _ in events], [env.to_bytes() for _, env in events]]

    async def publish(self, topic: str, key: str, envelope: OnexEnvelopeV1) -> None:
        """Add one event in a transaction of its own and wake the relay."""
        async with self.pool.acquire() as conn:
            await self.add(conn, topic, key, envelope)
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._relay_loop(), name="outbox-relay"),
            asyncio.create_task(self._confirm_loop(), name="outbox-confirm"),
        ]

    async def stop(self, drain_s: float = 3.0) -> None:
        """Give the relay a moment to publish what is pending, then stop."""
        deadline = time.monotonic() + drain_s
        while time.monotonic() < deadline and await self.pending() > 0 and self.bus.reachable:
            self.wake()
            await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def pending(self) -> int:
        return await self.pool.fetchval(
            "SELECT count(*) FROM outbox WHERE producer = $1 AND sent_at IS NULL", self.producer_id
        )

    async def _relay_loop(self) -> None:
        delay = 0.05
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            if not self.bus.trusted():  # away, or not yet known to be the broker it was
                self._wake.set()
                await asyncio.sleep(0.05)
                continue
            try:
                while await self._relay_batch() == RELAY_BATCH:
                    pass
                delay = 0.05
            except (KafkaError, OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self.failures += 1
                log.warning("outbox relay: %r; retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                self._wake.set()

    async def _relay_batch(self) -> int:
        rows = await self.pool.fetch(_PASS, self.producer_id, RELAY_BATCH)
        if not rows:
            return 0
        producer = self.bus.producer
        if producer is None or not self.bus.trusted():
            raise KafkaConnectionError("no producer: the broker is away")
        epoch = self.bus.epoch
        batches: dict[tuple[str, int], tuple[Any, list]] = {}  # one per partition: whole in the log or not at all
        full: set[tuple[str, int]] = set()
        for row in rows:
            key = row["key"].encode()
            partitions = sorted(await producer.partitions_for(row["topic"]))
            tp = (row["topic"], PARTITIONER(key, partitions, partitions))
            if tp in full:
                continue  # with every later row of its partition: the next pass, in order
            batch, members = batches.setdefault(tp, (producer.create_batch(), []))
            if batch.append(key=key, value=row["value"], timestamp=None) is None:  # full (a first row always fits)
                full.add(tp)
                continue
            members.append(row)
        futures = [(members, await producer.send_batch(batch, tp[0], partition=tp[1]))
                   for tp, (batch, members) in batches.items()]
        results = await asyncio.gather(*(asyncio.wait_for(f, 10) for _, f in futures), return_exceptions=True)
        if self.bus.epoch != epoch:
            # the broker changed incarnation under this pass: its acks may be for a log that is gone
            return len(rows)
        acked = {row["id"] for (members, _), result in zip(futures, results)
                 if not isinstance(result, BaseException) for row in members}
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            # whatever it still holds could reach a broker that came back before the bus knows
            self.bus.distrust(producer, f"a send failed: {errors[0]!r}")
        if full:
            self._wake.set()  # the rows left for the next pass go at once
        # a partition's rows are acknowledged all or none, and those left for later come after them in id order
        sent_ids = [row["id"] for row in rows if row["id"] in acked]
        first_error: BaseException | None = errors[0] if errors else None
        if sent_ids:
            await self.pool.execute(
                "UPDATE outbox SET sent_at = clock_timestamp(), attempts = attempts + 1 WHERE id = ANY($1::bigint[])",
                sent_ids,
            )
            self.sent += len(sent_ids)
        if first_error is not None:
            raise first_error
        return len(rows)

    async def _confirm_loop(self) -> None:
        while True:
            await asyncio.sleep(CONFIRM_INTERVAL_S)
            try:
                await self.confirm()
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
                log.warning("outbox confirmation: %r", exc)

    async def confirm(self) -> int:
        """Mark sent events confirmed where every required consumer has a receipt; forget old ones."""
        status = await self.pool.execute(
            """
            UPDATE outbox o SET confirmed_at = clock_timestamp()
            WHERE o.producer = $1 AND o.sent_at IS NOT NULL AND o.confirmed_at IS NULL
              AND NOT EXISTS (
                SELECT 1 FROM unnest(o.required) AS r(consumer)
                WHERE NOT EXISTS (
                  SELECT 1 FROM processed_events p WHERE p.consumer = r.consumer AND p.event_id = o.event_id))
            """,
            self.producer_id,
        )
        await self.pool.execute(
            "DELETE FROM outbox WHERE producer = $1 AND confirmed_at < clock_timestamp() - make_interval(secs => $2)",
            self.producer_id,
            FORGET_CONFIRMED_AFTER_S,
        )
        return int(status.split()[-1])

    async def _replay_on_epoch(self, epoch: int) -> None:
        await self.confirm()
        status = await self.pool.execute(
            "UPDATE outbox SET sent_at = NULL WHERE producer = $1 AND sent_at IS NOT NULL AND confirmed_at IS NULL",
            self.producer_id,
        )
        count = int(status.split()[-1])
        self.replayed += count
        log.warning("broker epoch %d: replaying %d unconfirmed events", epoch, count)
        self.wake()

    def snapshot(self) -> dict:
        return {"sent": self.sent, "replayed": self.replayed, "failures": self.failures}
