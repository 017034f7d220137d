"""What the embedded stack starts of the system under test: bridgestorm's own nodes.

The one place the lab knows the reference system: which node kinds exist
(in the order they start), how one is launched (``python -m nodes run
<kind>``), the environment variable its URL is published under, and how the
nodes find a database the user gave (``DATABASE_URL`` or the seeds'
``POSTGRES_*``), and the topics they use (created on a restarted broker
before anyone reaches it: ``stack.broker_gate``). Everything else in ``stack/`` is about processes, ports and
state, and would start another system just as well.
"""
from __future__ import annotations

import sys

from nodes.bus import INCARNATION_TOPIC
from nodes.config import Topics, database_url_from_env, topic_partitions
from nodes.kinds import NODE_KINDS

__all__ = ["NODE_KINDS", "database_url_from_env", "node_argv", "stack_topics", "url_variable"]


def node_argv(kind: str) -> list[str]:
    """The command line that runs one node in the foreground, configured from its environment."""
    return [sys.executable, "-m", "nodes", "run", kind]


def url_variable(kind: str) -> str:
    """``stamping`` -> ``STAMPING_URL``: how clients (the Locust users) find a node."""
    return kind.upper().replace("-", "_") + "_URL"


def stack_topics() -> dict[str, int]:
    """Every topic the nodes use, with its partition count, and the one-partition incarnation topic."""
    return {topic: topic_partitions() for topic in Topics().all()} | {INCARNATION_TOPIC: 1}
