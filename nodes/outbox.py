"""The transactional outbox: events are written with the state change that caused them, then relayed.

A node never publishes to Kafka directly: it adds the event to `outbox` in
the same transaction as its own rows, so an acknowledged request can never
lose its events when the broker is down. The relay publishes rows in id
order, marks them sent on the broker's ack, and a confirmation sweep marks
them confirmed once every consumer group that must consume them has a
receipt in `processed_events`. When the broker comes back as a new
incarnation (a memory broker comes back empty), everything sent but not
confirmed is replayed; consumers are idempotent, so a replay is safe.

Per-key order: normally a pass sends rows in id order, and only the run of
rows before the first failure counts as sent (a failed row and everything
after it are sent again; consumers drop the duplicates). But a batch that
fails with a retriable error can be retried behind a later batch of the same
partition (aiokafka keeps several requests in flight, and Tansu has no
idempotent producer to stop that). So after any failure, and after the broker
comes back, the relay is *careful* for a while: a pass sends at most one
event per key, so a key's next event goes out only after the broker
acknowledged the one before. Careful passes cost a round trip per event of a
key, which is why they are not the default. The relay holds back while the
broker is unreachable (and `nodes.bus` drops what the old producer still
held), so a replay after a restart goes out before anything newer.
"""
from __future__ import annotations

import asyncio
import logging
import time

import asyncpg
from aiokafka.errors import KafkaConnectionError, KafkaError

from nodes.bus import EventBus
from nodes.config import Topics, required_consumers
from nodes.envelope import OnexEnvelopeV1

log = logging.getLogger(__name__)

RELAY_BATCH = 500
CAREFUL_FOR_S = 10.0  # one event per key per pass, this long after a failure or a broker change
CONFIRM_INTERVAL_S = 1.0
FORGET_CONFIRMED_AFTER_S = 300.0


_PASS = "SELECT id, topic, key, value FROM outbox WHERE producer = $1 AND sent_at IS NULL ORDER BY id LIMIT $2"
_CAREFUL_PASS = (
    "SELECT * FROM (SELECT DISTINCT ON (key) id, topic, key, value FROM outbox"
    "  WHERE producer = $1 AND sent_at IS NULL ORDER BY key, id) AS first_per_key ORDER BY id LIMIT $2"
)


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
        self._careful_until = 0.0
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
            if not self.bus.reachable:
                self._careful_until = time.monotonic() + CAREFUL_FOR_S
                self._wake.set()
                await asyncio.sleep(0.1)
                continue
            try:
                while (sent := await self._relay_batch()) == RELAY_BATCH or (sent and self._careful()):
                    pass
                delay = 0.05
            except (KafkaError, OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self.failures += 1
                self._careful_until = time.monotonic() + CAREFUL_FOR_S
                log.warning("outbox relay: %r; retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                self._wake.set()
                if self.failures % 20 == 0 and self.bus.reachable:
                    await self.bus.rebuild_producer()  # no progress while the broker answers: a stuck client

    def _careful(self) -> bool:
        return time.monotonic() < self._careful_until

    async def _relay_batch(self) -> int:
        rows = await self.pool.fetch(_CAREFUL_PASS if self._careful() else _PASS, self.producer_id, RELAY_BATCH)
        if not rows:
            return 0
        producer = self.bus.producer
        if producer is None:
            raise KafkaConnectionError("no producer: the broker is away")
        epoch = self.bus.epoch
        futures = []
        for row in rows:
            futures.append(await producer.send(row["topic"], row["value"], key=row["key"].encode()))
        results = await asyncio.gather(*(asyncio.wait_for(f, 10) for f in futures), return_exceptions=True)
        if self.bus.epoch != epoch:
            # the broker changed incarnation under this pass: its acks may be for a log that is gone
            return len(rows)
        sent_ids = []
        first_error: BaseException | None = None
        for row, result in zip(rows, results):
            if isinstance(result, BaseException):
                first_error = result
                break
            sent_ids.append(row["id"])
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
        self._careful_until = time.monotonic() + CAREFUL_FOR_S
        log.warning("broker epoch %d: replaying %d unconfirmed events", epoch, count)
        self.wake()

    def snapshot(self) -> dict:
        return {"sent": self.sent, "replayed": self.replayed, "failures": self.failures}
