"""Proxy overhead: a direct connection and one through the Toxiproxy server, side by side.

Why: every message between the nodes and the broker crosses the proxy in
the embedded stack, so the proxy must not be what a load test measures.
Targets (issue 3): with no toxic, p99 added round-trip latency under 1 ms
and throughput at least 50 % of a direct connection.

Both paths run in the same run, interleaved in blocks, against the same
real servers (`tests/support/echo_server.py` in child processes), so machine noise
hits both alike. The throughput ratio is the median proxy rate over the
median direct rate; the range of the per-pair ratios (each proxy transfer
against the direct one just before it) shows how noisy the machine was.
The proxy server's CPU seconds per GB moved is printed too: it barely
depends on what else runs on the machine. Prints a table; `--check` exits 1
when a target is missed. `BRIDGESTORM_PROXY_FAST=0` in the environment
measures the proxy without its fast path.

    .venv/bin/python benchmarks/proxy_overhead.py [--round-trips 20000] [--megabytes 256] [--transfers 5]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import time

import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from stack.proxy.process import ProxyServerProcess  # noqa: E402
from stack.proxy.client import ToxiproxyClient  # noqa: E402


def start_peer(mode: str) -> tuple[subprocess.Popen, int]:
    tests = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
    proc = subprocess.Popen([sys.executable, "-m", "support.echo_server", "--mode", mode],
                            stdout=subprocess.PIPE, text=True, cwd=tests)
    port = int(proc.stdout.readline())
    return proc, port


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def round_trips(sock: socket.socket, count: int, size: int) -> list[float]:
    """Send `size` bytes, wait for them to come back; one latency (ms) per round trip."""
    payload = b"p" * size
    out = []
    buf = bytearray(size)
    for _ in range(count):
        start = time.perf_counter()
        sock.sendall(payload)
        got = 0
        while got < size:
            n = sock.recv_into(memoryview(buf)[got:])
            if n == 0:
                raise ConnectionError("peer closed during round trip")
            got += n
        out.append((time.perf_counter() - start) * 1000.0)
    return out


def bulk(port: int, megabytes: int) -> float:
    """Push `megabytes` MB to a sink and wait for its byte count; MB/s."""
    block = memoryview(b"b" * (1 << 20))
    sock = connect(port)
    start = time.perf_counter()
    for _ in range(megabytes):
        sock.sendall(block)
    sock.shutdown(socket.SHUT_WR)
    header = b""
    while len(header) < 8:
        part = sock.recv(8 - len(header))
        if not part:
            raise ConnectionError("sink closed before answering")
        header += part
    elapsed = time.perf_counter() - start
    sock.close()
    total = struct.unpack(">Q", header)[0]
    if total != megabytes << 20:
        raise AssertionError(f"sink got {total} bytes, sent {megabytes << 20}")
    return megabytes / elapsed


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def measure(round_trip_count: int, size: int, megabytes: int, blocks: int, transfers: int = 5) -> dict:
    peers = [start_peer("echo"), start_peer("sink")]
    (_, echo_port), (_, sink_port) = peers
    try:
        server = ProxyServerProcess()
        with server as url:
            proxy_proc = psutil.Process(server.proc.pid)
            client = ToxiproxyClient(url)
            echo_proxy = int(client.create_proxy("bench_echo", "127.0.0.1:0", f"127.0.0.1:{echo_port}")["listen"].rsplit(":", 1)[1])
            sink_proxy = int(client.create_proxy("bench_sink", "127.0.0.1:0", f"127.0.0.1:{sink_port}")["listen"].rsplit(":", 1)[1])
            direct, proxied = connect(echo_port), connect(echo_proxy)
            round_trips(direct, 500, size)  # warm up both paths
            round_trips(proxied, 500, size)
            lat = {"direct": [], "proxy": []}
            per_block = max(1, round_trip_count // blocks)
            for _ in range(blocks):
                lat["direct"] += round_trips(direct, per_block, size)
                lat["proxy"] += round_trips(proxied, per_block, size)
            direct.close()
            proxied.close()
            thr = {"direct": [], "proxy": []}
            bulk(sink_port, 16)
            bulk(sink_proxy, 16)
            proxy_cpu = 0.0
            for _ in range(transfers):
                thr["direct"].append(bulk(sink_port, megabytes))
                before = cpu_seconds(proxy_proc)
                thr["proxy"].append(bulk(sink_proxy, megabytes))
                proxy_cpu += cpu_seconds(proxy_proc) - before
    finally:
        for proc, _ in peers:
            proc.terminate()
            proc.wait(5)
    result = {"round_trips": len(lat["direct"]), "size_bytes": size, "megabytes": megabytes, "transfers": transfers}
    for path in ("direct", "proxy"):
        result[path] = {
            "p50_ms": statistics.median(lat[path]),
            "p99_ms": pct(lat[path], 0.99),
            "p999_ms": pct(lat[path], 0.999),
            "mb_per_s": statistics.median(thr[path]),
        }
    result["added_p50_ms"] = result["proxy"]["p50_ms"] - result["direct"]["p50_ms"]
    result["added_p99_ms"] = result["proxy"]["p99_ms"] - result["direct"]["p99_ms"]
    result["throughput_ratio"] = result["proxy"]["mb_per_s"] / result["direct"]["mb_per_s"]
    pairs = sorted(p / d for p, d in zip(thr["proxy"], thr["direct"]))
    result["pair_ratio_min"], result["pair_ratio_max"] = pairs[0], pairs[-1]
    result["proxy_cpu_s_per_gb"] = proxy_cpu / (transfers * megabytes / 1024)
    result["targets_met"] = result["added_p99_ms"] < 1.0 and result["throughput_ratio"] >= 0.5
    return result


def print_table(r: dict) -> None:
    print(f"proxy overhead, no toxic: {r['round_trips']} round trips of {r['size_bytes']} B per path, "
          f"{r['megabytes']} MB bulk x{r['transfers']} per path (median)")
    print(f"{'path':<8}{'p50 ms':>10}{'p99 ms':>10}{'p99.9 ms':>10}{'MB/s':>10}")
    for path in ("direct", "proxy"):
        row = r[path]
        print(f"{path:<8}{row['p50_ms']:>10.3f}{row['p99_ms']:>10.3f}{row['p999_ms']:>10.3f}{row['mb_per_s']:>10.0f}")
    print(f"added latency: p50 {r['added_p50_ms']:.3f} ms, p99 {r['added_p99_ms']:.3f} ms (target < 1 ms)")
    print(f"throughput ratio proxy/direct: {r['throughput_ratio']:.2f} (target >= 0.50; "
          f"pairs {r['pair_ratio_min']:.2f}..{r['pair_ratio_max']:.2f})")
    print(f"proxy server CPU: {r['proxy_cpu_s_per_gb']:.2f} s per GB moved")
    print("targets met" if r["targets_met"] else "TARGETS MISSED")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round-trips", type=int, default=20000)
    parser.add_argument("--size", type=int, default=128, help="bytes per round trip")
    parser.add_argument("--megabytes", type=int, default=256)
    parser.add_argument("--blocks", type=int, default=10, help="interleaved blocks per path")
    parser.add_argument("--transfers", type=int, default=5, help="bulk transfers per path, interleaved")
    parser.add_argument("--json", action="store_true", help="print the result as JSON too")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    result = measure(args.round_trips, args.size, args.megabytes, args.blocks, args.transfers)
    print_table(result)
    if args.json:
        print(json.dumps(result))
    return 1 if args.check and not result["targets_met"] else 0


if __name__ == "__main__":
    sys.exit(main())
