"""NodeUser: each user is a simulated bridge node on the bus.

It introspects on start and waits for its registration, re-sending the same
event (same event id, same correlation id) until it sees it, as a real node
must when the bus loses a message; then it heartbeats on its own clock
(every ``--heartbeat`` seconds, each beat with its intended start, whatever
the run's ``--rate``), and introspects again whenever the registry asks
(REGISTRY_REQUEST_INTROSPECTION).
"""
from __future__ import annotations

import itertools
import os
import socket
import time
import uuid
import weakref
from typing import Any

import gevent.event
from locust import events, task

from adapters.bridge.adapter import TOPICS, EventType
from harness.context import option
from harness.pacing import Pacer
from harness.users import KafkaUser

_ids = itertools.count()
_nodes: "weakref.WeakSet[NodeUser]" = weakref.WeakSet()
_listening: set[int] = set()


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--heartbeat", type=float, default=1.0,
                        help="NodeUser: heartbeat interval (s); with --stack embedded, the nodes' own too")


def _reintrospect_all(envelope: dict) -> None:
    """Runs in gevent for every REGISTRY_REQUEST_INTROSPECTION: every live node of this process answers."""
    for node in list(_nodes):
        node.reintrospect.set()


class NodeUser(KafkaUser):
    """A simulated node: register (with re-sends), heartbeat, answer re-introspection requests."""

    node_type: str = "effect"
    heartbeat_interval_s: float = 1.0
    register_timeout_s: float = 5.0
    register_attempts: int = 5

    def on_start(self) -> None:
        super().on_start()
        # unique across every process and machine of the run: namespace, host, pid, counter
        self.node_id = f"{self.run.namespace}-{socket.gethostname()}-{os.getpid()}-{next(_ids)}"
        self.started = time.monotonic()
        self.reintrospect = gevent.event.Event()
        if float(option(self.environment, "e2e_timeout", 0) or 0) > 0:
            self.register_timeout_s = self.e2e_timeout_s
        self.heartbeat_interval_s = float(option(self.environment, "heartbeat", self.heartbeat_interval_s))
        # a node heartbeats on its own clock, whatever the run's --rate: each beat keeps its intended time
        self.pacer = Pacer(1.0 / self.heartbeat_interval_s)
        _nodes.add(self)
        if id(self.bus) not in _listening:
            _listening.add(id(self.bus))
            self.bus.observer.on(EventType.REGISTRY_REQUEST_INTROSPECTION.value, _reintrospect_all)
        self.registered = self.register()

    def on_stop(self) -> None:
        _nodes.discard(self)
        super().on_stop()

    def register(self) -> bool:
        """Introspect until NODE_REGISTERED with our correlation id is seen (each wait is one e2e sample)."""
        event_id, corr = str(uuid.uuid4()), str(uuid.uuid4())
        payload = {
            "node_id": self.node_id,
            "node_type": self.node_type,
            "capabilities": {"load": True, "simulated": True},
            "endpoints": {"health": f"http://127.0.0.1/{self.node_id}/health"},
        }
        for _ in range(self.register_attempts):
            message = self.event(EventType.NODE_INTROSPECTION, payload, topic=TOPICS.introspection, key=self.node_id,
                                 source=self.node_id, correlation_id=corr, event_id=event_id)
            result = self.publish_and_wait(
                message, name=EventType.NODE_INTROSPECTION.value, expect=[EventType.NODE_REGISTERED.value],
                e2e_name="introspection→registered", ledger=("introspection", self.node_id),
                timeout=self.register_timeout_s,
            )
            if result is not None:
                return True
        return False

    @task
    def heartbeat(self) -> None:
        """One heartbeat at this node's next slot; a re-introspection request is answered as soon as it comes."""
        intended = self.pacer.slot()
        self.reintrospect.wait(max(0.0, intended - time.time()))
        if self.reintrospect.is_set():
            self.reintrospect.clear()
            self.registered = self.register()
            gevent.sleep(max(0.0, intended - time.time()))
        payload = {"node_id": self.node_id, "uptime_s": round(time.monotonic() - self.started, 3),
                   "active_operations": 0}
        message = self.event(EventType.NODE_HEARTBEAT, payload, topic=TOPICS.heartbeat, key=self.node_id,
                             source=self.node_id)
        self.publish(message, name=EventType.NODE_HEARTBEAT.value, ts_intended=intended)
