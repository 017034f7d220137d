"""`python -m nodes demo`: one workflow, one stamp and one registration, driven through the bus and shown.

The smallest end-to-end check of a bridge: it starts the embedded stack
(unless one is given), submits a workflow, stamps content, introspects a
simulated node, waits for each result event on the bus (matched by
correlation id), reads what PostgreSQL stored, writes a run directory with
samples, ledger and truth, renders the HTML report, and stops what it started.
"""
from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import aiohttp
import asyncpg
from aiokafka import AIOKafkaProducer

from nodes.config import Topics
from nodes.envelope import EventType, new_envelope
from nodes.watch import BusWatcher

Say = Callable[[str], None]


async def drive(env: dict[str, str], say: Say) -> tuple[list[dict], list[dict], list[dict]]:
    """Run the three flows; returns samples, ledger and truth rows (docs/run-directory.md)."""
    topics = Topics()
    process = f"demo:{os.getpid()}"
    samples: list[dict] = []
    ledger: list[dict] = []
    waiter = BusWatcher(env["KAFKA_BOOTSTRAP_SERVERS"], [topics.workflow, topics.stamped, topics.registered])
    await waiter.start()
    producer = AIOKafkaProducer(bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"], acks="all")
    await producer.start()

    def sample(type_: str, name: str, started: float, t0: float, ok: bool, key: str, error: str | None = None):
        samples.append(dict(ts_intended=None, ts_start=started, type=type_, name=name,
                            latency_ms=(time.perf_counter() - t0) * 1000, ok=ok, bytes=0, error=error, key=key,
                            process=process))

    try:
        async with aiohttp.ClientSession() as http:
            # a workflow: 202, then WORKFLOW_COMPLETED on the bus
            started, t0 = time.time(), time.perf_counter()
            async with http.post(f"{env['ORCHESTRATOR_URL']}/workflows",
                                 json={"content": "bridgestorm demo", "namespace": "demo"}) as resp:
                accepted = await resp.json()
            sample("http", "POST /workflows", started, t0, resp.status == 202, accepted.get("workflow_id"))
            ledger.append(dict(kind="workflow", item_id=accepted["workflow_id"], namespace="demo", ts_sent=started,
                               acked=resp.status == 202, process=process))
            done = await waiter.wait(uuid.UUID(accepted["correlation_id"]), EventType.WORKFLOW_COMPLETED)
            sample("e2e", "workflow→completed", started, t0, True, accepted["correlation_id"])
            say(f"workflow {accepted['workflow_id']} completed in {samples[-1]['latency_ms']:.1f} ms "
                f"(stamp {done.payload['stamp_hash'][:16]}…)")

            # a stamp: 201, then METADATA_STAMPED on the bus
            correlation = uuid.uuid4()
            content = f"demo content {uuid.uuid4()}"
            started, t0 = time.time(), time.perf_counter()
            async with http.post(f"{env['STAMPING_URL']}/stamp", headers={"X-Correlation-ID": str(correlation)},
                                 json={"content": content, "namespace": "demo"}) as resp:
                stamp = await resp.json()
            sample("http", "POST /stamp", started, t0, resp.status == 201, stamp.get("file_hash"))
            ledger.append(dict(kind="stamp", item_id=f"demo:{stamp['file_hash']}", namespace="demo", ts_sent=started,
                               acked=resp.status == 201, process=process))
            await waiter.wait(correlation, EventType.METADATA_STAMPED)
            sample("e2e", "stamp→stamped", started, t0, True, str(correlation))
            say(f"stamp {stamp['file_hash'][:16]}… stored and published in {samples[-1]['latency_ms']:.1f} ms")

        # a registration: a simulated node introspects through the bus
        node_id = f"demo-node-{uuid.uuid4().hex[:8]}"
        intro = new_envelope(EventType.NODE_INTROSPECTION,
                             {"node_id": node_id, "node_type": "simulated", "capabilities": {"demo": True},
                              "endpoints": {}}, source_node_id=node_id, namespace="demo")
        started, t0 = time.time(), time.perf_counter()
        await producer.send_and_wait(topics.introspection, intro.to_bytes(), key=node_id.encode())
        sample("kafka", EventType.NODE_INTROSPECTION.value, started, t0, True, str(intro.event_id))
        ledger.append(dict(kind="introspection", item_id=node_id, namespace="demo", ts_sent=started, acked=True,
                           process=process))
        await waiter.wait(intro.correlation_id, EventType.NODE_REGISTERED)
        sample("e2e", "introspection→registered", started, t0, True, str(intro.correlation_id))
        say(f"node {node_id} registered in {samples[-1]['latency_ms']:.1f} ms")
    finally:
        await producer.stop()
        await waiter.stop()
    truth = await read_truth(env["DATABASE_URL"], ledger)
    return samples, ledger, truth


async def read_truth(database_url: str, ledger: list[dict]) -> list[dict]:
    """What PostgreSQL stored for each item of the ledger (after a short drain)."""
    await asyncio.sleep(1.0)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    rows: list[dict] = []
    try:
        for item in ledger:
            if item["kind"] == "workflow":
                row = await pool.fetchrow(
                    "SELECT namespace, (SELECT count(*) FROM event_logs e WHERE e.event_type = 'WORKFLOW_COMPLETED'"
                    " AND e.payload->>'workflow_id' = $1) AS n FROM workflow_executions"
                    " WHERE workflow_id = $1::uuid AND state = 'completed'", item["item_id"])
                source = "workflow_executions"
            elif item["kind"] == "stamp":
                namespace, _, file_hash = item["item_id"].partition(":")
                row = await pool.fetchrow("SELECT namespace, count(*) AS n FROM metadata_stamps"
                                          " WHERE namespace = $1 AND file_hash = $2 GROUP BY namespace",
                                          namespace, file_hash)
                source = "metadata_stamps"
            else:
                row = await pool.fetchrow("SELECT namespace, 1 AS n FROM node_registrations WHERE node_id = $1",
                                          item["item_id"])
                source = "node_registrations"
            if row is not None:
                rows.append(dict(kind=item["kind"], item_id=item["item_id"], namespace=row["namespace"],
                                 count=int(row["n"]), source=source))
    finally:
        await pool.close()
    return rows


def run_demo(reports_dir: Path, say: Say, state_path: str | None = None) -> int:
    """Start the stack, drive the flows, write `reports/<run-id>/`, stop the stack; the exit code."""
    from analysis.report import build_report
    from rundir.write import write_ledger, write_run_info, write_samples, write_truth
    from nodes.stack.embedded import StackOptions, down, up

    run_id = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S") + "-demo"
    run_dir = reports_dir / run_id
    say("starting the embedded stack")
    started = time.time()
    state = up(StackOptions(state_path=state_path or str(reports_dir / f".{run_id}.stack.json")), progress=say)
    try:
        samples, ledger, truth = asyncio.run(drive(state.env, say))
    finally:
        down(state_path or str(reports_dir / f".{run_id}.stack.json"), progress=lambda m: None)
        say("stack stopped")
    write_run_info(run_dir, {"run_id": run_id, "scenario": "demo", "started_at": started, "ended_at": time.time(),
                             "arguments": {}, "stack": {"mode": "embedded", **state.env}})
    write_samples(run_dir, samples)
    write_ledger(run_dir, ledger)
    write_truth(run_dir, truth)
    verdict = build_report(run_dir, thresholds=None)
    verdict.print()
    return 0 if all(s["ok"] for s in samples) and len(truth) == len(ledger) else 1
