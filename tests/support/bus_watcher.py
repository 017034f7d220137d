"""BusWatcher: read topics from their current end and wait for envelopes (tests, the demo, benchmarks).

Anything that drives the bridge from outside and then waits for a result on
the bus needs the same three things: start reading *before* sending (so the
result cannot be missed), keep what was seen, and wait for a match with a
timeout. The Locust observer (harness/kafka.py) does the same
from gevent and also survives a broker restart; this one is plain asyncio.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer

from nodes.bus import assign_at_end
from nodes.envelope import EventType, InvalidEnvelope, OnexEnvelopeV1, parse_envelope


class BusWatcher:
    """Every valid envelope published to ``topics`` after `start()`, with its arrival time."""

    def __init__(self, bootstrap: str, topics: list[str], fetch_max_wait_ms: int = 10):
        self.bootstrap = bootstrap
        self.topics = topics
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.seen: list[tuple[str, OnexEnvelopeV1]] = []
        self.on_envelope: Callable[[OnexEnvelopeV1, float], None] | None = None  # (envelope, perf_counter)
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None
        self._changed = asyncio.Event()

    async def start(self) -> None:
        """Positions are fixed at the topics' current end before this returns."""
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                          max_partition_fetch_bytes=4 * 1024 * 1024,
                                          fetch_max_wait_ms=self.fetch_max_wait_ms)
        await self._consumer.start()
        await assign_at_end(self._consumer, self.topics)
        self._task = asyncio.create_task(self._run(), name="bus-watcher")

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=50)
            now = time.perf_counter()
            for records in batch.values():
                for r in records:
                    try:
                        env = parse_envelope(r.value)
                    except InvalidEnvelope:
                        continue
                    self.seen.append((r.topic, env))
                    if self.on_envelope is not None:
                        self.on_envelope(env, now)
            if batch:
                self._changed.set()

    async def wait_for(self, predicate: Callable[[OnexEnvelopeV1], bool], count: int = 1, timeout: float = 10.0
                       ) -> list[OnexEnvelopeV1]:
        """The first ``count`` envelopes matching ``predicate``; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            found = [env for _, env in self.seen if predicate(env)]
            if len(found) >= count:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"only {len(found)} of {count} expected events seen within {timeout}s")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def wait(self, correlation_id: uuid.UUID, event_type: EventType, timeout: float = 10.0) -> OnexEnvelopeV1:
        """The first envelope of ``event_type`` with this correlation id."""
        found = await self.wait_for(lambda e: e.correlation_id == correlation_id and e.event_type == event_type,
                                    timeout=timeout)
        return found[0]

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer:
            await self._consumer.stop()
