"""Database adapter node: every event on every topic into `event_logs`, once.

Batches are inserted with one statement; `event_id` is the primary key, so a
redelivered or replayed event is a counted duplicate, never a second row.
Lag — insert time minus the envelope's own timestamp — is kept for the last
events and exposed on /stats (and each row keeps both times for analysis).
"""
from __future__ import annotations

import time
from collections import deque

import asyncpg
import orjson

from nodes.config import GROUP_DB_ADAPTER
from nodes.consumer import Received
from nodes.service import Node

_INSERT = """
INSERT INTO event_logs (event_id, event_type, topic, partition, "offset", key, namespace, correlation_id,
                        source_node_id, event_time, payload, metadata)
SELECT event_id, event_type, topic, partition, "offset", key, namespace, correlation_id, source_node_id,
       event_time, payload::jsonb, metadata::jsonb
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::bigint[], $6::text[], $7::text[],
            $8::uuid[], $9::text[], $10::timestamptz[], $11::text[], $12::text[])
  AS t(event_id, event_type, topic, partition, "offset", key, namespace, correlation_id, source_node_id,
       event_time, payload, metadata)
ON CONFLICT (event_id) DO NOTHING
"""

LAG_WINDOW = 20_000


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


class DatabaseAdapterNode(Node):
    kind = "database-adapter"

    def __init__(self, settings):
        super().__init__(settings)
        self.stored = 0
        self.duplicates = 0
        self.lags_ms: deque[float] = deque(maxlen=LAG_WINDOW)

    def capabilities(self) -> dict:
        return {"consumes": self.settings.topics.envelope_topics(), "stores": ["event_logs", "dead_letters"]}

    async def on_start(self) -> None:
        self.add_consumer(
            GROUP_DB_ADAPTER, self.settings.topics.envelope_topics(), self.store, max_records=5000, timeout_ms=10
        )

    async def store(self, conn: asyncpg.Connection, records: list[Received]) -> None:
        envs = [r.envelope for r in records]
        # payload and metadata go as JSON text (orjson) and are cast in SQL
        await conn.execute(
            _INSERT,
            [e.event_id for e in envs],
            [e.event_type.value for e in envs],
            [r.topic for r in records],
            [r.partition for r in records],
            [r.offset for r in records],
            [r.key for r in records],
            [e.namespace for e in envs],
            [e.correlation_id for e in envs],
            [e.source_node_id for e in envs],
            [e.timestamp for e in envs],
            [orjson.dumps(e.payload).decode() for e in envs],
            [orjson.dumps(e.metadata).decode() for e in envs],
        )
        now = time.time()
        self.lags_ms.extend((now - e.ts) * 1000 for e in envs)
        self.stored += len(records)

    def stats(self) -> dict:
        lags = list(self.lags_ms)
        consumer = self.consumers[0].stats if self.consumers else None
        return {
            "events_stored": self.stored,
            "duplicates_seen": consumer.duplicates if consumer else 0,
            "dead_lettered": consumer.dead_lettered if consumer else 0,
            "lag_ms": {
                "window": len(lags),
                "p50": _percentile(lags, 0.50),
                "p95": _percentile(lags, 0.95),
                "p99": _percentile(lags, 0.99),
                "max": max(lags) if lags else None,
            },
        }
