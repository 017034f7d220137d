"""The topic faults of the chaos module against the running stack: `inject` and `replay` (chaos/targets/topic.py).

Run as a user runs them, through an experiment and the chaos runner. Every
injected message is accounted for at its topic, partition and offset, as the
database adapter (which consumes every topic) left it: dead-lettered with the
fault's id in its headers, or applied (logged), or, for a duplicate, taken once.
A replayed window changes nothing: each event is still applied once, in order.
"""
from __future__ import annotations

import asyncio
import time
import uuid

import orjson

from chaos.experiment import parse
from chaos.runner import run_experiment
from nodes.config import GROUP_DB_ADAPTER
from rundir.journal import FaultJournal

WORKFLOWS = "workflow-events.v1"


def experiment(fault: str, parameters: dict) -> str:
    return f"""
title: topic {fault}
method:
  - {{name: {fault}, fault: {fault}, target: {WORKFLOWS}, target_kind: topic, parameters: {orjson.dumps(parameters).decode()}}}
"""


async def start_workflows(http, urls, namespace: str, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        async with http.post(f"{urls['ORCHESTRATOR_URL']}/workflows",
                             json={"content": f"topic faults {uuid.uuid4()}", "namespace": namespace}) as resp:
            assert resp.status == 202, await resp.text()
            ids.append((await resp.json())["workflow_id"])
    return ids


async def completed(wait_db, namespace: str, n: int) -> None:
    await wait_db("SELECT count(*) FROM workflow_executions WHERE namespace = $1 AND state = 'completed'", namespace,
                  expect=lambda v: v == n, timeout=30)


async def fate(db, fault_id: str, message: dict) -> str:
    """What the database adapter did with one injected message."""
    where = (WORKFLOWS, message["partition"], message["offset"])
    letters = await db.fetch('SELECT class, headers FROM dead_letters WHERE consumer = $1 AND topic = $2'
                             ' AND partition = $3 AND "offset" = $4', GROUP_DB_ADAPTER, *where)
    if letters:
        marked = all(orjson.loads(r["headers"]).get("bridgestorm-injection") == fault_id for r in letters)
        return "dead-lettered" if len(letters) == 1 and marked else f"dead-lettered {len(letters)} times ({letters})"
    if await db.fetchval('SELECT count(*) FROM event_logs WHERE topic = $1 AND partition = $2 AND "offset" = $3',
                         *where):
        return "applied"
    if message["event_id"] and await db.fetchval("SELECT count(*) FROM event_logs WHERE event_id = $1",
                                                 uuid.UUID(message["event_id"])) == 1:
        return "taken once"  # an event id logged before, at another offset: a duplicate
    return "unaccounted"


async def test_inject_publishes_the_catalogue_and_every_message_is_dead_lettered_or_applied(
        http, urls, db, wait_db, stack_state_path, tmp_path):
    namespace = f"inject-{uuid.uuid4().hex[:6]}"
    await completed(wait_db, namespace, len(await start_workflows(http, urls, namespace, 2)))
    params = {"classes": "malformed,not-object,missing-field,wrong-type,duplicate", "seed": 3}
    result = await asyncio.to_thread(run_experiment, parse(experiment("inject", params)), tmp_path / "run",
                                     state_path=stack_state_path, log=lambda m: None)
    assert result.status == "completed", result
    (line,) = FaultJournal(tmp_path / "run").read()
    seen = line["observed"]
    assert line["outcome"] == "healed" and seen["topic"] == WORKFLOWS
    assert set(seen["by_class"]) == set(params["classes"].split(",")) and seen["by_class"]["duplicate"] == 1
    assert seen["sent"] == sum(seen["by_class"].values()) == len(seen["messages"]) > 20

    deadline = time.monotonic() + 30
    fates = {}
    while time.monotonic() < deadline:
        fates = {m["label"]: await fate(db, line["fault_id"], m) for m in seen["messages"]}
        if "unaccounted" not in fates.values():
            break
        await asyncio.sleep(0.5)
    wrong = {label: f for label, f in fates.items() if f not in ("dead-lettered", "applied", "taken once")}
    assert not wrong, wrong
    assert all(fates[label] == "dead-lettered" for label in fates if label.startswith(("malformed", "not-object")))
    # the duplicate is the newest real event again: logged only where it first came
    assert [f for label, f in fates.items() if label.startswith("duplicate")] == ["taken once"]
    # the real traffic goes on
    await completed(wait_db, namespace + "-after", len(await start_workflows(http, urls, namespace + "-after", 2)))


async def test_replay_of_a_window_is_taken_once_and_in_order(http, urls, db, wait_db, stack_state_path, tmp_path):
    namespace = f"replay-{uuid.uuid4().hex[:6]}"
    ids = await start_workflows(http, urls, namespace, 5)
    await completed(wait_db, namespace, len(ids))
    logged = await db.fetchval("SELECT count(*) FROM event_logs WHERE namespace = $1", namespace)
    result = await asyncio.to_thread(run_experiment, parse(experiment("replay", {"seconds": 60, "limit": 5000})),
                                     tmp_path / "run", state_path=stack_state_path, log=lambda m: None)
    assert result.status == "completed", result
    (line,) = FaultJournal(tmp_path / "run").read()
    assert line["observed"]["sent"] >= 5 * len(ids), line["observed"]
    assert set(line["observed"]["by_class"]) == {"replay"}
    await asyncio.sleep(3)  # the replayed window has been read by now (the fuzz tests see 0.1 s)
    rows = await db.fetch("SELECT events, out_of_order, state FROM workflow_executions WHERE namespace = $1", namespace)
    assert [(r["events"], r["out_of_order"], r["state"]) for r in rows] == [(5, 0, "completed")] * len(ids)
    assert await db.fetchval("SELECT count(*) FROM event_logs WHERE namespace = $1", namespace) == logged
    assert await db.fetchval("SELECT count(*) FROM dead_letters WHERE headers->>'bridgestorm-injection' = $1",
                             line["fault_id"]) == 0
    totals = await db.fetchrow("SELECT * FROM bridge_states WHERE namespace = $1", namespace)
    assert totals["workflows_started"] == totals["workflows_completed"] == len(ids)
