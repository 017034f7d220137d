"""What the tool-capture proxy costs: a tool called directly, through the proxy, and from its cache, side by side.

Why: the proxy routes (discovery), guards (a breaker per instance), captures
(one outbox transaction per call) and caches; `proxy_overhead_ms` in its
answer is its own time. This measures it from outside, as a ratio to the
same tool called directly, on a real embedded stack: the stamping node's
`blake3_hash` tool on a 4 KiB input, one request at a time (latency, not
throughput), the three kinds interleaved round by round so that the
machine's noise falls on all of them alike.

- direct: POST {STAMPING_URL}/tools/blake3_hash
- proxied: POST {TOOL_CAPTURE_PROXY_URL}/proxy/tool/blake3_hash, cache_policy bypass (always upstream)
- cached: the same through the proxy with an input it has seen (a Redis hit)

    .venv/bin/python benchmarks/tool_proxy_overhead.py [--requests 300]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid

import aiohttp
from rich.console import Console
from rich.table import Table

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from stack.embedded import StackOptions, down, up  # noqa: E402

console = Console()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(env: dict[str, str], requests: int) -> dict[str, dict[str, list[float]]]:
    direct_url = f"{env['STAMPING_URL']}/tools/blake3_hash"
    proxy_url = f"{env['TOOL_CAPTURE_PROXY_URL']}/proxy/tool/blake3_hash"
    repeated = {"content": "x" * 4096}
    times: dict[str, list[float]] = {"direct": [], "proxied": [], "cached": []}
    overhead: dict[str, list[float]] = {"proxied": [], "cached": []}
    async with aiohttp.ClientSession() as http:
        async def call(url: str, body: dict) -> tuple[float, dict]:
            t0 = time.perf_counter()
            async with http.post(url, json=body) as resp:
                answer = await resp.json()
                assert resp.status == 200, answer
            return (time.perf_counter() - t0) * 1000, answer

        for _ in range(20):  # warm up: connections, discovery, the cache's learning of the repeated input
            await call(direct_url, {"input_data": repeated})
            await call(proxy_url, {"input_data": repeated})
        for _ in range(requests):
            fresh = {"content": uuid.uuid4().hex * 128}  # 4 KiB, never seen
            ms, _ = await call(direct_url, {"input_data": fresh})
            times["direct"].append(ms)
            ms, answer = await call(proxy_url, {"input_data": fresh, "execution_options": {"cache_policy": "bypass"}})
            times["proxied"].append(ms)
            overhead["proxied"].append(answer["data"]["proxy_overhead_ms"])
            ms, answer = await call(proxy_url, {"input_data": repeated})
            if answer["data"]["cache"] == "hit":
                times["cached"].append(ms)
                overhead["cached"].append(answer["data"]["proxy_overhead_ms"])
    return {"times": times, "overhead": overhead}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="rounds; each makes one call of each kind")
    args = parser.parse_args()
    state_path = os.path.join(tempfile.mkdtemp(prefix="bridgestorm-bench-"), "stack.json")
    console.print("starting an embedded stack ...")
    state = up(StackOptions(state_path=state_path), progress=lambda m: console.print(f"  {m}"))
    try:
        result = asyncio.run(measure(state.env, args.requests))
    finally:
        down(state_path)
    times, overhead = result["times"], result["overhead"]
    table = Table(title=f"blake3_hash on 4 KiB, {args.requests} rounds, one request at a time")
    for column in ("kind", "calls", "p50 ms", "p95 ms", "p50 / direct p50", "proxy's own p50 ms"):
        table.add_column(column, justify="right")
    base = statistics.median(times["direct"])
    for kind, values in times.items():
        own = f"{statistics.median(overhead[kind]):.2f}" if overhead.get(kind) else "-"
        table.add_row(kind, str(len(values)), f"{statistics.median(values):.2f}", f"{pct(values, 0.95):.2f}",
                      f"{statistics.median(values) / base:.2f}", own)
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
