"""One Kafka producer and one result observer per Locust process, living on the bridge's loop.

The observer consumes the result topics from their end (no consumer group:
every process sees every result) and completes waiting calls by correlation
id, so a user can say "publish X, then wait for Y". Messages are read with
orjson, not pydantic: the observer must keep up with the whole bus. A
``REGISTRY_REQUEST_INTROSPECTION`` is handed to gevent-side listeners (the
simulated nodes answer it).
"""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import gevent.lock
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from locustfiles.support.aio import AsyncBridge, Call, bridge
from nodes.bus import IncarnationReader
from nodes.config import Topics


async def _start_with_retry(client: Any, what: str, attempts: int = 20) -> None:
    """aiokafka's start() tries each bootstrap host once: retry with backoff (broker restarting)."""
    delay = 0.1
    for i in range(attempts):
        try:
            await client.start()
            return
        except KafkaError:
            if i == attempts - 1:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


class Producer:
    """The process's producer; ``send`` is a coroutine that returns when the broker acknowledged."""

    def __init__(self, bootstrap: str, **config: Any) -> None:
        self.bootstrap = bootstrap
        self.config = {"acks": "all", "linger_ms": 1, "max_request_size": 4 * 1024 * 1024} | config
        self._producer: AIOKafkaProducer | None = None
        self._starting: asyncio.Task | None = None

    async def _ensure(self) -> AIOKafkaProducer:
        if self._producer is None:
            if self._starting is None:
                self._starting = asyncio.ensure_future(self._start())
            await asyncio.shield(self._starting)
        return self._producer  # type: ignore[return-value]

    async def _start(self) -> None:
        p = AIOKafkaProducer(bootstrap_servers=self.bootstrap, **self.config)
        await _start_with_retry(p, "producer")
        self._producer = p

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> Any:
        p = self._producer or await self._ensure()
        fut = await p.send(topic, value, key=key)
        return await fut

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


class Observer:
    """Consumes result topics; completes ``expect()`` calls by correlation id and event type."""

    def __init__(self, b: AsyncBridge, bootstrap: str, topics: Iterable[str]) -> None:
        self.bridge = b
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.waiting: dict[str, tuple[Call, frozenset[str], frozenset[str]]] = {}
        self.listeners: dict[str, list[Callable[[dict[str, Any]], None]]] = {}
        self.seen = 0
        self._task: asyncio.Task | None = None
        self._ready: asyncio.Future | None = None
        self._incarnation_reader: IncarnationReader | None = None
        self._incarnation: str | None = None
        self._checked_at = 0.0

    def expect(self, correlation_id: str, types: Iterable[str], fail_types: Iterable[str] = ()) -> Call:
        """Register before sending; ``.wait(timeout)`` returns the matching envelope (a dict).

        The returned call's ``done_at`` is the loop-thread time the event was read.
        An event of ``fail_types`` completes it with an error.
        """
        call = Call(self.bridge)
        self.waiting[correlation_id] = (call, frozenset(types), frozenset(fail_types))
        return call

    def forget(self, correlation_id: str) -> None:
        self.waiting.pop(correlation_id, None)

    def on(self, event_type: str, fn: Callable[[dict[str, Any]], None]) -> None:
        """Call ``fn(envelope)`` in gevent for every event of this type (e.g. re-introspection requests)."""
        self.listeners.setdefault(event_type, []).append(fn)

    async def start(self) -> None:
        if self._task is None:
            self._ready = asyncio.get_running_loop().create_future()
            self._task = asyncio.ensure_future(self._run())
        await asyncio.shield(self._ready)

    async def _open(self, from_beginning: bool = False) -> AIOKafkaConsumer:
        """A consumer at the end of the result topics, or at their beginning after a broker restart."""
        c = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest", max_partition_fetch_bytes=4 * 1024 * 1024,
                             fetch_max_wait_ms=20)
        await _start_with_retry(c, "observer")
        tps = [TopicPartition(t, p) for t in self.topics for p in (c.partitions_for_topic(t) or [])]
        if not tps:
            await c.stop()
            raise RuntimeError(f"none of the result topics {self.topics} exists on {self.bootstrap}: "
                               "are the bridge's nodes running against this broker?")
        c.assign(tps)
        if from_beginning:
            await c.seek_to_beginning(*tps)
        else:
            await c.seek_to_end(*tps)
        for tp in tps:  # resolve positions now: nothing sent after start() is missed
            await c.position(tp)
        return c

    async def _broker_restarted(self) -> bool:
        """True when the broker is a new incarnation (a memory broker restarted: new, empty log).

        Its old positions mean nothing there, and aiokafka may never recover from them by
        itself; the caller reopens at the beginning of the new log (see nodes.bus).
        """
        now = time.monotonic()
        if now - self._checked_at < 0.5:
            return False
        self._checked_at = now
        try:
            if self._incarnation_reader is None:
                self._incarnation_reader = IncarnationReader(self.bootstrap, "bridgestorm-observer")
                await self._incarnation_reader.start(wait_s=5)
            incarnation = await asyncio.wait_for(self._incarnation_reader.read(), 3)
        except Exception:  # noqa: BLE001 - broker away: ask again later
            return False
        if incarnation is None or incarnation == self._incarnation:
            return False
        known, self._incarnation = self._incarnation, incarnation
        return known is not None

    async def _run(self) -> None:
        consumer: AIOKafkaConsumer | None = None
        while True:
            try:
                if consumer is None:
                    consumer = await self._open()
                    if self._ready is not None and not self._ready.done():
                        self._ready.set_result(None)
                if await self._broker_restarted():
                    await consumer.stop()
                    consumer = None
                    consumer = await self._open(from_beginning=True)
                batch = await consumer.getmany(timeout_ms=100, max_records=5000)
            except asyncio.CancelledError:
                if consumer is not None:
                    await consumer.stop()
                raise
            except Exception as exc:  # noqa: BLE001 - rebuild rather than trust a broken client
                if self._ready is not None and not self._ready.done() and not isinstance(exc, KafkaError):
                    self._ready.set_exception(exc)
                    return
                if consumer is not None:
                    try:
                        await consumer.stop()
                    except Exception:  # noqa: BLE001
                        pass
                consumer = None
                await asyncio.sleep(0.5)
                continue
            now = time.perf_counter()
            for records in batch.values():
                for r in records:
                    self._handle(r.value, now)

    def _handle(self, raw: bytes | None, now: float) -> None:
        self.seen += 1
        try:
            env = orjson.loads(raw) if raw else None
            corr = env["correlation_id"]
            etype = env["event_type"]
        except Exception:  # noqa: BLE001 - not ours to judge; the nodes dead-letter it
            return
        entry = self.waiting.get(corr)
        if entry is not None:
            call, types, fail_types = entry
            if etype in types:
                self.waiting.pop(corr, None)
                self.bridge.call_in_gevent(call._finish, env, None, now)
            elif etype in fail_types:
                self.waiting.pop(corr, None)
                self.bridge.call_in_gevent(call._finish, None, EventFailed(f"{etype}: {env.get('payload')}"), now)
        for fn in self.listeners.get(etype, ()):
            self.bridge.call_in_gevent(fn, env)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except BaseException:  # noqa: BLE001
                pass
            self._task = None
        if self._incarnation_reader is not None:
            try:
                await self._incarnation_reader.stop()
            except Exception:  # noqa: BLE001
                pass
            self._incarnation_reader = None


class EventFailed(Exception):
    """The awaited flow ended in a failure event (e.g. WORKFLOW_FAILED)."""


class Bus:
    """The process's producer and observer on the process's bridge."""

    def __init__(self, bootstrap: str, topics: Topics | None = None) -> None:
        self.topics = topics or Topics()
        self.bridge = bridge()
        self.bootstrap = bootstrap
        self.producer = Producer(bootstrap)
        self.observer = Observer(self.bridge, bootstrap, [
            self.topics.registered, self.topics.workflow, self.topics.stamped, self.topics.registry_request])
        self.bridge.run(self.observer.start(), timeout=60)

    def close(self) -> None:
        self.bridge.run(self.observer.stop(), timeout=10)
        self.bridge.run(self.producer.stop(), timeout=10)


_buses: dict[tuple[int, str], Bus] = {}
_create = gevent.lock.Semaphore()


def bus(bootstrap: str) -> Bus:
    """This process's bus for ``bootstrap``; created (observer started) on first use."""
    key = (os.getpid(), bootstrap)
    b = _buses.get(key)
    if b is None:
        with _create:  # many users start at once; one bus per process
            b = _buses.get(key)
            if b is None:
                b = _buses[key] = Bus(bootstrap)
    return b


def close_all() -> None:
    for key in [k for k in _buses if k[0] == os.getpid()]:
        try:
            _buses.pop(key).close()
        except Exception:  # noqa: BLE001 - closing at exit must not hide the run's outcome
            pass
