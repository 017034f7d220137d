"""The proxy's no-toxic fast path (`FastPath`) and its hand-over to the toxic pipeline.

Why: the fast path moves bytes without Python seeing them, so these tests
check what must survive switching paths on an open connection: every byte,
in order, including bytes the fast path has read but not written when a toxic
arrives, and a toxic's effect on that same connection.
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
import urllib.request

import pytest

from stack.proxy import api as proxy_api, wire as proxy_wire
from support.echo_server import EchoServer


def pattern(start: int, count: int) -> bytes:
    """`count` 4-byte big-endian counters from `start`: a lost or reordered byte shows."""
    return b"".join(i.to_bytes(4, "big") for i in range(start, start + count))


def recv_exact(sock: socket.socket, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        part = sock.recv(min(1 << 20, n - got))
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def listen_of(proxy: dict) -> tuple[str, int]:
    host, port = proxy["listen"].rsplit(":", 1)
    return host, int(port)


def test_toxic_takes_over_bytes_held_in_flight(toxiproxy):
    """A blocked upstream: bytes pile up in the proxy; a toxic added then delays them, none lost."""
    server = socket.create_server(("127.0.0.1", 0))
    proxy = toxiproxy.create_proxy("held", "127.0.0.1:0", f"127.0.0.1:{server.getsockname()[1]}")
    client = socket.create_connection(listen_of(proxy), timeout=10)
    upstream, _ = server.accept()
    upstream.settimeout(10)
    first = pattern(0, 2_000_000)  # 8 MB: more than the socket buffers hold, so the proxy holds some
    sender = threading.Thread(target=client.sendall, args=(first,), daemon=True)
    sender.start()
    time.sleep(0.3)  # the upstream reads nothing yet
    toxiproxy.add_toxic("held", "latency", {"latency": 300}, stream="upstream")
    start = time.perf_counter()
    assert recv_exact(upstream, len(first)) == first
    sender.join(10)
    second = pattern(2_000_000, 1000)
    sent_at = time.perf_counter()
    client.sendall(second)
    assert recv_exact(upstream, len(second)) == second
    assert time.perf_counter() - sent_at >= 0.28, "the toxic acts on the open connection"
    toxiproxy.remove_toxic("held", "latency_upstream")
    third = pattern(2_001_000, 1_000_000)
    threading.Thread(target=client.sendall, args=(third,), daemon=True).start()
    assert recv_exact(upstream, len(third)) == third, "back on the fast path, nothing lost"
    assert time.perf_counter() - start < 5
    client.close()
    assert upstream.recv(10) == b"", "the close passes through"
    upstream.close()
    server.close()


def test_toxics_come_and_go_under_a_bulk_echo(toxiproxy, echo_proxy_address):
    """Bytes keep their order while toxics are added and removed during a transfer."""
    sock = socket.create_connection(echo_proxy_address, timeout=10)
    payload = pattern(0, 4_000_000)  # 16 MB
    threading.Thread(target=sock.sendall, args=(payload,), daemon=True).start()
    got = bytearray()
    steps = [("latency", {"latency": 5}), ("slicer", {"average_size": 4096, "delay": 10}),
             ("bandwidth", {"rate": 200_000})]
    while len(got) < len(payload):
        part = sock.recv(1 << 20)
        assert part, f"closed after {len(got)} bytes"
        got += part
        if steps and len(got) > (4 - len(steps)) * len(payload) // 4:
            kind, attrs = steps.pop(0)
            names = [t["name"] for t in toxiproxy.toxics("echo")]
            for name in names:
                toxiproxy.remove_toxic("echo", name)
            toxiproxy.add_toxic("echo", kind, attrs)
    assert bytes(got) == payload
    sock.close()


@pytest.fixture
def echo_proxy_address(toxiproxy, echo):
    return listen_of(toxiproxy.create_proxy("echo", "127.0.0.1:0", f"127.0.0.1:{echo.port}"))


class InProcessServer:
    """A ProxyServer on a loop in a thread, so a test can look at its links."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.server = proxy_api.ProxyServer("127.0.0.1", 0)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> "InProcessServer":
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(self.server.url + path, data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=5) as resp:
            return json.loads(resp.read())

    def fast(self, name: str) -> list[bool]:
        """Whether each link of each open connection of proxy `name` is on the fast path."""
        async def look() -> list[bool]:
            return [link.fast is not None for conn in self.server.proxies[name].connections
                    for link in conn.links.values()]
        return asyncio.run_coroutine_threadsafe(look(), self.loop).result(5)


@pytest.mark.skipif(not proxy_wire.FAST, reason="no fast path on this platform")
def test_links_without_toxics_run_fast_and_leave_it_for_a_toxic():
    with EchoServer("echo") as (host, port), InProcessServer() as srv:
        proxy = srv.post("/proxies", {"name": "e", "upstream": f"{host}:{port}"})
        sock = socket.create_connection(listen_of(proxy), timeout=5)
        sock.sendall(b"ping")
        assert recv_exact(sock, 4) == b"ping"
        assert srv.fast("e") == [True, True]
        srv.post("/proxies/e/toxics", {"type": "latency", "attributes": {"latency": 50}})
        assert srv.fast("e") == [True, False], "the downstream link left the fast path"
        start = time.perf_counter()
        sock.sendall(b"pong")
        assert recv_exact(sock, 4) == b"pong"
        assert time.perf_counter() - start >= 0.045
        request = urllib.request.Request(srv.server.url + "/proxies/e/toxics/latency_downstream", method="DELETE")
        urllib.request.urlopen(request, timeout=5).close()
        sock.sendall(b"back")
        assert recv_exact(sock, 4) == b"back"
        assert srv.fast("e") == [True, True], "back on the fast path once the toxic is gone"
        fds = len(os.listdir("/proc/self/fd"))
        sock.close()
        deadline = time.monotonic() + 2
        while srv.fast("e") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert srv.fast("e") == []
        assert len(os.listdir("/proc/self/fd")) <= fds - 4, "the fast path's socket dups are closed"


@pytest.mark.skipif(not proxy_wire.FAST, reason="no fast path on this platform")
def test_bytes_the_fast_path_holds_go_through_the_new_toxic():
    server = socket.create_server(("127.0.0.1", 0))
    with InProcessServer() as srv:
        proxy = srv.post("/proxies", {"name": "h", "upstream": f"127.0.0.1:{server.getsockname()[1]}"})
        client = socket.create_connection(listen_of(proxy), timeout=10)
        upstream, _ = server.accept()
        upstream.settimeout(10)
        payload = pattern(0, 2_000_000)
        threading.Thread(target=client.sendall, args=(payload,), daemon=True).start()
        time.sleep(0.3)  # the upstream reads nothing: the proxy holds what it read

        async def held() -> int:
            conn = next(iter(srv.server.proxies["h"].connections))
            fast = conn.links["upstream"].fast
            return fast.end - fast.start

        assert asyncio.run_coroutine_threadsafe(held(), srv.loop).result(5) > 0
        srv.post("/proxies/h/toxics", {"type": "latency", "stream": "upstream", "attributes": {"latency": 100}})
        assert recv_exact(upstream, len(payload)) == payload
        client.close()
        upstream.close()
    server.close()
