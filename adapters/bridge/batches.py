"""What EventBatchUser (the database-adapter load) sends and expects, without importing Locust (tests read it too).

Importing Locust monkey-patches the process with gevent, which a pytest
process must not do after ssl was imported; so the constants that both the
EventBatchUser and its test need live here.
"""
from __future__ import annotations

from collections.abc import Callable

import orjson

from adapters.bridge.adapter import EventType

# metadata-stamped.v1 is consumed by the database adapter alone among the nodes (the benchmark's choice too),
# so the batches load the adapter and nothing else; METADATA_STAMPED is that topic's event type
EVENT_TYPE = EventType.METADATA_STAMPED


def dead_letter_prefix(namespace: str) -> str:
    """Keys of the malformed messages start with this; the adapter's truth finds this run's dead letters by it."""
    return f"{namespace}/dlq/"


# (sort, value for a namespace, what the database adapter's reason must say: nodes/envelope.py parse_envelope)
MALFORMED: list[tuple[str, Callable[[str], bytes | None], str]] = [
    ("not-json", lambda ns: b"{this is not json", "not JSON"),
    ("not-an-object", lambda ns: b"[1, 2, 3]", "not a JSON object"),
    ("missing-fields", lambda ns: orjson.dumps({"event_type": EVENT_TYPE.value, "namespace": ns}), "Field required"),
    ("wrong-types", lambda ns: orjson.dumps({"event_id": 42, "event_type": EVENT_TYPE.value, "source_node_id": "x",
                                             "namespace": ns, "payload": "not an object"}), "invalid envelope"),
    ("null-value", lambda ns: None, "null value"),
]
