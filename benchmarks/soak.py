"""Order and liveness under repeated broker faults: a soak on a fresh embedded stack.

    .venv/bin/python benchmarks/soak.py --faults 50 [--seed 1] [--json]

Rounds until at least `--faults` broker faults were survived. In each round,
workflow and stamping load runs over HTTP while the chaos runner plays a
seeded random experiment of broker kills, pauses and restarts (the process
target, as every chaos run does it); then the load stops and the soak waits,
at most `--settle` seconds, for every acknowledged workflow to complete and
every acknowledged stamp's event to be logged.

The counts, from the nodes' own tables in PostgreSQL (must all be 0):

- lost: acknowledged workflows (202) that never completed, and acknowledged
  stamps (201) whose METADATA_STAMPED event was never logged;
- out of order: workflow events the reducer applied out of sequence
  (`workflow_executions.out_of_order`, summed);
- duplicated: workflows with more or fewer than their 5 events applied,
  workflows stored that nobody acknowledged, and stamps whose event was
  logged more than once (under different event ids);
- hung: rounds whose experiment did not end by itself within its bound, or
  whose acknowledged work had not settled by `--settle`.

Exit 1 when any count is not 0, or fewer faults than asked were survived.
`tests/nodes/test_soak.py` runs a short form in CI.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field

import aiohttp
import asyncpg

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from chaos.experiment import parse  # noqa: E402
from chaos.runner import run_experiment  # noqa: E402
from stack.embedded import StackOptions, down, up  # noqa: E402

WORKFLOW_EVENTS = 5  # started, three transitions, completed

EXPERIMENT = """
title: soak round {round}
random:
  seed: {seed}
  duration: {seconds}
  interval: [1, 4]
  fault_duration: [0.5, 3]
  faults:
    - {{fault: kill, target: broker, target_kind: process, weight: 2}}
    - {{fault: pause, target: broker, target_kind: process, weight: 2}}
    - {{fault: restart, target: broker, target_kind: process, weight: 1}}
"""


@dataclass
class SoakCounts:
    faults: int = 0  # faults injected and healed
    rounds: int = 0
    workflows: int = 0  # acknowledged
    stamps: int = 0  # acknowledged
    refused: int = 0  # requests the nodes answered with an error (not counted as lost: never acknowledged)
    lost: int = 0
    lost_detail: dict[str, int] = field(default_factory=dict)  # per kind: workflow, stamp
    out_of_order: int = 0
    duplicated: int = 0
    hung: int = 0
    notes: list[str] = field(default_factory=list)

    def failed(self) -> bool:
        return bool(self.lost or self.out_of_order or self.duplicated or self.hung)


class Load:
    """Workflows and stamps over HTTP at a steady pace; remembers what the nodes acknowledged."""

    def __init__(self, env: dict[str, str], namespace: str, per_second: float):
        self.env, self.namespace, self.gap = env, namespace, 1.0 / per_second
        self.workflows: list[uuid.UUID] = []
        self.stamps: list[str] = []
        self.refused = 0

    async def run(self, stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
            await asyncio.gather(
                self._post(session, stop, f"{self.env['ORCHESTRATOR_URL']}/workflows", 202,
                           lambda body: self.workflows.append(uuid.UUID(body["workflow_id"]))),
                self._post(session, stop, f"{self.env['STAMPING_URL']}/stamp", 201,
                           lambda body: self.stamps.append(body["file_hash"])))

    async def _post(self, session: aiohttp.ClientSession, stop: asyncio.Event, url: str, acknowledged: int,
                    remember) -> None:
        """POST a fresh content every `gap` until `stop`; `remember` the body of each acknowledged one."""
        while not stop.is_set():
            try:
                async with session.post(url, json={"content": f"soak {uuid.uuid4()}", "namespace": self.namespace}) as r:
                    if r.status == acknowledged:
                        remember(await r.json())
                    else:
                        self.refused += 1
            except (aiohttp.ClientError, asyncio.TimeoutError):
                self.refused += 1
            await asyncio.sleep(self.gap)


async def outstanding(pool: asyncpg.Pool, namespace: str, workflows: list[uuid.UUID], stamps: list[str]) -> tuple[int, int]:
    """(acknowledged workflows not completed with all their events, acknowledged stamps with no event logged)."""
    done = await pool.fetchval(
        "SELECT count(*) FROM workflow_executions WHERE namespace = $1 AND state = 'completed' AND events >= $2",
        namespace, WORKFLOW_EVENTS)
    # the topic also carries the stamps the orchestrator asks for: count only the load's own
    logged = await pool.fetchval(
        "SELECT count(DISTINCT key) FROM event_logs WHERE namespace = $1 AND topic = 'metadata-stamped.v1'"
        " AND key = ANY($2::text[])", namespace, stamps)
    return max(0, len(workflows) - done), max(0, len(set(stamps)) - logged)


async def count(pool: asyncpg.Pool, namespace: str, load: Load, counts: SoakCounts) -> None:
    rows = await pool.fetch(
        "SELECT workflow_id, state, events, out_of_order FROM workflow_executions WHERE namespace = $1", namespace)
    by_id = {r["workflow_id"]: r for r in rows}
    acknowledged = set(load.workflows)
    lost_workflows = sum(1 for w in acknowledged if w not in by_id or by_id[w]["state"] != "completed")
    counts.out_of_order = sum(r["out_of_order"] for r in rows)
    for r in [r for r in rows if r["out_of_order"]][:3]:  # what the log says about the first few
        logged = await pool.fetch(
            "SELECT payload->>'sequence' AS seq, partition, \"offset\", inserted_at FROM event_logs"
            " WHERE namespace = $1 AND topic = 'workflow-events.v1' AND payload->>'workflow_id' = $2"
            " ORDER BY \"offset\"", namespace, str(r["workflow_id"]))
        sent = await pool.fetch("SELECT id, attempts, sent_at, confirmed_at FROM outbox WHERE key = $1 ORDER BY id",
                                str(r["workflow_id"]))
        counts.notes.append(
            f"workflow {r['workflow_id']} applied out of order: logged (sequence@partition:offset) "
            + ", ".join(f"{x['seq']}@{x['partition']}:{x['offset']}" for x in logged)
            + "; outbox (id attempts) " + ", ".join(f"{x['id']} {x['attempts']}" for x in sent))
    counts.duplicated = sum(1 for r in rows if r["workflow_id"] in acknowledged and r["state"] == "completed"
                            and r["events"] != WORKFLOW_EVENTS)
    counts.duplicated += len(set(by_id) - acknowledged)
    logged = {r["key"]: r["n"] for r in await pool.fetch(
        "SELECT key, count(*) AS n FROM event_logs WHERE namespace = $1 AND topic = 'metadata-stamped.v1' GROUP BY key",
        namespace)}
    missing = sorted(h for h in set(load.stamps) if h not in logged)
    lost_stamps = len(missing)
    if missing:
        counts.notes.append(f"stamps acknowledged whose event was never logged: {', '.join(missing[:5])}"
                            + (" ..." if len(missing) > 5 else ""))
    lost_ids = sorted(str(w) for w in acknowledged if w not in by_id or by_id[w]["state"] != "completed")
    if lost_ids:
        counts.notes.append(f"workflows acknowledged and never completed: {', '.join(lost_ids[:5])}"
                            + (" ..." if len(lost_ids) > 5 else ""))
    counts.lost_detail = {"workflow": lost_workflows, "stamp": lost_stamps}
    counts.lost = lost_workflows + lost_stamps
    counts.duplicated += sum(1 for n in logged.values() if n > 1)


async def soak(env: dict[str, str], state_path: str, run_dir: str, faults: int, seed: int, round_s: float,
               settle_s: float, per_second: float, progress=print) -> SoakCounts:
    namespace = f"soak-{uuid.uuid4().hex[:8]}"
    counts = SoakCounts()
    load = Load(env, namespace, per_second)
    pool = await asyncpg.create_pool(env["DATABASE_URL"], min_size=1, max_size=2)
    try:
        while counts.faults < faults:
            counts.rounds += 1
            stop = asyncio.Event()
            loader = asyncio.create_task(load.run(stop))
            exp = parse(EXPERIMENT.format(round=counts.rounds, seed=seed * 1000 + counts.rounds, seconds=round_s),
                        f"soak round {counts.rounds}")
            halt = threading.Event()
            chaos = asyncio.create_task(asyncio.to_thread(
                run_experiment, exp, os.path.join(run_dir, f"round-{counts.rounds:02d}"), state_path=state_path,
                stop=halt, log=lambda message: None))
            done, _ = await asyncio.wait({chaos}, timeout=round_s + 60)
            if not done:
                halt.set()
                counts.hung += 1
                counts.notes.append(f"round {counts.rounds}: the experiment did not end within {round_s + 60:.0f} s")
                await chaos
            result = chaos.result()
            healed = sum(1 for f in result.faults if f.outcome == "healed")
            counts.faults += healed
            if result.status not in ("completed", "deviated") or healed < len(result.faults):
                counts.notes.append(f"round {counts.rounds}: experiment {result.status}; "
                                    f"{len(result.faults) - healed} of {len(result.faults)} faults not healed "
                                    f"{result.error or ''}".strip())
            stop.set()
            await loader
            deadline = time.monotonic() + settle_s
            left = await outstanding(pool, namespace, load.workflows, load.stamps)
            while any(left) and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                left = await outstanding(pool, namespace, load.workflows, load.stamps)
            if any(left):
                counts.hung += 1
                counts.notes.append(f"round {counts.rounds}: {left[0]} workflows and {left[1]} stamps "
                                    f"still outstanding {settle_s:.0f} s after the load stopped")
            progress(f"round {counts.rounds}: {healed} faults healed ({counts.faults} in all), "
                     f"{len(load.workflows)} workflows and {len(load.stamps)} stamps acknowledged so far, "
                     f"outstanding after the settle: {left[0]} workflows, {left[1]} stamps")
        counts.workflows, counts.stamps, counts.refused = len(load.workflows), len(load.stamps), load.refused
        await count(pool, namespace, load, counts)
    finally:
        await pool.close()
    return counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--faults", type=int, default=50, help="broker faults to survive (default %(default)s)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the fault timeline (default %(default)s)")
    ap.add_argument("--round-seconds", type=float, default=30.0, help="length of one round's experiment (default %(default)s)")
    ap.add_argument("--settle", type=float, default=90.0,
                    help="seconds the acknowledged work may take to settle after a round (default %(default)s)")
    ap.add_argument("--rate", type=float, default=8.0,
                    help="workflows per second, and as many stamps (default %(default)s)")
    ap.add_argument("--json", action="store_true", help="print the counts as one JSON object at the end")
    args = ap.parse_args()
    for name in ("faults", "round_seconds", "settle", "rate"):
        if getattr(args, name) <= 0:
            ap.error(f"--{name.replace('_', '-')} must be more than 0")
    work = tempfile.mkdtemp(prefix="bridgestorm-soak-")
    state_path = os.path.join(work, "stack.json")
    say = (lambda m: print(m, file=sys.stderr, flush=True)) if args.json else (lambda m: print(m, flush=True))
    say(f"soak: starting an embedded stack ({state_path})")
    state = up(StackOptions(state_path=state_path, heartbeat_interval_s=1.0))
    started = time.monotonic()
    try:
        counts = asyncio.run(soak(state.env, state_path, os.path.join(work, "chaos"), args.faults, args.seed,
                                  args.round_seconds, args.settle, args.rate, say))
    finally:
        down(state_path)
    took = time.monotonic() - started
    if args.json:
        print(json.dumps({**asdict(counts), "seconds": round(took, 1), "seed": args.seed}))
    else:
        print(f"survived {counts.faults} broker faults in {counts.rounds} rounds ({took:.0f} s, seed {args.seed}); "
              f"{counts.workflows} workflows and {counts.stamps} stamps acknowledged, {counts.refused} refused")
        print(f"lost {counts.lost} ({', '.join(f'{k} {v}' for k, v in counts.lost_detail.items())}), out of order {counts.out_of_order}, duplicated {counts.duplicated}, "
              f"hung {counts.hung}")
        for note in counts.notes:
            print(f"  {note}")
    return 1 if counts.failed() or counts.faults < args.faults else 0


if __name__ == "__main__":
    sys.exit(main())
