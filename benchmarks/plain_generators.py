"""The plain side of benchmarks/generator_cost.py: fixed-rate HTTP GETs (aiohttp) or Kafka publishes (aiokafka).

Nothing of bridgestorm's is imported (only the benchmark topic's name), so
the process's CPU is what a plain asyncio client spends on the same work.
Prints ``RESULT {"completions": [...], "errors": n}``.

    .venv/bin/python benchmarks/plain_generators.py http|kafka TARGET RATE SECONDS USERS
"""
from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator

from kafka_publish import TOPIC


def ticks(rate: float, seconds: float) -> Iterator[float]:
    """Intended starts (time.time()) of a fixed-rate run of ``seconds``."""
    start = time.time()
    n = 0
    while n / rate < seconds:
        yield start + n / rate
        n += 1


async def offer(rate: float, seconds: float, one) -> tuple[list[float], int]:
    """Start ``one()`` at every arrival, never waiting for answers (the open model); (completion times, errors)."""
    done: list[float] = []
    errors = 0
    running: set[asyncio.Task] = set()

    async def timed() -> None:
        nonlocal errors
        try:
            await one()
        except Exception:  # noqa: BLE001 - a failed request still completed
            errors += 1
        done.append(time.time())

    for intended in ticks(rate, seconds):
        await asyncio.sleep(max(0.0, intended - time.time()))
        task = asyncio.ensure_future(timed())
        running.add(task)
        task.add_done_callback(running.discard)
    await asyncio.gather(*running)
    return done, errors


def plain_http(url: str, rate: float, seconds: float, users: int) -> dict:
    """Plain aiohttp: one GET per arrival, at most ``users`` connections (as many as Locust has users)."""
    import aiohttp

    async def run() -> tuple[list[float], int]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=users)) as session:
            async def one() -> None:
                async with session.get(url) as resp:
                    await resp.read()
                    resp.raise_for_status()

            return await offer(rate, seconds, one)

    done, errors = asyncio.run(run())
    return {"completions": done, "errors": errors}


def plain_kafka(bootstrap: str, rate: float, seconds: float, users: int) -> dict:
    """Plain aiokafka: one ``send_and_wait`` per arrival, acks=all as the harness's producer, an event of the same size."""
    import uuid

    import orjson
    from aiokafka import AIOKafkaProducer

    async def run() -> tuple[list[float], int]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=1)
        await producer.start()
        try:
            async def one() -> None:
                value = orjson.dumps({"event_id": str(uuid.uuid4()), "correlation_id": str(uuid.uuid4()),
                                      "timestamp": time.time(), "payload": {"pad": "x" * 220}})
                await producer.send_and_wait(TOPIC, value, key=b"plain")

            return await offer(rate, seconds, one)
        finally:
            await producer.stop()

    done, errors = asyncio.run(run())
    return {"completions": done, "errors": errors}


def main(argv: list[str]) -> None:
    kind, target, rate, seconds, users = argv[0], argv[1], float(argv[2]), float(argv[3]), int(argv[4])
    out = (plain_http if kind == "http" else plain_kafka)(target, rate, seconds, users)
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
