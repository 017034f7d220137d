"""One Kafka producer and one result observer per Locust process, living on the asyncio bridge's loop.

The observer consumes the adapter's result topics from their end (no
consumer group: every process sees every result) and completes waiting calls
by correlation id, so a user can say "publish X, then wait for Y". Each
message is read by the adapter's ``read_result``, which must keep up with
the whole bus. Other events can be handed to gevent-side listeners (the
bridge's simulated nodes answer re-introspection requests this way).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from harness.adapter import IncarnationSource, Result, SystemAdapter
from harness.aio import AsyncBridge, Call, bridge

log = logging.getLogger("bridgestorm.observer")
REPLACE_READER_AFTER_S = 3.0  # a restarted broker has its incarnation id within a second: a reader silent longer is stuck
# a reader that lived through a broker's death can also go on reading the old id: none is trusted for longer
# than this, so the observer sees a new incarnation within seconds, never only at the end of the run
READER_MAX_AGE_S = 5.0


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


async def stop_quietly(client: Any, timeout_s: float) -> None:
    """Stop a Kafka client that may be broken, and never let its stop end the observer's loop.

    Why: aiokafka 0.14's `Fetcher.close` awaits the fetch tasks it has just
    cancelled, so a consumer that watched the broker die can raise that
    CancelledError out of `stop()`; it ended the observer, and every result
    after it timed out. Only a cancellation of the caller itself goes on.
    (`nodes.bus.stop_client` is its twin: the system under test shares no code with the toolkit.)
    """
    try:
        await asyncio.wait_for(client.stop(), timeout_s)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.debug("Kafka client stop raised aiokafka's own CancelledError")
    except Exception:  # noqa: BLE001 - it is being stopped because it is done or broken
        log.debug("Kafka client did not stop cleanly", exc_info=True)


class Observer:
    """Consumes result topics; completes ``expect()`` calls by correlation id and event type."""

    def __init__(self, b: AsyncBridge, bootstrap: str, topics: Iterable[str],
                 read_result: Callable[[bytes | None], Result | None],
                 incarnation: Callable[[], IncarnationSource | None] = lambda: None) -> None:
        self.bridge = b
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.read_result = read_result
        self.incarnation = incarnation
        self.waiting: dict[str, tuple[Call, frozenset[str], frozenset[str]]] = {}
        self.listeners: dict[str, list[Callable[[Any], None]]] = {}
        self.seen = 0
        self._task: asyncio.Task | None = None
        self._ready: asyncio.Future | None = None
        self._incarnation_reader: IncarnationSource | None = None
        self._incarnation: str | None = None
        self._checked_at = 0.0
        self._unknown_since: float | None = None  # since when the incarnation reader has read nothing
        self._reader_since = 0.0
        self._assigned: set[str] = set()  # the result topics of the first open: every reopen waits for them all

    def expect(self, correlation_id: str, types: Iterable[str], fail_types: Iterable[str] = ()) -> Call:
        """Register before sending; ``.wait(timeout)`` returns the matching result's body.

        The returned call's ``done_at`` is the loop-thread time the event was read.
        An event of ``fail_types`` completes it with an error.
        """
        call = Call(self.bridge)
        self.waiting[correlation_id] = (call, frozenset(types), frozenset(fail_types))
        return call

    def forget(self, correlation_id: str) -> None:
        self.waiting.pop(correlation_id, None)

    def on(self, event_type: str, fn: Callable[[Any], None]) -> None:
        """Call ``fn(body)`` in gevent for every event of this type (e.g. re-introspection requests)."""
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
                               "is the system under test running against this broker?")
        # a broker that came back empty gets its topics again one by one: a consumer assigned before the
        # last of them exists would never read it (an assignment is not refreshed), and every result on it
        # would time out for the rest of the run
        missing = self._assigned - {tp.topic for tp in tps}
        if missing:
            await c.stop()
            raise TopicsNotBack(f"result topics {sorted(missing)} not on the broker yet")
        self._assigned = self._assigned or {tp.topic for tp in tps}
        c.assign(tps)
        if from_beginning:
            log.info("observer: the broker is a new incarnation; reading its %d result partitions from the start",
                     len(tps))
            await c.seek_to_beginning(*tps)
        else:
            await c.seek_to_end(*tps)
        for tp in tps:  # resolve positions now: nothing sent after start() is missed
            await c.position(tp)
        return c

    async def _broker_restarted(self) -> bool:
        """True when the broker is a new incarnation (a memory broker restarted: new, empty log).

        Its old positions mean nothing there, and aiokafka may never recover from them by
        itself; the caller reopens at the beginning of the new log. Only when the adapter
        gives an incarnation reader (a durable broker never comes back empty).
        """
        now = time.monotonic()
        if now - self._checked_at < 0.5:
            return False
        self._checked_at = now
        try:
            if self._incarnation_reader is not None and now - self._reader_since > READER_MAX_AGE_S:
                await self._drop_incarnation_reader()  # whatever state a broker's death left it in
            if self._incarnation_reader is None:
                reader = self.incarnation()
                if reader is None:
                    return False
                self._incarnation_reader, self._reader_since = reader, now  # dropped below if it cannot start
                await reader.start(wait_s=5)
            incarnation = await asyncio.wait_for(self._incarnation_reader.read(), 3)
        except Exception:  # noqa: BLE001 - broker away: ask again later, with a new reader
            # a reader's consumer that lived through the broker's death may never read the new log: missing
            # the new incarnation would leave this observer on its old positions for the rest of the run
            await self._drop_incarnation_reader()
            return False
        if incarnation is None:  # nobody wrote one yet, or a reader that cannot see the new log: replace it
            self._unknown_since = self._unknown_since or now
            if now - self._unknown_since > REPLACE_READER_AFTER_S:
                self._unknown_since = None
                await self._drop_incarnation_reader()
            return False
        self._unknown_since = None
        if incarnation == self._incarnation:
            return False
        known, self._incarnation = self._incarnation, incarnation
        return known is not None

    async def _drop_incarnation_reader(self) -> None:
        reader, self._incarnation_reader = self._incarnation_reader, None
        if reader is not None:
            await stop_quietly(reader, 2)

    async def _run(self) -> None:
        consumer: AIOKafkaConsumer | None = None
        from_beginning = False  # the broker restarted: read its new log from the start, however many tries it takes
        while True:
            try:
                if consumer is None:
                    consumer = await self._open(from_beginning)
                    from_beginning = False
                    if self._ready is not None and not self._ready.done():
                        self._ready.set_result(None)
                if await self._broker_restarted():
                    from_beginning = True
                    consumer, old = None, consumer
                    await stop_quietly(old, 2)
                    continue
                batch = await consumer.getmany(timeout_ms=100, max_records=5000)
            except asyncio.CancelledError:
                if consumer is not None:
                    await stop_quietly(consumer, 2)
                raise
            except Exception as exc:  # noqa: BLE001 - rebuild rather than trust a broken client
                if self._ready is not None and not self._ready.done() and not isinstance(exc, KafkaError):
                    self._ready.set_exception(exc)
                    return
                log.info("observer: %r; opening again", exc)
                if consumer is not None:
                    await stop_quietly(consumer, 2)
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
            result = self.read_result(raw)
        except Exception:  # noqa: BLE001 - not ours to judge; the system dead-letters it
            return
        if result is None:
            return
        entry = self.waiting.get(result.correlation_id)
        if entry is not None:
            call, types, fail_types = entry
            if result.event_type in types:
                self.waiting.pop(result.correlation_id, None)
                self.bridge.call_in_gevent(call._finish, result.body, None, now)
            elif result.event_type in fail_types:
                self.waiting.pop(result.correlation_id, None)
                failed = EventFailed(f"{result.event_type}: {_short(result.body)}")
                self.bridge.call_in_gevent(call._finish, None, failed, now)
        for fn in self.listeners.get(result.event_type, ()):
            self.bridge.call_in_gevent(fn, result.body)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except BaseException:  # noqa: BLE001
                pass
            self._task = None
        await self._drop_incarnation_reader()


def _short(body: Any) -> str:
    payload = body.get("payload", body) if isinstance(body, dict) else body
    return str(payload)[:300]


class TopicsNotBack(Exception):
    """Some result topics the observer read before are not on the broker (yet): it tries again."""


class EventFailed(Exception):
    """The awaited flow ended in a failure event (e.g. WORKFLOW_FAILED)."""


class Bus:
    """The process's producer and observer (on the adapter's result topics), on the process's bridge."""

    def __init__(self, bootstrap: str, adapter: SystemAdapter) -> None:
        self.bridge = bridge()
        self.bootstrap = bootstrap
        self.producer = Producer(bootstrap)
        self.observer = Observer(self.bridge, bootstrap, adapter.result_topics, adapter.read_result,
                                 lambda: adapter.broker_incarnation(bootstrap))
        self.bridge.run(self.observer.start(), timeout=60)

    def close(self) -> None:
        self.bridge.run(self.observer.stop(), timeout=10)
        self.bridge.run(self.producer.stop(), timeout=10)
