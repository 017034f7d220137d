"""Runs an experiment: steady state, faults on their timeline, always heal, steady state again, journals.

Synchronous on purpose: faults are signals, Docker calls and HTTP calls,
and a plain loop with `Event.wait` runs unchanged in a CLI, in a thread, or
in a gevent-patched Locust process (`start_experiment` runs it in the
background and `stop()` heals at once). Every fault is recorded in the
active-faults file before it is injected and removed after its heal, and
the heal runs in `finally`: on success, error, Ctrl-C or SIGTERM. Each
fault's line goes to `chaos.jsonl` when it is over, and the experiment's own
record to `experiments.jsonl` when it ends, whatever its status.
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
from chaos.probes import http_status, kafka_answers, tcp_answers
from rundir.journal import ExperimentJournal, ExperimentRecord, FaultJournal, FaultRecord

Log = Callable[[str], None]
OBSERVE_DOWN_S = 10.0  # how long to look for the target going down after an inject
OBSERVE_UP_S = 60.0  # how long to wait for it to answer again after the heal


class Interrupted(Exception):
    """The run was asked to stop (stop event)."""


class Aborted(Exception):
    """The method did not start: a target is not ours, or the steady state did not hold before."""


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
            self.record.observed.update(self.token.pop("observed", {}))  # what the fault did (topic: counts)
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
    file: str | None = None  # the experiment file, when it was run from one

    @property
    def deviated(self) -> bool:
        """The steady state was checked after the method and did not hold."""
        return self.steady_state_after is not None and not all(r.ok for r in self.steady_state_after)

    def to_dict(self) -> dict:
        return asdict(self)

    def record(self) -> ExperimentRecord:
        """The experiments.jsonl line of this run."""
        return ExperimentRecord(
            title=self.title, file=self.file, status=self.status, started_at=self.started_at, ended_at=self.ended_at,
            steady_state_before=[asdict(r) for r in self.steady_state_before or []],
            steady_state_after=[asdict(r) for r in self.steady_state_after or []],
            deviated=self.deviated, fault_ids=[f.fault_id for f in self.faults], error=self.error)


def run_experiment(experiment: Experiment | str | Path, run_dir: str | Path, *, state_path: str | None = None,
                   toxiproxy_url: str | None = None, stop: threading.Event | None = None,
                   log: Log = print, active_path: str | None = None) -> ExperimentResult:
    """Run one experiment; its faults go to `run_dir/chaos.jsonl`, its record to `run_dir/experiments.jsonl`.

    Always heals, and always writes the record: completed, deviated, failed,
    aborted before any fault, or interrupted (Ctrl-C, SIGTERM, `stop`).
    """
    exp = experiment if isinstance(experiment, Experiment) else load(experiment)
    result = ExperimentResult(exp.title, "completed", str(run_dir), time.time(),
                              file=None if isinstance(experiment, Experiment) else str(experiment))
    try:
        ExperimentRun(exp, result, Resolver(state_path, toxiproxy_url or exp.toxiproxy_url), FaultJournal(run_dir),
                      ActiveFaults(active_path, stack_state=state_path), stop or threading.Event(), log).run()
    except Aborted as exc:
        result.status, result.error = "aborted", str(exc)
        log(f"aborted: {exc}")
    except (KeyboardInterrupt, Interrupted):
        result.status = "interrupted"
        log("interrupted")
    except BaseException as exc:  # a bug, or the thread killed: recorded, then raised
        result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        result.ended_at = time.time()
        ExperimentJournal(run_dir).write(result.record())
    log(f"status: {result.status}")
    return result


class ExperimentRun:
    """The phases of one run in order: targets checked, steady state, the method, steady state again."""

    def __init__(self, exp: Experiment, result: ExperimentResult, resolver: Resolver, journal: FaultJournal,
                 active: ActiveFaults, stop: threading.Event, log: Log):
        self.exp, self.result, self.resolver = exp, result, resolver
        self.journal, self.active, self.stop, self.log = journal, active, stop, log
        self.plan = exp.plan()
        hyp = exp.steady_state_hypothesis
        self.hypothesis = hyp if hyp is not None and hyp.probes else None

    def run(self) -> None:
        self.log(f"experiment: {self.exp.title} ({len(self.plan.faults)} faults over {self.plan.end:.1f} s; "
                 f"journal {self.journal.path})")
        self.check_targets()
        if self.hypothesis is not None:
            before = check_hypothesis(self.hypothesis, self.resolver)
            self.result.steady_state_before = before
            self.log("steady state before: " + _fmt(before))
            if not all(r.ok for r in before):
                raise Aborted("steady state not met before the method")
        self.method()
        if self.hypothesis is not None and self.result.status != "interrupted":
            after = check_hypothesis(self.hypothesis, self.resolver, within_s=self.hypothesis.within, stop=self.stop)
            self.result.steady_state_after = after
            self.log("steady state after: " + _fmt(after))
            if self.result.deviated and self.result.status == "completed":
                self.result.status = "deviated"

    def check_targets(self) -> None:
        """Refuse early what is not ours, before anything is injected."""
        try:
            for kind, target in sorted({(p.fault.target_kind, p.fault.target) for p in self.plan.faults}):
                self.resolver.target(kind, target)
        except Exception as exc:  # noqa: BLE001
            raise Aborted(str(exc)) from exc

    def method(self) -> None:
        """The faults on their schedule; every one healed and journalled, however the method ends."""
        result, resolver, log = self.result, self.resolver, self.log
        events = []
        for i, p in enumerate(self.plan.faults):
            events.append((p.at, 1, i, "inject", p))
            if p.duration is not None:
                events.append((p.at + p.duration, 0, i, "heal", p))
        events.sort(key=lambda e: e[:3])
        run_tag = secrets.token_hex(3)
        runs: dict[int, FaultRun] = {}
        t0 = time.monotonic()
        hard_deadline = t0 + self.exp.max_duration
        try:
            for at, _, i, what, planned in events:
                _wait_until(t0 + at, hard_deadline, self.stop)
                if what == "inject":
                    run = FaultRun.planned(planned, f"{run_tag}-{i + 1}", resolver, self.journal, self.active, log)
                    runs[i] = run
                    if not run.inject():
                        result.status = "failed"
                elif i in runs:
                    runs[i].heal()
                    threading.Thread(target=runs[i].finish, daemon=True).start()  # journal line as soon as observed
            _wait_until(t0 + self.plan.end, hard_deadline, self.stop)
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
            self.rollbacks()
            wait_s = 0.0 if result.status == "interrupted" else OBSERVE_UP_S
            for i in sorted(runs):
                result.faults.append(runs[i].finish(wait_s=wait_s))
                if runs[i].record.outcome != "healed":
                    result.status = "failed" if result.status == "completed" else result.status

    def rollbacks(self) -> None:
        for fault in self.exp.rollbacks:
            try:
                kind = self.resolver.kind_of(fault.target, fault.target_kind)
                ft = fault_type(kind, fault.fault)
                ft.inject(self.resolver.target(kind, fault.target), full_parameters(ft, fault.parameters), "rollback")
                self.log(f"  rollback: {kind} {fault.target} {fault.fault}")
            except Exception as exc:  # noqa: BLE001
                self.log(f"  ! rollback {fault.target} {fault.fault}: {exc}")


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
