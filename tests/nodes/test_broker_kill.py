"""The broker is SIGKILLed mid-flow and restarted: every acknowledged workflow completes, nothing lost or doubled.

This test runs on a stack of its own, because it takes the broker away.
"""
from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from stack.broker_gate import BrokerGate
from stack.embedded import StackOptions, down, up
from stack.processes import launch, process_part
from stack.state import StateFile


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory):
    state_path = str(tmp_path_factory.mktemp("kill-stack") / "stack.json")
    state = up(StackOptions(state_path=state_path, heartbeat_interval_s=1.0))
    try:
        yield state_path, state
    finally:
        down(state_path)


RECOVERY_WORDS = ("incarnation", "reachable", "epoch", "rebuilding", "replaying")


def node_warnings(state, nodes=("orchestrator", "reducer", "database-adapter"), lines: int = 15) -> str:
    """The nodes' last warnings and recovery steps, and the proxy's and broker's last lines: why a run went wrong.

    A node that never logged "broker reachable again" did not see the broker come back: then the
    proxy's and the broker's own logs say whether the broker answered at all.
    """
    out = []
    for name in nodes:
        log = Path(state.parts[name].launch.log)
        notable = [line[:600] for line in log.read_text(errors="replace").splitlines()
                   if '"warning"' in line or ('"error"' in line and "aiokafka" not in line)
                   or any(word in line for word in RECOVERY_WORDS)]
        out.append(f"--- {name}\n" + "\n".join(notable[-lines:]))
    for name in ("proxy", "broker"):
        part = state.parts.get(name)
        if part is not None and part.launch is not None and part.launch.log:
            tail = Path(part.launch.log).read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {name} ({part.launch.log})\n" + "\n".join(line[:600] for line in tail))
    return "\n".join(out)


def kill_and_restart_broker(state_path: str, down_for_s: float) -> None:
    """As the chaos module does it: a SIGKILL, then a start with the topics in place (stack.broker_gate)."""
    state_file = StateFile(state_path)
    stack = state_file.read()
    part = stack.parts["broker"]
    part.process().send_signal(signal.SIGKILL)
    time.sleep(down_for_s)
    proc = BrokerGate.of(stack, part).reopen(lambda: launch(part.launch))
    with state_file.update() as state:
        state.parts["broker"] = process_part("broker", part.address, part.health, part.launch, proc, **part.extra)


async def test_broker_sigkill_mid_flow_loses_nothing(own_stack):
    state_path, state = own_stack
    orchestrator = state.env["ORCHESTRATOR_URL"]
    namespace = f"kill-{uuid.uuid4().hex[:6]}"
    accepted: list[uuid.UUID] = []
    refused = 0

    async def load(session: aiohttp.ClientSession, seconds: float) -> None:
        nonlocal refused
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                async with session.post(f"{orchestrator}/workflows",
                                        json={"content": f"c {uuid.uuid4()}", "namespace": namespace}) as resp:
                    if resp.status == 202:
                        accepted.append(uuid.UUID((await resp.json())["workflow_id"]))
                    else:
                        refused += 1
            except aiohttp.ClientError:
                refused += 1
            await asyncio.sleep(0.02)

    async with aiohttp.ClientSession() as session:
        loader = asyncio.create_task(load(session, 4.0))
        await asyncio.sleep(1.0)
        await asyncio.to_thread(kill_and_restart_broker, state_path, 1.0)
        await loader

    assert len(accepted) > 20 and refused == 0  # the orchestrator accepts while the broker is away (outbox)
    pool = await asyncpg.create_pool(state.env["DATABASE_URL"], min_size=1, max_size=2)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = await pool.fetchval(
                "SELECT count(*) FROM workflow_executions WHERE namespace = $1 AND state = 'completed'", namespace)
            logged = await pool.fetchval(
                "SELECT count(*) FROM event_logs WHERE namespace = $1 AND topic = 'workflow-events.v1'", namespace)
            if done == len(accepted) and logged >= 5 * len(accepted):
                break
            await asyncio.sleep(0.2)
        rows = await pool.fetch(
            "SELECT workflow_id, state, events, out_of_order FROM workflow_executions WHERE namespace = $1", namespace)
        by_id = {r["workflow_id"]: r for r in rows}
        lost = [w for w in accepted if w not in by_id or by_id[w]["state"] != "completed"]
        assert not lost, f"{len(lost)} of {len(accepted)} acknowledged workflows never completed\n{node_warnings(state)}"
        assert set(by_id) == set(accepted), "unexpected workflows stored"
        # every workflow event applied exactly once, in order
        assert all(r["events"] == 5 and r["out_of_order"] == 0 for r in rows), [
            dict(r) for r in rows if r["events"] != 5 or r["out_of_order"]][:3]
        logged = await pool.fetchval(
            "SELECT count(*) FROM event_logs WHERE namespace = $1 AND topic = 'workflow-events.v1'", namespace)
        assert logged == 5 * len(accepted)
        totals = await pool.fetchrow("SELECT * FROM bridge_states WHERE namespace = $1", namespace)
        assert totals["workflows_started"] == totals["workflows_completed"] == len(accepted)
    finally:
        await pool.close()


async def test_an_observer_that_watched_the_broker_die_sees_its_new_incarnation(own_stack):
    """The harness's result observer asks for the broker's incarnation all through a kill; afterwards it must
    read the new one (a flagship run once timed out every result for the rest of the run when it did not)."""
    from harness.aio import bridge
    from harness.kafka import Observer
    from nodes.bus import IncarnationReader

    state_path, state = own_stack
    bootstrap = state.env["KAFKA_BOOTSTRAP_SERVERS"]
    observer = Observer(bridge(), bootstrap, ["workflow-events.v1"], lambda raw: None,
                        lambda: IncarnationReader(bootstrap, "test-observer"))
    try:
        assert not await observer._broker_restarted()  # learns the first incarnation
        first = observer._incarnation
        assert first is not None
        killer = asyncio.create_task(asyncio.to_thread(kill_and_restart_broker, state_path, 1.5))
        restarted = False
        for _ in range(120):  # every half second, through the kill and after it: at most a minute
            observer._checked_at = 0.0
            restarted = await observer._broker_restarted()
            if restarted:
                break
            await asyncio.sleep(0.5)
        await killer
        assert restarted, f"the observer never saw the new incarnation\n{node_warnings(state)}"
        assert observer._incarnation != first
    finally:
        await observer.stop()
