"""The order desk: reads orders from one topic, stores them in SQLite, confirms each on another topic.

    python -m support.order_desk.service --bootstrap 127.0.0.1:9092 --store /tmp/desk.sqlite3

An order is a JSON object ``{"order_id", "namespace", "correlation_id",
"amount"}`` on ``orders.v1``; the desk stores it (a row per order, with how
many times it was stored) and publishes ``{"type": "order.confirmed",
"order_id", "correlation_id"}`` on ``orders-confirmed.v1``. A message that is
not such an object is skipped. ``--drop-every N`` loses every Nth order on
purpose (neither stored nor confirmed): the loss a test must see.

It reads every partition from the end it finds at start (no consumer group)
and prints ``ready`` once its positions are fixed and its topics exist.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sqlite3
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

ORDERS = "orders.v1"
CONFIRMED = "orders-confirmed.v1"
SCHEMA = "CREATE TABLE IF NOT EXISTS orders (order_id TEXT PRIMARY KEY, namespace TEXT, amount REAL, times INTEGER)"


def open_store(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(SCHEMA)
    return db


async def create_topics(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for topic in (ORDERS, CONFIRMED):
            try:
                await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


async def serve(bootstrap: str, store: str, drop_every: int) -> None:
    await create_topics(bootstrap)
    db = open_store(store)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    try:
        tps = [TopicPartition(ORDERS, p) for p in sorted(consumer.partitions_for_topic(ORDERS) or [])]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        print("ready", flush=True)
        seen = 0
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            for records in batch.values():
                for record in records:
                    order = parse(record.value)
                    if order is None:
                        continue
                    seen += 1
                    if drop_every and seen % drop_every == 0:
                        continue
                    db.execute("INSERT INTO orders VALUES (?, ?, ?, 1) ON CONFLICT(order_id) DO UPDATE "
                               "SET times = times + 1", (order["order_id"], order["namespace"], order["amount"]))
                    db.commit()
                    answer = {"type": "order.confirmed", "order_id": order["order_id"],
                              "correlation_id": order["correlation_id"]}
                    await producer.send_and_wait(CONFIRMED, json.dumps(answer).encode(), key=record.key)
    finally:
        await consumer.stop()
        await producer.stop()
        db.close()


def parse(raw: bytes | None) -> dict | None:
    """An order, or None for anything else."""
    try:
        order = json.loads(raw) if raw else None
    except ValueError:
        return None
    if not isinstance(order, dict) or not all(isinstance(order.get(k), str)
                                              for k in ("order_id", "namespace", "correlation_id")):
        return None
    return order


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m support.order_desk.service", description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--store", required=True, help="the SQLite file")
    ap.add_argument("--drop-every", type=int, default=0, help="lose every Nth order on purpose (0: none)")
    args = ap.parse_args()
    asyncio.run(serve(args.bootstrap, args.store, args.drop_every))
    return 0


if __name__ == "__main__":
    sys.exit(main())
