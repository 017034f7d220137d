"""Toxic accuracy, measured through the proxy server against a real echo server."""
from __future__ import annotations

import socket
import statistics
import time

import pytest

from support.echo_server import EchoServer


def listen_of(proxy: dict) -> tuple[str, int]:
    host, port = proxy["listen"].rsplit(":", 1)
    return host, int(port)


def connect(address, timeout=5.0) -> socket.socket:
    sock = socket.create_connection(address, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        part = sock.recv(n - len(data))
        if not part:
            break
        data += part
    return data


def round_trip_ms(sock: socket.socket, payload: bytes = b"x" * 64) -> float:
    start = time.perf_counter()
    sock.sendall(payload)
    assert recv_exact(sock, len(payload)) == payload
    return (time.perf_counter() - start) * 1000


@pytest.fixture
def echo_proxy(toxiproxy, echo):
    proxy = toxiproxy.create_proxy("echo", "127.0.0.1:0", f"127.0.0.1:{echo.port}")
    return listen_of(proxy)


def test_latency_within_ten_percent(toxiproxy, echo_proxy):
    sock = connect(echo_proxy)
    base = statistics.median(round_trip_ms(sock) for _ in range(20))
    toxiproxy.add_toxic("echo", "latency", {"latency": 100})
    samples = [round_trip_ms(sock) - base for _ in range(10)]
    assert all(90 <= s <= 110 for s in samples), samples
    toxiproxy.update_toxic("echo", "latency_downstream", {"latency": 100, "jitter": 40})
    samples = [round_trip_ms(sock) - base for _ in range(30)]
    assert all(60 * 0.9 <= s <= 140 * 1.1 for s in samples), samples
    assert max(samples) - min(samples) > 20, "jitter varies the delay"
    sock.close()


def test_bandwidth_within_ten_percent(toxiproxy):
    with EchoServer("source") as (host, port):
        proxy = toxiproxy.create_proxy("source", "127.0.0.1:0", f"{host}:{port}")
        toxiproxy.add_toxic("source", "bandwidth", {"rate": 500})  # KB/s
        sock = connect(listen_of(proxy), timeout=10)
        size = 500_000  # one second at 500 KB/s
        start = time.perf_counter()
        sock.sendall(size.to_bytes(8, "big"))
        got = len(recv_exact(sock, size))
        elapsed = time.perf_counter() - start
        sock.close()
    assert got == size
    rate_kb_s = size / elapsed / 1000
    assert 450 <= rate_kb_s <= 550, rate_kb_s


def test_timeout_zero_holds_data_and_never_closes(toxiproxy, echo_proxy):
    sock = connect(echo_proxy)
    round_trip_ms(sock)
    toxiproxy.add_toxic("echo", "timeout", {"timeout": 0})
    sock.sendall(b"held")
    sock.settimeout(0.6)
    with pytest.raises(socket.timeout):
        sock.recv(10)  # neither data nor a close
    toxiproxy.remove_toxic("echo", "timeout_downstream")
    sock.settimeout(2)
    assert sock.recv(10) == b"", "removing a timeout toxic closes its connections, as Toxiproxy does"
    sock.close()


def test_timeout_closes_after_timeout(toxiproxy, echo_proxy):
    toxiproxy.add_toxic("echo", "timeout", {"timeout": 300})
    sock = connect(echo_proxy)
    start = time.perf_counter()
    sock.sendall(b"dropped")
    assert sock.recv(10) == b""
    assert 0.27 <= time.perf_counter() - start <= 0.45
    sock.close()


def test_reset_peer_gives_econnreset(toxiproxy, echo_proxy):
    toxiproxy.add_toxic("echo", "reset_peer", {"timeout": 0})
    sock = connect(echo_proxy)
    sock.sendall(b"hello")
    with pytest.raises(ConnectionResetError):
        for _ in range(10):
            if not sock.recv(10):
                break
    sock.close()


def test_limit_data_cuts_at_the_byte(toxiproxy, echo_proxy):
    toxiproxy.add_toxic("echo", "limit_data", {"bytes": 1000})
    sock = connect(echo_proxy)
    sock.sendall(bytes(range(256)) * 20)  # 5120 bytes
    data = b""
    while True:
        part = sock.recv(65536)
        if not part:
            break
        data += part
    assert data == (bytes(range(256)) * 20)[:1000]
    sock.close()


def test_slicer_keeps_the_stream_intact(toxiproxy, echo_proxy):
    toxiproxy.add_toxic("echo", "slicer", {"average_size": 64, "size_variation": 32, "delay": 200})
    sock = connect(echo_proxy)
    payload = bytes(range(256)) * 40
    sock.sendall(payload)
    assert recv_exact(sock, len(payload)) == payload
    sock.close()


def test_slow_close_delays_the_close(toxiproxy):
    with EchoServer("sink") as (host, port):
        proxy = toxiproxy.create_proxy("sink", "127.0.0.1:0", f"{host}:{port}")
        toxiproxy.add_toxic("sink", "slow_close", {"delay": 300})
        sock = connect(listen_of(proxy))
        sock.sendall(b"abc")
        sock.shutdown(socket.SHUT_WR)
        assert int.from_bytes(recv_exact(sock, 8), "big") == 3
        start = time.perf_counter()
        assert sock.recv(10) == b""
        assert 0.25 <= time.perf_counter() - start <= 0.5
        sock.close()


def test_toxicity_is_drawn_once_per_connection(toxiproxy, echo_proxy):
    toxiproxy.add_toxic("echo", "latency", {"latency": 60}, toxicity=0.5)
    delayed = 0
    for _ in range(40):
        sock = connect(echo_proxy)
        first = round_trip_ms(sock) > 50
        second = round_trip_ms(sock) > 50
        assert first == second, "the draw holds for the whole connection"
        delayed += first
        sock.close()
    assert 8 <= delayed <= 32, delayed


def test_inject_and_heal_under_100ms_and_held_data_is_released(toxiproxy, echo_proxy):
    sock = connect(echo_proxy)
    round_trip_ms(sock)
    start = time.perf_counter()
    toxiproxy.add_toxic("echo", "latency", {"latency": 5000})
    inject_ms = (time.perf_counter() - start) * 1000
    sock.sendall(b"late")
    time.sleep(0.1)
    start = time.perf_counter()
    toxiproxy.remove_toxic("echo", "latency_downstream")
    heal_ms = (time.perf_counter() - start) * 1000
    sock.settimeout(1)
    assert recv_exact(sock, 4) == b"late", "data held by a removed toxic is handed on at once"
    assert time.perf_counter() - start < 0.5
    start = time.perf_counter()
    toxiproxy.set_enabled("echo", False)
    down_ms = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    toxiproxy.set_enabled("echo", True)
    up_ms = (time.perf_counter() - start) * 1000
    assert max(inject_ms, heal_ms, down_ms, up_ms) < 100, (inject_ms, heal_ms, down_ms, up_ms)
    sock.close()
