"""Kafka access on aiokafka: the producer, explicit topic creation, and broker supervision.

Why a supervisor: Tansu 0.6 does not auto-create topics, and a memory broker
that restarts comes back with no topics, offsets or groups. aiokafka clients
also do not always recover on their own after the whole cluster restarts. So
each process polls the broker; whenever it was unreachable and answers again,
or topics have gone missing, the bus ensures its topics again and bumps its
`epoch`. Consumers rebuild themselves on a new epoch and the outbox replays
what consumers had not yet confirmed.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

log = logging.getLogger(__name__)

# Largest message a node publishes or forwards (dead letters of up to a few MiB).
MAX_MESSAGE_BYTES = 4 * 1024 * 1024

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


class EventBus:
    """One process's connection to the bus."""

    def __init__(
        self,
        bootstrap_servers: str,
        topics: list[str],
        *,
        partitions: int = 3,
        client_id: str = "bridgestorm",
        supervise_interval_s: float = 0.5,
    ):
        self.bootstrap_servers = bootstrap_servers
        self.topics = list(topics)
        self.partitions = partitions
        self.client_id = client_id
        self.supervise_interval_s = supervise_interval_s
        self.epoch = 0
        self.reachable = False
        self.producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
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
        self.reachable = True
        self._supervisor = asyncio.create_task(self._supervise(), name="bus-supervisor")

    def on_new_epoch(self, listener: EpochListener) -> None:
        """Call `listener(epoch)` after the broker came back or lost its topics."""
        self._listeners.append(listener)

    async def ensure_topics(self) -> list[str]:
        """Create the topics that are missing; returns the ones created."""
        assert self._admin is not None
        existing = set(await asyncio.wait_for(self._admin.list_topics(), 5))
        missing = [t for t in self.topics if t not in existing]
        if missing:
            try:
                await self._admin.create_topics(
                    [NewTopic(t, num_partitions=self.partitions, replication_factor=1) for t in missing]
                )
            except TopicAlreadyExistsError:
                pass  # another process won the race
            log.info("created topics %s", missing)
        return missing

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(self.supervise_interval_s)
            try:
                created = await self.ensure_topics()
            except (KafkaError, OSError, asyncio.TimeoutError) as exc:
                if self.reachable:
                    log.warning("broker unreachable: %r", exc)
                self.reachable = False
                continue
            except Exception:  # keep supervising whatever happens
                log.exception("broker supervision failed")
                continue
            came_back = not self.reachable
            self.reachable = True
            if came_back or created:
                self.epoch += 1
                log.warning("broker epoch %d (came back: %s, topics recreated: %s)", self.epoch, came_back, created)
                for listener in self._listeners:
                    try:
                        await listener(self.epoch)
                    except Exception:
                        log.exception("epoch listener failed")

    async def rebuild_producer(self) -> None:
        """Replace a producer that stopped making progress."""
        old, self.producer = self.producer, self._new_producer()
        if old is not None:
            try:
                await asyncio.wait_for(old.stop(), 5)
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
        for client in (self.producer, self._admin):
            if client is None:
                continue
            try:
                await asyncio.wait_for(client.stop() if client is self.producer else client.close(), 5)
            except Exception:
                log.debug("client did not stop cleanly", exc_info=True)
