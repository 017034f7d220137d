"""The Chaos tab's controls: which faults can run on this stack, inject one, heal one or all, the journal, the plan.

The catalogue is the faults of the run's experiment (``--chaos`` or the
form's), else of every shipped experiment. Each is offered only when this
stack can take it: a container fault needs a Docker engine that answers and
a container of that name; a proxy fault a Toxiproxy with that link; a
process fault a process part the stack started; otherwise it is shown
disabled with the reason. Every injection from the UI is a one-fault
experiment of its own (chaos/runner.py), so it is journaled, bounded by its
duration and healed like any other; healing one stops its experiment.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from harness.context import RunContext
from rundir.journal import FaultJournal

log = logging.getLogger("bridgestorm.webui")
REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = REPO / "chaos" / "experiments"
DEFAULT_DURATION_S = 30.0  # a fault of the catalogue that has no duration of its own is healed after this
DOCKER_CHECK_EVERY_S = 10.0


def catalogue(experiment_ref: str | None) -> list[dict[str, Any]]:
    """Faults one can inject: those of the run's experiment, else those of every shipped experiment."""
    from chaos.experiment import load

    files = [Path(experiment_ref)] if experiment_ref else sorted(EXPERIMENTS.glob("*.yaml"))
    faults: list[dict[str, Any]] = []
    seen: set[str] = set()
    for f in files:
        try:
            exp = load(f)
        except Exception:  # noqa: BLE001 - a broken file is not offered (preflight names its problems)
            continue
        for entry in exp.timeline or []:
            fault = entry.model_dump(exclude={"at", "repeat"})
            key = json.dumps(fault, sort_keys=True, default=str)
            if key in seen:
                continue
            seen.add(key)
            faults.append({"id": f"{f.stem}:{entry.label()}", "label": f"{entry.label()} ({f.stem})",
                           "fault": fault})
    return faults


class Availability:
    """Whether a fault can run on the run's stack, and why not (checked on each catalogue request)."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self._docker: tuple[float, str | None] | None = None

    def reason(self, fault: dict[str, Any]) -> str | None:
        """None when it can run here, else a sentence that says why not."""
        from chaos.kinds import Resolver
        from chaos.targets import ChaosRefused

        resolver = Resolver(self.ctx.stack_state or None, self.ctx.env.get("TOXIPROXY_URL"))
        target = str(fault.get("target") or "")
        try:
            kind = resolver.kind_of(target, str(fault.get("target_kind") or "auto"))
        except ChaosRefused as exc:
            return str(exc)
        part = resolver.part(target)
        if kind == "container":
            down = self.docker_down()
            if down:
                return f"container faults need Docker, and it does not answer here ({down})"
            if part is None or part.kind != "container":
                return f"this stack has no container {target!r} (it runs {self._parts_of('process')})"
        elif kind == "process" and (part is None or part.kind != "process"):
            return f"this stack started no process {target!r}"
        elif kind == "proxy":
            url = resolver.proxy_url()
            if not url:
                return "this stack has no Toxiproxy"
            try:
                from stack.proxy.client import ToxiproxyClient

                ToxiproxyClient(url).proxy(target)
            except Exception as exc:  # noqa: BLE001 - the reason is shown, nothing is injected
                return f"Toxiproxy has no link {target!r} ({exc})"
        elif kind == "topic" and not self.ctx.env.get("KAFKA_BOOTSTRAP_SERVERS"):
            return "the stack's broker address is unknown"
        return None

    def docker_down(self) -> str | None:
        """Why Docker does not answer (None: it does); asked at most every DOCKER_CHECK_EVERY_S."""
        now = time.monotonic()
        if self._docker is None or now - self._docker[0] > DOCKER_CHECK_EVERY_S:
            try:
                import docker

                client = docker.from_env(timeout=2)
                try:
                    client.ping()
                finally:
                    client.close()
                self._docker = (now, None)
            except Exception as exc:  # noqa: BLE001 - no engine, no socket, no permission: all say "no"
                self._docker = (now, type(exc).__name__)
        return self._docker[1]

    def _parts_of(self, kind: str) -> str:
        from stack.state import StateFile

        try:
            names = sorted(p.name for p in StateFile(self.ctx.stack_state).read().parts.values() if p.kind == kind)
        except Exception:  # noqa: BLE001
            names = []
        return f"the processes {', '.join(names)}" if names else "no containers"


class ChaosControl:
    """Injects single faults on request and heals one or all of them."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.injected: list[dict[str, Any]] = []  # {"id", "name", "action", "target", "at", "handle"}
        self._n = 0

    @property
    def active_path(self) -> str:
        return str(Path(self.ctx.run_dir) / "chaos-active.json")

    def inject(self, fault: dict[str, Any]) -> dict[str, Any]:
        from chaos.experiment import Experiment, TimelineEntry
        from chaos.runner import start_experiment

        if not self.ctx.started_at or self.ctx.ended_at:
            raise RuntimeError("no load is running: press Start first (a fault nothing measures tests nothing)")
        entry = TimelineEntry(**{**fault, "at": 0, "duration": fault.get("duration") or DEFAULT_DURATION_S})
        exp = Experiment(title=f"web UI: {entry.label()}", timeline=[entry])
        handle = start_experiment(exp, self.ctx.run_dir, state_path=self.ctx.stack_state,
                                  toxiproxy_url=self.ctx.env.get("TOXIPROXY_URL"), active_path=self.active_path,
                                  log=lambda m: log.info("chaos: %s", m))
        self._n += 1
        self.injected.append({"id": f"ui-{self._n}", "name": entry.label(), "action": entry.fault,
                              "target": entry.target, "at": time.time(), "handle": handle,
                              "run_dir": self.ctx.run_dir})
        return {"message": f"injecting {entry.label()} (healed after {entry.duration:g} s, or by Heal)",
                "id": f"ui-{self._n}"}

    def heal(self, injection_id: str) -> str:
        for item in self.injected:
            if item["id"] == injection_id:
                item["handle"].stop()
                return f"healed {item['name']}"
        raise KeyError(f"no fault {injection_id!r} was injected from this page")

    def heal_all(self) -> str:
        items, self.injected = self.injected, []
        for item in items:
            item["handle"].stop()
        if self.ctx.chaos is not None:  # the run's own experiment is stopped too: nothing stays injected
            self.ctx.chaos.stop()
        return f"healed everything ({len(items)} injected from this page)"

    def rows(self) -> list[dict[str, Any]]:
        """The journal of this run with live status: active faults first, then what is being injected, then done."""
        rows: list[dict[str, Any]] = []
        for e in active_faults(self.ctx).values():
            rec = e.get("record", e)
            rows.append({"name": rec.get("name"), "action": rec.get("action"), "target": rec.get("target"),
                         "status": "active", "started": fmt_time(rec.get("started_at")), "healed": "",
                         "detail": json.dumps(rec.get("parameters", {}))})
        names = {r["name"] for r in rows}
        journal = FaultJournal(self.ctx.run_dir).read() if self.ctx.run_dir else []
        names |= {j.get("name") for j in journal}
        for item in self.injected:  # asked for, not yet injected (its probes run first)
            if item["run_dir"] == self.ctx.run_dir and item["name"] not in names and item["handle"].running:
                rows.append({"name": item["name"], "action": item["action"], "target": item["target"],
                             "status": "injecting", "started": fmt_time(item["at"]), "healed": "", "detail": ""})
        for j in journal:
            rows.append({"name": j.get("name"), "action": j.get("action"), "target": j.get("target"),
                         "status": j.get("outcome") or "", "started": fmt_time(j.get("started_at")),
                         "healed": fmt_time(j.get("healed_at")), "detail": j.get("error") or _observed(j)})
        return rows

    def healable(self) -> list[dict[str, Any]]:
        """The faults injected from this page that are still running, for their Heal buttons."""
        return [{"id": i["id"], "name": i["name"]} for i in self.injected
                if i["run_dir"] == self.ctx.run_dir and i["handle"].running]


def active_faults(ctx: RunContext) -> dict[str, Any]:
    """The faults on now, of this run: the page's injections (the run directory's active-fault file) and the
    run's own experiment's (the default file, next to the stack state)."""
    from chaos.active import ActiveFaults

    found: dict[str, Any] = {}
    if not ctx.run_dir:
        return found
    for path in (Path(ctx.run_dir) / "chaos-active.json", None):
        try:
            entries = ActiveFaults(path, stack_state=ctx.stack_state or None).all()
        except Exception:  # noqa: BLE001 - the file is being rewritten: next poll
            continue
        journal = Path(ctx.run_dir).resolve()
        found |= {fid: e for fid, e in entries.items()
                  if path is not None or Path(str(e.get("journal") or "")).resolve() == journal}
    return found


def timeline(ctx: RunContext) -> dict[str, Any]:
    """The run's experiment as planned, each fault with its status: done, active, next or planned."""
    if not ctx.experiment_file:
        return {"experiment": None, "faults": []}
    from chaos.experiment import load

    try:
        exp = load(ctx.experiment_file)
    except Exception as exc:  # noqa: BLE001
        return {"experiment": ctx.experiment_file, "error": str(exc), "faults": []}
    journal = {j.get("name"): j for j in FaultJournal(ctx.run_dir).read()} if ctx.run_dir else {}
    active = {(e.get("record") or e).get("name") for e in active_faults(ctx).values()}
    elapsed = time.time() - ctx.started_at if ctx.started_at else None
    out, next_marked = [], False
    for p in exp.plan().faults:
        done = journal.get(p.name)
        if done is not None:
            status = "done" if done.get("healed_at") else "active"
        elif p.name in active:
            status = "active"
        elif elapsed is not None and elapsed >= p.at and not ctx.ended_at:
            status = "injecting"
        elif not next_marked and not ctx.ended_at:
            status, next_marked = "next", True
        else:
            status = "planned" if not ctx.ended_at else "not run"
        out.append({"name": p.name, "at": p.at, "duration": p.duration, "status": status,
                    "in_s": None if elapsed is None else round(p.at - elapsed, 1)})
    return {"experiment": exp.title, "file": Path(ctx.experiment_file).name, "elapsed": elapsed, "faults": out}


def fmt_time(t: Any) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int((t % 1) * 1000):03d}" if t else ""


def _observed(entry: dict[str, Any]) -> str:
    seen = entry.get("observed") or {}
    if "sent" in seen:
        return f"{seen['sent']} messages to {seen.get('topic')}"
    parts = [f"{k} {v:g} s" for k, v in seen.items() if k.endswith("_after_s") and isinstance(v, (int, float))]
    return ", ".join(parts)
