"""The nodes' targets (issue: bridge nodes), measured on one embedded stack in one run.

Prints one table: `stack up` ready time; workflow end to end at a fixed
200 workflows/s (latency from each request's *intended* start, so a stalled
submitter cannot hide latency; after a 2 s warm-up at the same rate, which is not
measured: a just-started stack has a start-up transient); query by hash; the database adapter at a
fixed 6,000 events/s (throughput and lag, read back from `event_logs`);
BLAKE3 of 1 MiB. Everything is colocated on this machine, as the targets say.

    .venv/bin/python benchmarks/nodes_targets.py [--seconds 10]
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
from pathlib import Path

import aiohttp
import asyncpg
import numpy as np
from aiokafka import AIOKafkaProducer
from blake3 import blake3
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' bus watcher

from nodes.config import Topics  # noqa: E402
from nodes.envelope import EventType, new_envelope  # noqa: E402
from stack.embedded import StackOptions, down, up  # noqa: E402
from support.bus_watcher import BusWatcher  # noqa: E402

console = Console()


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def workflows_at_fixed_rate(env: dict, rate: float, seconds: float, warmup_s: float = 2.0
                                  ) -> tuple[list[float], int]:
    """Submit at `rate`/s; end to end = WORKFLOW_COMPLETED seen on the bus − intended start.

    The first ``warmup_s`` of submissions run at the same rate but are not measured: a stack that
    has just started (consumer groups joining, connection pools filling) shows a transient of
    up to a second in its first two seconds, which is start-up, not steady-state latency.
    """
    watcher = BusWatcher(env["KAFKA_BOOTSTRAP_SERVERS"], [Topics().workflow], fetch_max_wait_ms=5)
    intended: dict[uuid.UUID, float] = {}
    latencies: list[float] = []
    failures = 0

    def completed(e, now: float) -> None:
        if e.event_type == EventType.WORKFLOW_COMPLETED and e.correlation_id in intended:
            latencies.append((now - intended[e.correlation_id]) * 1000)

    watcher.on_envelope = completed
    await watcher.start()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=500)) as http:
        start = time.perf_counter()
        tasks = []

        async def submit(at: float, measured: bool) -> None:
            nonlocal failures
            correlation = uuid.uuid4()
            if measured:
                intended[correlation] = at
            async with http.post(f"{env['ORCHESTRATOR_URL']}/workflows",
                                 json={"content": f"bench {correlation}", "namespace": "bench",
                                       "correlation_id": str(correlation)}) as resp:
                if resp.status != 202 and measured:
                    failures += 1
                    intended.pop(correlation)

        warmup = int(rate * warmup_s)
        for i in range(warmup + int(rate * seconds)):
            at = start + i / rate
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(submit(at, measured=i >= warmup)))
        await asyncio.gather(*tasks)
        deadline = time.monotonic() + 20
        while len(latencies) < len(intended) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    await watcher.stop()
    return latencies, failures + (len(intended) - len(latencies))


async def query_by_hash(env: dict, count: int) -> list[float]:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{env['STAMPING_URL']}/stamp", json={"content": "query me", "namespace": "bench"}) as r:
            file_hash = (await r.json())["file_hash"]
        latencies = []
        for _ in range(count):
            t0 = time.perf_counter()
            async with http.get(f"{env['STAMPING_URL']}/stamp/{file_hash}", params={"namespace": "bench"}) as r:
                await r.read()
            latencies.append((time.perf_counter() - t0) * 1000)
    return latencies


async def adapter_at_fixed_rate(env: dict, rate: float, seconds: float) -> tuple[float, list[float], int]:
    """Publish `rate` events/s to a topic only the database adapter consumes; read throughput and lag back."""
    topics = Topics()
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    producer = AIOKafkaProducer(bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"], acks="all", linger_ms=2)
    await producer.start()
    n = int(rate * seconds)
    start = time.perf_counter()
    pending = []
    for i in range(n):
        at = start + i / rate
        delay = at - time.perf_counter()
        if delay > 0.002:
            await asyncio.sleep(delay)
        env_ = new_envelope(EventType.METADATA_STAMPED, {"i": i}, source_node_id="bench", namespace=namespace)
        pending.append(await producer.send(topics.stamped, env_.to_bytes(), key=str(i % 64).encode()))
    await asyncio.gather(*pending)
    await producer.stop()
    pool = await asyncpg.create_pool(env["DATABASE_URL"], min_size=1, max_size=2)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        stored = await pool.fetchval("SELECT count(*) FROM event_logs WHERE namespace = $1", namespace)
        if stored >= n:
            break
        await asyncio.sleep(0.2)
    row = await pool.fetchrow(
        "SELECT count(*) AS n, extract(epoch FROM max(inserted_at) - min(inserted_at)) AS span"
        " FROM event_logs WHERE namespace = $1", namespace)
    lags = [r["lag"] for r in await pool.fetch(
        "SELECT extract(epoch FROM inserted_at - event_time) * 1000 AS lag FROM event_logs WHERE namespace = $1",
        namespace)]
    await pool.close()
    throughput = row["n"] / float(row["span"]) if row["span"] else float("nan")
    return throughput, [float(x) for x in lags], n - row["n"]


def blake3_1mib(runs: int = 300) -> list[float]:
    data = os.urandom(1024 * 1024)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        blake3(data, max_threads=blake3.AUTO).hexdigest()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each fixed-rate phase")
    parser.add_argument("--rate", type=float, default=200.0, help="workflows per second (target: p99 < 100 ms at 200)")
    parser.add_argument("--no-proxy", action="store_true", help="nodes reach broker and database directly")
    args = parser.parse_args()
    state_path = os.path.join(tempfile.mkdtemp(prefix="bridgestorm-bench-"), "stack.json")
    t0 = time.perf_counter()
    state = up(StackOptions(state_path=state_path, proxies=not args.no_proxy), progress=lambda m: console.print(f"[dim]• {m}[/dim]"))
    ready_s = time.perf_counter() - t0
    try:
        console.print(f"[dim]• workflows at {args.rate:.0f}/s for {args.seconds:.0f}s (after 2 s unmeasured warm-up)[/dim]")
        wf, wf_failed = asyncio.run(workflows_at_fixed_rate(state.env, args.rate, args.seconds))
        console.print("[dim]• 2000 queries by hash[/dim]")
        q = asyncio.run(query_by_hash(state.env, 2000))
        console.print(f"[dim]• database adapter at 6000 events/s for {args.seconds:.0f}s[/dim]")
        tput, lags, missing = asyncio.run(adapter_at_fixed_rate(state.env, 6000, args.seconds))
    finally:
        down(state_path)
    b3 = blake3_1mib()
    table = Table(title="bridge nodes: targets on this machine (everything colocated)")
    for col in ("measure", "value", "target", "met"):
        table.add_column(col)

    def row(name: str, value: float, unit: str, target: float, below: bool = True) -> None:
        met = value < target if below else value >= target
        table.add_row(name, f"{value:,.1f} {unit}", f"{'<' if below else '≥'} {target:,.0f} {unit}",
                      "[green]yes[/]" if met else "[red]no[/]")

    row("nodes up: ready", ready_s, "s", 10)
    row(f"workflow end to end p99 @{args.rate:.0f}/s (n={len(wf)}, lost {wf_failed})", pct(wf, 99), "ms", 100)
    table.add_row("  p50 / p95", f"{pct(wf, 50):.1f} / {pct(wf, 95):.1f} ms", "", "")
    row("query by hash p99", pct(q, 99), "ms", 5)
    row(f"database adapter throughput (missing {missing})", tput, "events/s", 5000, below=False)
    row("database adapter lag p95", pct(lags, 95), "ms", 100)
    row("BLAKE3 of 1 MiB (median)", statistics.median(b3), "ms", 2)
    console.print(table)


if __name__ == "__main__":
    main()
