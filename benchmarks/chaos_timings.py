"""Fault inject and heal times against the 100 ms target (issue 3), on a real embedded stack.

Why: a fault that is slow to inject or heal smears the moment it starts or
ends, and recovery is measured from the heal. The numbers are the
journal's own `inject_ms` and `heal_ms`, taken by `chaos.runner.FaultRun`
(the code every run uses), so this prints what a run records: the action
alone (signal sent, toxic created, proxy disabled, Docker call returned).
How long the target took to go down and to answer again is printed beside
them (`down_after_s`, `answered_after_s`, medians); it is the target's
time, not the fault's.

Faults, `--repeats` times each, every repetition from a healthy target:

- process pause: SIGSTOP / SIGCONT of the stack's broker process
- process kill: SIGKILL / restart from its launch spec
- proxy latency: a 100 ms latency toxic added / removed on the broker link
- proxy down: the broker proxy disabled / enabled
- container pause: docker pause / unpause of a broker container, only when
  a Docker engine answers

    .venv/bin/python benchmarks/chaos_timings.py [--repeats 20]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from chaos.active import ActiveFaults  # noqa: E402
from chaos.kinds import Resolver  # noqa: E402
from rundir.journal import FaultJournal  # noqa: E402
from chaos.probes import wait_for  # noqa: E402
from chaos.runner import FaultRun  # noqa: E402
from stack.embedded import StackOptions, down, up  # noqa: E402

TARGET_MS = 100.0
console = Console()


@dataclass
class Case:
    label: str
    kind: str
    action: str
    target: str
    parameters: dict = field(default_factory=dict)
    hold_s: float = 0.2  # how long each fault stays before its heal


def measure_case(case: Case, resolver: Resolver, work: Path, repeats: int) -> dict:
    """Inject, hold, heal, wait until the target answers; `repeats` times. Medians and maxima."""
    journal = FaultJournal(work / "run")
    active = ActiveFaults(work / "chaos-active.json")
    observed: list[dict] = []
    for i in range(repeats):
        run = FaultRun(f"bench-{case.kind}-{case.action}-{i}", case.label, case.kind, case.action, case.target,
                       case.parameters, resolver, journal, active, log=lambda line: None)
        if not run.inject():
            raise RuntimeError(f"{case.label}: {run.record.error}")
        time.sleep(case.hold_s)
        run.heal()
        record = run.finish()  # waits (bounded) until the target answers again
        if record.outcome != "healed":
            raise RuntimeError(f"{case.label}: {record.outcome}: {record.error}")
        if wait_for(run.target.answers, 30) is None:
            raise RuntimeError(f"{case.label}: the target did not answer again within 30 s")
        observed.append(record.observed)
    return summarize(case.label, observed)


def summarize(label: str, observed: list[dict]) -> dict:
    def values(key: str) -> list[float]:
        return [o[key] for o in observed if o.get(key) is not None]

    inject, heal = values("inject_ms"), values("heal_ms")
    down_s, up_s = values("down_after_s"), values("answered_after_s")
    row = {
        "fault": label, "repeats": len(observed),
        "inject_ms_median": statistics.median(inject), "inject_ms_max": max(inject),
        "heal_ms_median": statistics.median(heal), "heal_ms_max": max(heal),
        "down_after_s_median": statistics.median(down_s) if down_s else None,
        "answered_after_s_median": statistics.median(up_s) if up_s else None,
    }
    row["met"] = row["inject_ms_max"] < TARGET_MS and row["heal_ms_max"] < TARGET_MS
    return row


def docker_client():
    """A Docker client when an engine answers, else None."""
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
        return client
    except Exception:  # noqa: BLE001 - no engine: the container case is skipped
        return None


def measure(repeats: int, progress=lambda line: None) -> tuple[list[dict], str | None]:
    """All cases; returns the rows and why the container case was skipped (None if it ran)."""
    work = Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    state_path = str(work / "stack.json")
    progress("starting the embedded stack (broker, PostgreSQL, proxy server)")
    up(StackOptions(state_path=state_path, nodes=[]))
    rows = []
    try:
        resolver = Resolver(state_path)
        cases = [
            Case("process pause", "process", "pause", "broker"),
            Case("process kill", "process", "kill", "broker", {"signal": "SIGKILL"}),
            Case("proxy latency", "proxy", "latency", "broker",
                 {"latency": 100, "jitter": 0, "stream": "downstream", "toxicity": 1.0}),
            Case("proxy down", "proxy", "down", "broker"),
        ]
        for case in cases:
            progress(case.label)
            rows.append(measure_case(case, resolver, work, repeats))
    finally:
        down(state_path)
    client = docker_client()
    if client is None:
        return rows, "no Docker engine answers"
    from stack.processes import free_port
    from stack.docker_broker import BrokerContainer

    progress("container pause")
    broker = BrokerContainer.start(port=free_port(), client=client)
    try:
        case = Case("container pause", "container", "pause", broker.name)
        rows.append(measure_case(case, Resolver(state_path), work, repeats))
    finally:
        broker.remove()
    return rows, None


def _s(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


ACTIONS = {"process pause": "SIGSTOP / SIGCONT", "process kill": "SIGKILL / restart",
           "proxy latency": "toxic add / remove", "proxy down": "disable / enable",
           "container pause": "docker pause / unpause"}


def print_table(rows: list[dict], skipped: str | None) -> None:
    repeats = rows[0]["repeats"] if rows else 0
    table = Table(title=f"fault inject and heal: the action alone, ms, median (max) of {repeats}; target < 100 ms")
    for col in ("fault", "inject / heal", "inject ms", "heal ms", "down s", "back s", "target"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["fault"], ACTIONS[r["fault"]],
                      f"{r['inject_ms_median']:.1f} ({r['inject_ms_max']:.1f})",
                      f"{r['heal_ms_median']:.1f} ({r['heal_ms_max']:.1f})",
                      _s(r["down_after_s_median"]), _s(r["answered_after_s_median"]),
                      "met" if r["met"] else "MISSED")
    if skipped:
        table.add_row("container pause", ACTIONS["container pause"], "—", "—", "—", "—", "skipped", end_section=True)
        table.caption = f"container pause skipped: {skipped}"
    console.print(table)
    console.print("down s / back s: median seconds until the target stopped answering after the inject / "
                  "answered again after the heal (the target's time, not the fault's; — not observed)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="repetitions of each fault")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    rows, skipped = measure(args.repeats, progress=lambda line: console.print(f"[dim]• {line}[/dim]"))
    print_table(rows, skipped)
    return 1 if args.check and not all(r["met"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
