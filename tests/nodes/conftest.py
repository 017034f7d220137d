"""Fixtures for talking to the running stack: HTTP, PostgreSQL and the bus, all real."""
from __future__ import annotations

import asyncio
import time
from typing import Callable

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from nodes.config import Topics
from support.bus_watcher import BusWatcher


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
