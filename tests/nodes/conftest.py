"""Fixtures for talking to the running stack: HTTP, PostgreSQL and the bus, all real."""
from __future__ import annotations

import asyncio
import time
from typing import Callable

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from nodes.bus import assign_at_end

from nodes.config import Topics
from nodes.envelope import OnexEnvelopeV1, parse_envelope, InvalidEnvelope


class BusWatcher:
    """Reads topics from their current end and keeps every envelope seen, for tests to wait on."""

    def __init__(self, bootstrap: str, topics: list[str]):
        self.bootstrap = bootstrap
        self.topics = topics
        self.seen: list[tuple[str, OnexEnvelopeV1]] = []
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None
        self._changed = asyncio.Event()

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                          max_partition_fetch_bytes=4 * 1024 * 1024)
        await self._consumer.start()
        await assign_at_end(self._consumer, self.topics)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=50)
            for records in batch.values():
                for r in records:
                    try:
                        self.seen.append((r.topic, parse_envelope(r.value)))
                    except InvalidEnvelope:
                        pass
            if batch:
                self._changed.set()

    async def wait_for(self, predicate: Callable[[OnexEnvelopeV1], bool], count: int = 1, timeout: float = 10.0
                       ) -> list[OnexEnvelopeV1]:
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

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        if self._consumer:
            await self._consumer.stop()


@pytest.fixture(scope="session")
def topics() -> Topics:
    return Topics()


@pytest.fixture(scope="session")
def urls(stack) -> dict[str, str]:
    return stack.env


@pytest_asyncio.fixture(scope="session")
async def db(stack):
    pool = await asyncpg.create_pool(stack.env["DATABASE_URL"], min_size=1, max_size=5)
    yield pool
    await pool.close()


@pytest_asyncio.fixture(scope="session")
async def http(stack):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest_asyncio.fixture(scope="session")
async def producer(stack):
    p = AIOKafkaProducer(bootstrap_servers=stack.env["KAFKA_BOOTSTRAP_SERVERS"], acks="all",
                         max_request_size=4 * 1024 * 1024)
    await p.start()
    yield p
    await p.stop()


@pytest_asyncio.fixture
async def watch(stack, topics):
    """A BusWatcher on every topic, started now."""
    watcher = BusWatcher(stack.env["KAFKA_BOOTSTRAP_SERVERS"], topics.all())
    await watcher.start()
    yield watcher
    await watcher.stop()


async def _wait_db(pool: asyncpg.Pool, query: str, *args, expect: Callable[[object], bool], timeout: float = 10.0):
    """Poll a query until its value satisfies `expect`; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await pool.fetchval(query, *args)
        if expect(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{query} {args} gave {value!r} after {timeout}s")
        await asyncio.sleep(0.05)


@pytest.fixture
def wait_db(db):
    """`await wait_db(query, *args, expect=..., timeout=...)`: poll the stack's database until true."""

    async def wait(query: str, *args, expect: Callable[[object], bool], timeout: float = 10.0):
        return await _wait_db(db, query, *args, expect=expect, timeout=timeout)

    return wait
