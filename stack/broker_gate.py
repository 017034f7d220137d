"""Start the embedded broker again with its topics in place before any client reaches it.

Why: Tansu 0.6's memory engine acknowledges a produce to a topic it does not
have, and that partition is then unreadable for the rest of the broker's
life: ListOffsets counts the records, Fetch returns none, and creating the
topic afterwards does not mend it. A client that lived through a broker
restart sends its retried batches the moment it reconnects, before any node
has had the chance to create the topics again. Seen: 4 of 10 kill-and-restart
rounds under workflow load left `bridgestorm-incarnation` (and data topics)
unreadable, so no node could learn the new incarnation and most workflows
never completed; with this gate, 0 of 15.

So whoever starts the broker again (the chaos process and container targets,
the stack) does it through `BrokerGate.reopen`: the proxy link in front of the
broker is closed, the broker starts, the stack's topics are created on the
broker's own port, and the link opens again. A broker without a proxy in front
gets its topics as early as possible, which narrows the window but cannot
close it. Brokers that answer a produce to an unknown topic with an error (Kafka,
Redpanda) never needed this.

CreateTopics (aiokafka's protocol structs, version 0) goes over one bare
connection to the listening port: an admin client would follow the broker's
advertised address, which is the closed proxy.
"""
from __future__ import annotations

import logging
import socket
import struct
from dataclasses import dataclass
from typing import Callable, TypeVar

from aiokafka.protocol.admin import CreateTopicsRequest_v0, CreateTopicsResponse_v0

from stack.processes import recv_exact, tcp_answers, wait_until
from stack.proxy.client import ToxiproxyClient
from stack.state import Part, StackState

log = logging.getLogger(__name__)

T = TypeVar("T")

TOPIC_ALREADY_EXISTS = 36


def create_topics(port: int, topics: dict[str, int], timeout_s: float = 5.0) -> None:
    """Create `topics` on the broker listening on 127.0.0.1:`port` (those that exist are left as they are).

    A blocking socket, no event loop: callers run in threads, in Locust's gevent (where a socket
    is cooperative) and inside running asyncio loops alike.
    """
    request = CreateTopicsRequest_v0(
        create_topic_requests=[(name, partitions, 1, [], []) for name, partitions in topics.items()],
        timeout=int(timeout_s * 1000))
    message = request.build_request_header(correlation_id=1, client_id="bridgestorm-gate").encode() + request.encode()
    with socket.create_connection(("127.0.0.1", port), timeout_s) as conn:
        conn.sendall(struct.pack(">i", len(message)) + message)
        size = struct.unpack(">i", recv_exact(conn, 4))[0]
        body = recv_exact(conn, size)
    response = CreateTopicsResponse_v0.decode(body[4:])  # after the correlation id
    failed = [(name, code) for name, code in response.topic_errors if code not in (0, TOPIC_ALREADY_EXISTS)]
    if failed:
        raise RuntimeError(f"the broker on 127.0.0.1:{port} refused to create topics: {failed}")


@dataclass
class BrokerGate:
    """`BrokerGate.of(state, part).reopen(lambda: launch(spec))`."""

    listen_port: int
    topics: dict[str, int]
    proxy_url: str | None = None
    proxy_name: str | None = None

    @classmethod
    def of(cls, state: StackState, part: Part) -> "BrokerGate | None":
        """The gate of a broker part the stack started (None for any other part, or a broker of old state)."""
        topics = part.extra.get("topics")
        if not topics or "listen_port" not in part.extra:
            return None
        proxy_name = part.extra.get("proxy")
        return cls(int(part.extra["listen_port"]), dict(topics),
                   state.env.get("TOXIPROXY_URL") if proxy_name else None, proxy_name)

    def reopen(self, start: Callable[[], T], timeout_s: float = 15.0) -> T:
        """Run `start` (which starts the broker) with the proxy link closed until the topics exist."""
        proxy = ToxiproxyClient(self.proxy_url) if self.proxy_url and self.proxy_name else None
        was_enabled = False
        if proxy is not None:
            was_enabled = bool(proxy.proxy(self.proxy_name)["enabled"])  # a link fault may hold it closed
            proxy.set_enabled(self.proxy_name, False)
        try:
            started = start()
            if not wait_until(lambda: tcp_answers("127.0.0.1", self.listen_port), timeout_s):
                raise RuntimeError(f"the broker did not listen on 127.0.0.1:{self.listen_port} "
                                   f"within {timeout_s:.0f}s of its start")
            create_topics(self.listen_port, self.topics)
            log.info("broker on 127.0.0.1:%d started with its %d topics", self.listen_port, len(self.topics))
        finally:
            if proxy is not None and was_enabled:
                proxy.set_enabled(self.proxy_name, True)
        return started
