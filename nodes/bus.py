"""Kafka access on aiokafka: the producer, explicit topic creation, and broker supervision.

Why a supervisor: Tansu 0.6 does not auto-create topics, and a memory broker
that restarts comes back with no topics, offsets or groups — yet aiokafka
clients reconnect to it as if nothing happened, and may even commit their
old offsets into the new, empty log. So each process must notice a broker
*incarnation* change by itself. The first process to find the broker without
the one-partition `bridgestorm-incarnation` topic creates it (with every
other missing topic) and writes a random id at offset 0; every process reads
offset 0 on each poll. A new id means a new broker: the bus bumps its
`epoch`, consumers rebuild and read the new log from its beginning, and the
outbox replays what consumers had not yet confirmed.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

log = logging.getLogger(__name__)

# Largest message a node publishes or forwards (dead letters of up to a few MiB).
MAX_MESSAGE_BYTES = 4 * 1024 * 1024

INCARNATION_TOPIC = "bridgestorm-incarnation"

EpochListener = Callable[[int], Awaitable[None]]


async def start_with_retry(start: Callable[[], Awaitable[None]], what: str, wait_s: float) -> None:
    """aiokafka's start() tries each bootstrap host once; retry it with backoff."""
    deadline = time.monotonic() + wait_s
    delay = 0.1
    while True:
        try:
            await start()
            return
        except (KafkaError, OSError) as exc:
            if time.monotonic() > deadline:
                raise ConnectionError(f"{what} could not reach the broker within {wait_s:.0f}s: {exc!r}") from exc
            log.info("waiting for the broker (%s): %r", what, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


class IncarnationReader:
    """Reads the broker's incarnation id: the record at offset 0 of `bridgestorm-incarnation`.

    Used by every node (through `EventBus`) and by observers that only read,
    such as the Locust processes, which must also notice a broker that came back empty.
    """

    def __init__(self, bootstrap_servers: str, client_id: str = "bridgestorm"):
        self.tp = TopicPartition(INCARNATION_TOPIC, 0)
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id
        self.consumer = self._new_consumer()

    def _new_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers, client_id=f"{self.client_id}-incarnation",
            enable_auto_commit=False, request_timeout_ms=3000, metadata_max_age_ms=2000,
            fetch_max_wait_ms=50,  # Tansu answers a waiting fetch only at its end: the wait is added latency
        )

    async def start(self, wait_s: float = 30.0) -> None:
        await start_with_retry(self.consumer.start, "incarnation reader", wait_s)
        self.consumer.assign([self.tp])

    async def read(self) -> str | None:
        """The id, or None while nobody has written one into this broker yet.

        A consumer that lived through the broker's death can be left unable to fetch from the
        new log (aiokafka keeps its old partition state): when the log has a record this
        consumer cannot read, it is replaced, so a node never misses a new incarnation.
        """
        try:
            self.consumer.seek(self.tp, 0)
            records = (await self.consumer.getmany(self.tp, timeout_ms=500, max_records=1)).get(self.tp, [])
            if records and records[0].offset == 0:
                return records[0].value.decode()
            if records or await self.is_empty():
                return None
            log.warning("incarnation reader: the broker has an id this consumer cannot read; replacing it")
        except (KafkaError, OSError, asyncio.TimeoutError):
            await self._replace()
            raise
        await self._replace()
        return None

    async def _replace(self) -> None:
        old, self.consumer = self.consumer, self._new_consumer()
        try:
            await asyncio.wait_for(old.stop(), 2)
        except Exception:  # noqa: BLE001 - it is replaced because it is broken
            pass
        await self.start(wait_s=5)

    async def is_empty(self) -> bool:
        end = await asyncio.wait_for(self.consumer.end_offsets([self.tp]), 5)
        return end.get(self.tp, 0) == 0

    async def stop(self) -> None:
        await self.consumer.stop()


class EventBus:
    """One process's connection to the bus."""

    def __init__(
        self,
        bootstrap_servers: str,
        topics: list[str],
        *,
        partitions: int = 3,
        replication_factor: int = 1,
        client_id: str = "bridgestorm",
        supervise_interval_s: float = 0.25,
    ):
        self.bootstrap_servers = bootstrap_servers
        self.topics = list(topics)
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.client_id = client_id
        self.supervise_interval_s = supervise_interval_s
        self.epoch = 0
        self.incarnation: str | None = None
        self.reachable = False
        self.producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._marker: IncarnationReader | None = None
        self._listeners: list[EpochListener] = []
        self._supervisor: asyncio.Task | None = None

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            acks="all",
            linger_ms=1,
            request_timeout_ms=5000,
            retry_backoff_ms=100,
            metadata_max_age_ms=5000,
            max_request_size=MAX_MESSAGE_BYTES,
        )

    async def start(self, wait_s: float = 30.0) -> None:
        self._admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers, client_id=f"{self.client_id}-admin", request_timeout_ms=3000
        )
        await start_with_retry(self._admin.start, "admin client", wait_s)
        await self.ensure_topics()
        self.producer = self._new_producer()
        await start_with_retry(self.producer.start, "producer", wait_s)
        self._marker = IncarnationReader(self.bootstrap_servers, self.client_id)
        await self._marker.start(wait_s)
        self.incarnation = await self._read_incarnation(wait_s)
        self.reachable = True
        self._supervisor = asyncio.create_task(self._supervise(), name="bus-supervisor")

    def on_new_epoch(self, listener: EpochListener) -> None:
        """Call `listener(epoch)` after the broker came back or lost its topics."""
        self._listeners.append(listener)

    async def ensure_topics(self) -> list[str]:
        """Create the topics that are missing; returns the ones created."""
        assert self._admin is not None
        existing = set(await asyncio.wait_for(self._admin.list_topics(), 5))
        wanted = {t: self.partitions for t in self.topics} | {INCARNATION_TOPIC: 1}
        missing = [t for t in wanted if t not in existing]
        for topic in missing:
            new = NewTopic(topic, num_partitions=wanted[topic], replication_factor=self.replication_factor)
            try:
                await self._admin.create_topics([new])
            except TopicAlreadyExistsError:
                pass  # another process won the race
        if missing:
            log.info("created topics %s", missing)
        return missing

    async def _read_incarnation(self, wait_s: float = 5.0) -> str:
        """The id at offset 0 of the incarnation topic, written by whoever finds it empty."""
        assert self._marker is not None and self.producer is not None
        deadline = time.monotonic() + wait_s
        while True:
            # empty first: reading an empty topic waits out the whole read timeout, and after a broker
            # restart every node's replay waits for this
            if await self._marker.is_empty():
                await self.producer.send_and_wait(INCARNATION_TOPIC, uuid.uuid4().hex.encode())
            incarnation = await self._marker.read()
            if incarnation is not None:
                return incarnation
            if time.monotonic() > deadline:
                raise asyncio.TimeoutError("the broker's incarnation id could not be read")

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(self.supervise_interval_s)
            try:
                await self.ensure_topics()
                if self.producer is None:
                    producer = self._new_producer()
                    await asyncio.wait_for(producer.start(), 5)
                    self.producer = producer
                incarnation = await self._read_incarnation()
            except (KafkaError, OSError, asyncio.TimeoutError) as exc:
                if self.reachable:
                    log.warning("broker unreachable: %r", exc)
                    self.reachable = False
                    # what the producer still holds must not reach a broker that may come back empty
                    # ahead of the outbox's ordered replay; the outbox sends it again
                    old, self.producer = self.producer, None
                    if old is not None:
                        try:
                            await _abandon(old)
                        except Exception:
                            log.warning("old producer did not close cleanly", exc_info=True)
                continue
            except Exception:  # keep supervising whatever happens
                log.exception("broker supervision failed")
                continue
            if incarnation != self.incarnation:
                self.incarnation = incarnation
                self.epoch += 1
                log.warning("new broker incarnation %s: epoch %d", incarnation, self.epoch)
                # batches the old producer still holds would reach the new log out of order
                await self.rebuild_producer(deliver_pending=False)
                for listener in self._listeners:  # before `reachable`: the replay goes out before newer events
                    try:
                        await listener(self.epoch)
                    except Exception:
                        log.exception("epoch listener failed")
            if not self.reachable:
                log.warning("broker reachable again (incarnation %s)", incarnation)
            self.reachable = True

    async def rebuild_producer(self, deliver_pending: bool = True) -> None:
        """Replace a producer that stopped making progress, or that served an old broker incarnation."""
        old, self.producer = self.producer, self._new_producer()
        if old is not None:
            try:
                if deliver_pending:
                    await asyncio.wait_for(old.stop(), 5)
                else:
                    await _abandon(old)
            except Exception:
                log.debug("old producer did not stop cleanly", exc_info=True)
        await start_with_retry(self.producer.start, "producer", 30)


    async def publish(self, topic: str, key: str, value: bytes, timeout_s: float = 10.0):
        """Publish one message and wait for the broker's acknowledgement."""
        assert self.producer is not None, "bus not started"
        return await asyncio.wait_for(self.producer.send_and_wait(topic, value, key=key.encode()), timeout_s)

    async def stop(self) -> None:
        if self._supervisor:
            self._supervisor.cancel()
        for client in (self.producer, self._marker, self._admin):
            if client is None:
                continue
            try:
                await asyncio.wait_for(client.close() if client is self._admin else client.stop(), 5)
            except Exception:
                log.debug("client did not stop cleanly", exc_info=True)


async def _abandon(producer: AIOKafkaProducer) -> None:
    """Close a producer without delivering the batches it still holds.

    aiokafka's `stop()` flushes pending batches first, which after a broker
    restart would deliver stale events into the new log ahead of the outbox's
    ordered replay. There is no public call for this, so we fail the pending
    batches and stop the sender through aiokafka's internals (0.12–0.14).
    """
    producer._closed = True
    producer._message_accumulator.fail_all(KafkaConnectionError("abandoned: the broker is a new incarnation"))
    try:
        if producer._sender is not None:
            # the sender task may end with the batches fail_all took from it (a KeyError in aiokafka's reenqueue)
            await asyncio.wait_for(producer._sender.close(), 2)
    finally:  # whatever the sender did: a client left open keeps its connections and metadata loop for ever
        await asyncio.wait_for(producer.client.close(), 2)


async def assign_at_end(consumer: AIOKafkaConsumer, topics: list[str]) -> None:
    """Assign every partition of `topics` (no group) and start at their current end.

    Positions are resolved before returning, so nothing published afterwards is
    missed: what observers (tests, the demo, benchmarks) need to wait for a result.
    """
    tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or []]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)
