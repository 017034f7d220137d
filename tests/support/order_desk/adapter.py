"""The order desk's adapter: what the harness needs to load it, observe it and read its truth.

Everything here is the order desk's own contract (service.py): its topics,
its JSON messages, its SQLite store. Nothing of bridgestorm's nodes.
"""
from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Collection, Mapping
from typing import Any

from harness.adapter import Message, Result, SystemAdapter

ORDERS = "orders.v1"
CONFIRMED = "orders-confirmed.v1"


class OrderDeskAdapter(SystemAdapter):
    name = "order-desk"
    env_keys = ("ORDER_DESK_STORE",)
    result_topics = (CONFIRMED,)

    def event(self, event_type: str, payload: Mapping[str, Any], *, topic: str, key: str, namespace: str,
              source: str, correlation_id: str | None = None, event_id: str | None = None,
              metadata: Mapping[str, Any] | None = None) -> Message:
        corr = correlation_id or str(uuid.uuid4())
        body = {**payload, "type": event_type, "namespace": namespace, "correlation_id": corr}
        return Message(topic=topic, key=key, value=json.dumps(body).encode(), event_id=event_id or key,
                       correlation_id=corr)

    def read_result(self, raw: bytes | None) -> Result | None:
        answer = json.loads(raw) if raw else None
        if not isinstance(answer, dict) or "correlation_id" not in answer:
            return None
        return Result(correlation_id=answer["correlation_id"], event_type=answer.get("type", ""), body=answer)

    def truth_kinds(self) -> set[str]:
        return {"order"}

    async def read_truth(self, env: Mapping[str, str], namespace: str, kinds: Collection[str] | None = None,
                         sent: Mapping[str, Collection[str]] | None = None) -> list[dict[str, Any]]:
        """Every order the desk stored for this namespace or the run sent, and how many times it stored it."""
        ids = list((sent or {}).get("order", ()))
        db = sqlite3.connect(env["ORDER_DESK_STORE"])
        try:
            marks = ",".join("?" * len(ids))
            rows = db.execute(f"SELECT order_id, namespace, times FROM orders WHERE namespace = ? "
                              f"OR order_id IN ({marks or 'NULL'})", (namespace, *ids))
            return [{"kind": "order", "item_id": order_id, "namespace": ns, "count": times, "source": "orders"}
                    for order_id, ns, times in rows]
        finally:
            db.close()
