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

Why a producer never outlives a broken connection: a broker killed and
started again within one poll is not seen as away, and aiokafka's producer
sends the batches it still holds again the moment it reconnects, into the new
log ahead of the outbox's ordered replay (a soak saw a workflow's events 3, 4
land before 0). So when a connection of the producer breaks or times out, the
bus fails what that producer holds and stops it at once, in aiokafka's own
close callback, before its retry backoff ends; and the outbox sends only while
the bus is *trusted*: a supervision poll that began after the last break has
read the incarnation (and run the replay, if it was a new one).
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import CloseReason
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


async def stop_client(client: AIOKafkaConsumer | AIOKafkaProducer | AIOKafkaAdminClient, timeout_s: float) -> None:
    """Stop a client that may be broken, and never let its stop end the caller's loop.

    Why: aiokafka 0.14's `Fetcher.close` awaits the fetch tasks it has just
    cancelled, so a consumer whose fetch was sleeping in a retry backoff (the
    broker was away) raises that CancelledError out of `stop()`. It is no
    `Exception`, and it ended the bus supervisor, a consumer's supervisor and
    the Locust observer. Only a cancellation of the caller itself goes on.
    """
    try:
        await asyncio.wait_for(client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop(), timeout_s)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.debug("client stop raised aiokafka's own CancelledError")
    except Exception:  # noqa: BLE001 - it is being stopped because it is done or broken
        log.debug("client did not stop cleanly", exc_info=True)


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
        await stop_client(old, 2)
        await self.start(wait_s=5)

    async def is_empty(self) -> bool:
        end = await asyncio.wait_for(self.consumer.end_offsets([self.tp]), 5)
        return end.get(self.tp, 0) == 0

    async def stop(self) -> None:
        await stop_client(self.consumer, 2)


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
        self.confirmed_since = 0.0  # start (monotonic) of the last poll that read the incarnation
        self.distrusted_at = 0.0  # when a producer connection last broke or a send through it failed
        self.producers_dropped = 0
        self._closing: set[asyncio.Task] = set()

    def trusted(self) -> bool:
        """True when the producer reaches the incarnation the bus knows, confirmed since the last break."""
        return self.producer is not None and self.reachable and self.confirmed_since > self.distrusted_at

    def distrust(self, producer: AIOKafkaProducer | None, why: str) -> None:
        """The broker behind `producer` may have changed: drop the producer and what it holds, now.

        Synchronous, so that called from aiokafka's close callback it runs before the producer's
        sender could send anything again. The supervisor makes a new producer on its next poll.
        """
        self.distrusted_at = time.monotonic()
        if producer is None or producer is not self.producer:
            return
        self.producer = None
        self.producers_dropped += 1
        log.info("producer dropped (%s): the outbox waits until the broker's incarnation is read again", why)
        _abandon_now(producer)
        task = asyncio.get_running_loop().create_task(_close_abandoned(producer), name="producer-close")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _new_producer(self) -> AIOKafkaProducer:
        producer = self._producer()
        closed = producer.client._on_connection_closed  # aiokafka binds it to every connection it opens

        def on_connection_closed(conn, reason) -> None:
            closed(conn, reason)
            if reason in (CloseReason.CONNECTION_BROKEN, CloseReason.CONNECTION_TIMEOUT):
                self.distrust(producer, f"a connection {reason.name.lower()}")

        producer.client._on_connection_closed = on_connection_closed
        return producer

    async def _started_producer(self) -> AIOKafkaProducer:
        producer = self._new_producer()
        try:
            await asyncio.wait_for(producer.start(), 5)
        except BaseException:
            _abandon_now(producer)
            await _close_abandoned(producer)
            raise
        return producer

    def _producer(self) -> AIOKafkaProducer:
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
        began = time.monotonic()
        self._admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers, client_id=f"{self.client_id}-admin", request_timeout_ms=3000
        )
        await start_with_retry(self._admin.start, "admin client", wait_s)
        await self.ensure_topics()
        producer = self._new_producer()
        await start_with_retry(producer.start, "producer", wait_s)
        self.producer = producer
        self._marker = IncarnationReader(self.bootstrap_servers, self.client_id)
        await self._marker.start(wait_s)
        self.incarnation = await self._read_incarnation(wait_s)
        self.reachable = True
        self.confirmed_since = began
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
        assert self._marker is not None
        deadline = time.monotonic() + wait_s
        while True:
            # empty first: reading an empty topic waits out the whole read timeout, and after a broker
            # restart every node's replay waits for this
            if await self._marker.is_empty():
                if self.producer is None:
                    raise KafkaConnectionError("no producer to write the incarnation id with")
                await self.producer.send_and_wait(INCARNATION_TOPIC, uuid.uuid4().hex.encode())
            incarnation = await self._marker.read()
            if incarnation is not None:
                return incarnation
            if time.monotonic() > deadline:
                raise asyncio.TimeoutError("the broker's incarnation id could not be read")

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(self.supervise_interval_s)
            began = time.monotonic()
            try:
                await self.ensure_topics()
                if self.producer is None:
                    self.producer = await self._started_producer()
                incarnation = await self._read_incarnation()
            except (KafkaError, OSError, asyncio.TimeoutError) as exc:
                if self.reachable:
                    log.warning("broker unreachable: %r", exc)
                    self.reachable = False
                    # what the producer still holds must not reach a broker that may come back empty
                    # ahead of the outbox's ordered replay; the outbox sends it again
                    self.distrust(self.producer, "the broker is unreachable")
                continue
            except Exception:  # keep supervising whatever happens
                log.exception("broker supervision failed")
                continue
            if incarnation != self.incarnation:
                self.incarnation = incarnation
                self.epoch += 1
                log.warning("new broker incarnation %s: epoch %d", incarnation, self.epoch)
                # batches the old producer still holds would reach the new log out of order
                self.distrust(self.producer, "a new broker incarnation")
                for listener in self._listeners:  # before `reachable`: the replay goes out before newer events
                    try:
                        await listener(self.epoch)
                    except Exception:
                        log.exception("epoch listener failed")
            if not self.reachable:
                log.warning("broker reachable again (incarnation %s)", incarnation)
            self.reachable = True
            self.confirmed_since = began

    async def publish(self, topic: str, key: str, value: bytes, timeout_s: float = 10.0):
        """Publish one message and wait for the broker's acknowledgement."""
        assert self.producer is not None, "bus not started"
        return await asyncio.wait_for(self.producer.send_and_wait(topic, value, key=key.encode()), timeout_s)

    async def stop(self) -> None:
        if self._supervisor:
            self._supervisor.cancel()
        await asyncio.gather(*self._closing, return_exceptions=True)
        for client in (self.producer, self._admin):
            if client is not None:
                await stop_client(client, 5)
        if self._marker is not None:
            await self._marker.stop()


def _abandon_now(producer: AIOKafkaProducer) -> None:
    """Fail every batch `producer` holds and stop its sender, without delivering anything.

    aiokafka's `stop()` flushes pending batches first, which after a broker
    restart would deliver stale events into the new log ahead of the outbox's
    ordered replay. There is no public call for this, so we go through
    aiokafka's internals (0.12–0.14): `fail_all` also fails the batches in flight,
    and the sender task is cancelled before their retry backoff could put them
    back on the wire.
    """
    producer._closed = True
    producer._message_accumulator.fail_all(KafkaConnectionError("abandoned: the broker may be a new incarnation"))
    task = producer._sender.sender_task if producer._sender is not None else None
    if task is not None and not task.done():
        task.cancel()


async def _close_abandoned(producer: AIOKafkaProducer) -> None:
    """Let an abandoned producer's sender end and close its connections; never raises but a cancellation."""
    steps = [producer._sender.close] if producer._sender is not None else []
    # whatever the sender did: a client left open keeps its connections and metadata loop for ever
    steps.append(producer.client.close)
    for step in steps:
        try:
            # the sender may end with the batches fail_all took from it (a KeyError in aiokafka's reenqueue)
            await asyncio.wait_for(step(), 2)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
        except Exception:  # noqa: BLE001 - it is being dropped because it is broken
            log.debug("abandoned producer did not close cleanly", exc_info=True)


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
