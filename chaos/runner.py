"""Runs an experiment: steady state, faults on their timeline, always heal, steady state again, journal.

Synchronous on purpose: faults are signals, Docker calls and HTTP calls,
and a plain loop with `Event.wait` runs unchanged in a CLI, in a thread, or
in a gevent-patched Locust process (`start_experiment` runs it in the
background and `stop()` heals at once). Every fault is recorded in the
active-faults file before it is injected and removed after its heal, and
the heal runs in `finally`: on success, error, Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import importlib
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from chaos.active import ActiveFaults
from chaos.experiment import Experiment, Hypothesis, PlannedFault, Probe, load
from chaos.kinds import Resolver, fault_type, full_parameters
from rundir.journal import FaultJournal, FaultRecord
from chaos.probes import http_status, kafka_answers, tcp_answers

Log = Callable[[str], None]
OBSERVE_DOWN_S = 10.0  # how long to look for the target going down after an inject
OBSERVE_UP_S = 60.0  # how long to wait for it to answer again after the heal


class Interrupted(Exception):
    """The run was asked to stop (stop event)."""


# ----------------------------------------------------------------- one fault

class FaultRun:
    """One injected fault: inject, heal, observe, and its journal record."""

    def __init__(self, fault_id: str, name: str, kind: str, action: str, target: str, parameters: dict,
                 resolver: Resolver, journal: FaultJournal, active: ActiveFaults, log: Log = print):
        self.ft = fault_type(kind, action)
        self.params = full_parameters(self.ft, parameters)
        self.target_name = target
        self.resolver, self.journal, self.active, self.log = resolver, journal, active, log
        self.record = FaultRecord(fault_id, name, action, target, kind, dict(self.params))
        self.record.observed.update({"inject_ms": None, "heal_ms": None})
        self.token: dict | None = {}
        self.target: Any = None
        self.healed = False
        self.finished = False
        self._observers: list[threading.Thread] = []
        self._heal_started = threading.Event()
        self._finish_lock = threading.Lock()
        self._restart_returned: float | None = None

    @classmethod
    def planned(cls, planned: PlannedFault, fault_id: str, resolver: Resolver, journal: FaultJournal,
                active: ActiveFaults, log: Log) -> "FaultRun":
        f = planned.fault
        kind = resolver.kind_of(f.target, f.target_kind)
        return cls(fault_id, planned.name, kind, f.fault, f.target, f.parameters, resolver, journal, active, log)

    def _entry(self) -> dict:
        return {"record": asdict(self.record), "token": self.token, "journal": str(self.journal.path.parent),
                "state_path": self.resolver.state_path, "toxiproxy_url": self.resolver.proxy_url()}

    def inject(self) -> bool:
        try:
            self.target = self.resolver.target(self.record.target_kind, self.target_name)
            self.record.started_at = time.time()
            self.active.add(self.record.fault_id, self._entry())
            start = time.monotonic()
            if self.ft.heal is None and self.ft.watched:
                self._observe(self._watch_restart, start)  # down and back within the inject itself
            self.token = self.ft.inject(self.target, self.params, self.record.fault_id) or {}
            self.record.observed["inject_ms"] = round((time.monotonic() - start) * 1000, 3)
            self.active.add(self.record.fault_id, self._entry())
        except Exception as exc:  # noqa: BLE001 - recorded in the journal, the run goes on
            self.record.outcome, self.record.error = "failed", f"inject: {exc}"
            self.log(f"  ! {self.record.name}: {exc}")
            self.token = None  # nothing to heal
            self.finish(wait_s=0.0)
            return False
        self.log(f"  + {self.record.name}: {self.record.target_kind} {self.target_name} {self.record.action} "
                 f"{_short(self.params)} ({self.record.observed['inject_ms']:.1f} ms)")
        if self.ft.heal is None:  # a restart: over as soon as it returned
            self.record.healed_at, self.healed = time.time(), True
            self.record.outcome = "healed"
            self._restart_returned = time.monotonic()
        elif self.ft.watched:
            self._observe(self._watch_down, start)
        return True

    def heal(self) -> None:
        if self.healed or self.finished or self.ft.heal is None:
            return
        self._heal_started.set()
        start = time.monotonic()
        try:
            self.ft.heal(self.target, self.params, self.token)
        except Exception as exc:  # noqa: BLE001
            self.record.outcome, self.record.error = "failed", f"heal: {exc}"
            self.log(f"  ! heal {self.record.name}: {exc}")
            return
        self.record.healed_at, self.healed = time.time(), True
        self.record.outcome = "healed"
        self.record.observed["heal_ms"] = round((time.monotonic() - start) * 1000, 3)
        self.log(f"  - {self.record.name}: healed ({self.record.observed['heal_ms']:.1f} ms)")
        if self.ft.watched:
            self._observe(self._watch_up, start)

    def finish(self, wait_s: float = OBSERVE_UP_S) -> FaultRecord:
        """Wait for the observers (bounded), write the journal line, forget the fault.

        A fault whose heal failed stays in the active-faults file for `chaos heal`.
        """
        with self._finish_lock:
            if self.finished:
                return self.record
            self.finished = True
            self._heal_started.set()
            deadline = time.monotonic() + wait_s
            for t in self._observers:
                t.join(max(0.0, deadline - time.monotonic()))
            self.journal.write(self.record)
            if self.healed or self.token is None:
                self.active.remove(self.record.fault_id)
            return self.record

    # -- observation
    def _answers(self) -> bool:
        try:
            return bool(self.target.answers())
        except Exception:  # noqa: BLE001 - a target we cannot read does not answer
            return False

    def _observe(self, fn, since: float) -> None:
        t = threading.Thread(target=fn, args=(since,), daemon=True, name=f"observe-{self.record.fault_id}")
        self._observers.append(t)
        t.start()

    def _watch_down(self, since: float) -> None:
        deadline = since + OBSERVE_DOWN_S
        while time.monotonic() < deadline:
            if not self._answers():
                self.record.observed["down_after_s"] = round(time.monotonic() - since, 4)
                return
            if self._heal_started.is_set() and self.ft.heal is not None:
                return
            time.sleep(0.005)

    def _watch_restart(self, since: float) -> None:
        """Down during the restart (from its start), answering again (from when it returned)."""
        deadline = since + OBSERVE_DOWN_S
        while self._answers():
            if time.monotonic() > deadline:
                return
            time.sleep(0.002)
        self.record.observed["down_after_s"] = round(time.monotonic() - since, 4)
        deadline = since + OBSERVE_UP_S
        while not self._answers():
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        answered = time.monotonic()
        while self._restart_returned is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._restart_returned is not None:
            self.record.observed["answered_after_s"] = round(max(0.0, answered - self._restart_returned), 4)

    def _watch_up(self, since: float) -> None:
        deadline = since + OBSERVE_UP_S
        while time.monotonic() < deadline:
            if self._answers():
                self.record.observed["answered_after_s"] = round(time.monotonic() - since, 4)
                return
            time.sleep(0.01)


def _short(params: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items()) if params else ""


# ----------------------------------------------------------------- steady state

@dataclass
class ProbeResult:
    name: str
    ok: bool
    value: Any


def run_probe(probe: Probe, resolver: Resolver) -> ProbeResult:
    try:
        value = _probe_value(probe, resolver)
    except Exception as exc:  # noqa: BLE001 - a probe that raises has failed
        return ProbeResult(probe.name, False, f"error: {exc}")
    tol = probe.tolerance
    if probe.type == "http" and tol is True:
        tol = 200
    if isinstance(tol, list) and len(tol) == 2 and isinstance(value, (int, float)):
        ok = tol[0] <= value <= tol[1]
    else:
        ok = value == tol
    return ProbeResult(probe.name, bool(ok), value)


def _part(resolver: Resolver, name: str):
    part = resolver.part(name)
    if part is None:
        raise LookupError(f"no part {name!r} in the stack state")
    return part


def _probe_value(probe: Probe, resolver: Resolver) -> Any:
    if probe.type == "tcp":
        address = probe.address or _part(resolver, probe.target).address
        return tcp_answers(address, probe.timeout)
    if probe.type == "kafka":
        address = probe.address or _part(resolver, probe.target).address
        return kafka_answers(address, probe.timeout)
    if probe.type == "http":
        url = probe.url or _part(resolver, probe.target).health
        return http_status(url, probe.timeout)
    if probe.type == "process":
        return resolver.target("auto", probe.target).answers()
    module = importlib.import_module(probe.module)
    return getattr(module, probe.func)(**probe.arguments)


def check_hypothesis(hyp: Hypothesis, resolver: Resolver, within_s: float = 0.0,
                     stop: threading.Event | None = None) -> list[ProbeResult]:
    """Probe until all hold or `within_s` passed; returns the last results."""
    deadline = time.monotonic() + within_s
    while True:
        results = [run_probe(p, resolver) for p in hyp.probes]
        if all(r.ok for r in results) or time.monotonic() >= deadline or (stop is not None and stop.is_set()):
            return results
        time.sleep(0.25)


# ----------------------------------------------------------------- the run

@dataclass
class ExperimentResult:
    title: str
    status: str  # completed | deviated | failed | aborted | interrupted
    run_dir: str
    started_at: float
    ended_at: float | None = None
    steady_state_before: list[ProbeResult] | None = None
    steady_state_after: list[ProbeResult] | None = None
    faults: list[FaultRecord] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def run_experiment(experiment: Experiment | str | Path, run_dir: str | Path, *, state_path: str | None = None,
                   toxiproxy_url: str | None = None, stop: threading.Event | None = None,
                   log: Log = print, active_path: str | None = None) -> ExperimentResult:
    """Run one experiment and write its faults to `run_dir/chaos.jsonl`. Always heals."""
    exp = experiment if isinstance(experiment, Experiment) else load(experiment)
    stop = stop or threading.Event()
    resolver = Resolver(state_path, toxiproxy_url or exp.toxiproxy_url)
    journal = FaultJournal(run_dir)
    active = ActiveFaults(active_path, stack_state=state_path)
    plan = exp.plan()
    result = ExperimentResult(exp.title, "completed", str(run_dir), time.time())
    run_tag = secrets.token_hex(3)
    log(f"experiment: {exp.title} ({len(plan.faults)} faults over {plan.end:.1f} s; journal {journal.path})")

    # refuse early what is not ours, before anything is injected
    try:
        for kind_target in sorted({(p.fault.target_kind, p.fault.target) for p in plan.faults}):
            resolver.target(*kind_target)
    except Exception as exc:  # noqa: BLE001
        result.status, result.error, result.ended_at = "aborted", str(exc), time.time()
        log(f"aborted: {exc}")
        return result

    hyp = exp.steady_state_hypothesis
    if hyp and hyp.probes:
        result.steady_state_before = check_hypothesis(hyp, resolver)
        log("steady state before: " + _fmt(result.steady_state_before))
        if not all(r.ok for r in result.steady_state_before):
            result.status, result.error, result.ended_at = "aborted", "steady state not met before the method", time.time()
            return result

    events = []
    for i, p in enumerate(plan.faults):
        events.append((p.at, 1, i, "inject", p))
        if p.duration is not None:
            events.append((p.at + p.duration, 0, i, "heal", p))
    events.sort(key=lambda e: e[:3])
    runs: dict[int, FaultRun] = {}
    t0 = time.monotonic()
    hard_deadline = t0 + exp.max_duration
    try:
        for at, _, i, what, planned in events:
            _wait_until(t0 + at, hard_deadline, stop)
            if what == "inject":
                run = FaultRun.planned(planned, f"{run_tag}-{i + 1}", resolver, journal, active, log)
                runs[i] = run
                if not run.inject():
                    result.status = "failed"
            elif i in runs:
                runs[i].heal()
                threading.Thread(target=runs[i].finish, daemon=True).start()  # journal line as soon as observed
        _wait_until(t0 + plan.end, hard_deadline, stop)
    except (KeyboardInterrupt, Interrupted):
        result.status = "interrupted"
        log("interrupted: healing")
    except TimeoutError as exc:
        result.status, result.error = "failed", str(exc)
        log(f"{exc}: healing")
    except Exception as exc:  # noqa: BLE001
        result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"
        log(f"error: {exc}: healing")
    finally:
        for i in sorted(runs, reverse=True):
            runs[i].heal()
        for run in exp.rollbacks:
            try:
                kind = resolver.kind_of(run.target, run.target_kind)
                ft = fault_type(kind, run.fault)
                ft.inject(resolver.target(kind, run.target), full_parameters(ft, run.parameters), "rollback")
                log(f"  rollback: {kind} {run.target} {run.fault}")
            except Exception as exc:  # noqa: BLE001
                log(f"  ! rollback {run.target} {run.fault}: {exc}")
        wait_s = 0.0 if result.status == "interrupted" else OBSERVE_UP_S
        for i in sorted(runs):
            result.faults.append(runs[i].finish(wait_s=wait_s))
            if runs[i].record.outcome != "healed":
                result.status = "failed" if result.status == "completed" else result.status

    if hyp and hyp.probes and result.status != "interrupted":
        result.steady_state_after = check_hypothesis(hyp, resolver, within_s=hyp.within, stop=stop)
        log("steady state after: " + _fmt(result.steady_state_after))
        if not all(r.ok for r in result.steady_state_after) and result.status == "completed":
            result.status = "deviated"
    result.ended_at = time.time()
    log(f"status: {result.status}")
    return result


def _wait_until(when: float, hard_deadline: float, stop: threading.Event) -> None:
    while True:
        now = time.monotonic()
        if now >= hard_deadline:
            raise TimeoutError("experiment exceeded its max_duration")
        if now >= when:
            return
        if stop.wait(min(when, hard_deadline) - now):
            raise Interrupted()


def _fmt(results: list[ProbeResult]) -> str:
    return ", ".join(f"{r.name}={'ok' if r.ok else 'FAILED'} ({r.value})" for r in results)


# ----------------------------------------------------------------- in the background

class RunningExperiment:
    """An experiment running in a background thread (a greenlet under gevent)."""

    def __init__(self, thread: threading.Thread, stop_event: threading.Event, box: dict):
        self._thread, self._stop, self._box = thread, stop_event, box

    def stop(self, timeout: float | None = 120.0) -> ExperimentResult | None:
        """Stop injecting, heal everything, and return the result."""
        self._stop.set()
        return self.wait(timeout)

    def wait(self, timeout: float | None = None) -> ExperimentResult | None:
        self._thread.join(timeout)
        if "error" in self._box:
            raise self._box["error"]
        return self._box.get("result")

    @property
    def running(self) -> bool:
        return self._thread.is_alive()


def start_experiment(experiment: Experiment | str | Path, run_dir: str | Path, **kwargs) -> RunningExperiment:
    """Start `run_experiment` in the background: `handle = start_experiment(path, run_dir); handle.stop()`."""
    stop_event = kwargs.pop("stop", None) or threading.Event()
    box: dict = {}

    def target() -> None:
        try:
            box["result"] = run_experiment(experiment, run_dir, stop=stop_event, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to wait()
            box["error"] = exc

    thread = threading.Thread(target=target, name="bridgestorm-chaos", daemon=True)
    thread.start()
    return RunningExperiment(thread, stop_event, box)
