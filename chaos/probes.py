"""Small health checks: does an address answer on TCP, HTTP, or the Kafka protocol.

Why a Kafka-level check: a SIGSTOPped or paused broker still completes TCP
handshakes (the kernel does them), so only a real request tells whether it
answers. `kafka_answers` sends an ApiVersions v0 request and waits for the
reply, with no client library (safe in gevent-patched Locust processes).
"""
from __future__ import annotations

import socket
import struct
import time
from typing import Callable

from stack.processes import http_status  # noqa: F401 - one implementation, re-exported for chaos
from stack.processes import recv_exact
from stack.processes import tcp_answers as _tcp_answers


def split(address: str) -> tuple[str, int]:
    """'tcp://127.0.0.1:9092' or '127.0.0.1:9092' -> ('127.0.0.1', 9092)."""
    if "://" in address:
        address = address.split("://", 1)[1]
    host, _, port = address.rstrip("/").rpartition(":")
    return host.strip("[]"), int(port)


def tcp_answers(address: str, timeout: float = 0.5) -> bool:
    return _tcp_answers(*split(address), timeout=timeout)


def kafka_answers(address: str, timeout: float = 1.0) -> bool:
    """True when the broker answers an ApiVersions v0 request within `timeout`."""
    client_id = b"bridgestorm-probe"
    body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    try:
        with socket.create_connection(split(address), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = recv_exact(sock, 8)
            size, correlation = struct.unpack(">ii", header)
            return correlation == 7 and size >= 4
    except (OSError, ConnectionError):
        return False


def health_answers(health: str, timeout: float = 0.5) -> bool:
    """A part's `health` string: 'tcp://h:p', 'kafka://h:p' or an HTTP URL (200 = answers)."""
    if health.startswith("tcp://"):
        return tcp_answers(health, timeout)
    if health.startswith("kafka://"):
        return kafka_answers(health, timeout)
    return http_status(health, timeout) == 200


def wait_for(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.01,
             cancelled: Callable[[], bool] = lambda: False) -> float | None:
    """Seconds until `predicate()` held, or None if it did not within the timeout (or was cancelled)."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if cancelled() or time.monotonic() - start > timeout_s:
            return None
        time.sleep(interval_s)
