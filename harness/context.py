"""The run object: one per Locust process, on ``environment.bridgestorm``.

It holds what the process knows of the current run: the adapter of the
system under test, the run directory, the namespace everything is sent
under, the stack's addresses, this process's recorder and Kafka bus, and,
in the process that owns the run (the master, or the local runner), the
stack it started, the chaos experiment and the verdict.

The owner decides the run directory and the namespace at init; Locust sends
custom options to workers with every spawn, so a worker joins the same run
(``join()``) when its test starts. Users reach the object through
``run_context(environment)``.
"""
from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any

import gevent.lock
from locust.env import Environment
from locust.runners import WorkerRunner

import gevent.pool

from harness.adapter import SystemAdapter
from harness.arrivals import ArrivalClock
from harness.kafka import Bus
from harness.recorder import Recorder
from harness.stackenv import require, stack_env

ATTRIBUTE = "bridgestorm"


def new_run_id(scenario: str) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{scenario}-{os.getpid() % 10000:04d}"


def namespace_for(run_dir: str) -> str:
    """The run's tenant: everything the load sends is stored under it, so the truth reads only this run.

    A random suffix keeps two runs with the same directory name apart on one store.
    """
    return f"bs-{Path(run_dir).name[:40]}-{secrets.token_hex(3)}"


def option(environment: Environment, name: str, default: Any = None) -> Any:
    """A parsed option's value; ``default`` when it is unset or empty."""
    opts = environment.parsed_options
    value = getattr(opts, name, None) if opts is not None else None
    return default if value in (None, "") else value


class RunContext:
    """The run as this Locust process sees it."""

    def __init__(self, environment: Environment, adapter: SystemAdapter) -> None:
        self.environment = environment
        self.adapter = adapter
        self.scenario = ""
        self.run_dir = ""
        self.namespace = ""
        self.stack_state = ""
        self.env: dict[str, str] = {}
        # the owner's: what it started and what came of it
        self.stack_mode = ""
        self.embedded = False
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.experiment_file: str | None = None  # the --chaos experiment, resolved
        self.chaos: Any = None  # chaos.runner.RunningExperiment
        self.chaos_broken = ""  # why the experiment asked for did not run as planned (the run exits 3)
        self.chaos_deviated = False  # it ran, and the steady state did not come back (the run exits 1 at least)
        self.sampler: Any = None  # harness.sampler.Sampler, from test start until after the drain
        self.recent_lag: Any = ()  # the sampler's latest lag rows (its `recent`), for the web UI
        self.verdict: Any = None  # analysis.report.Verdict
        self.finished = False  # finish_run has run for this run (harness/lifecycle.py)
        self.finishing: Any = None  # the greenlet of finish_run, when the web UI's Stop began it
        self.finish_steps: list[tuple[float, str]] = []  # what finish_run has begun, for the web UI
        self.exit_codes: list[int] = []  # of every run this process owned (the web UI may run several)
        self.runs: list[dict[str, str]] = []  # every finished run: run_dir, scenario, verdict
        # this process's, made on first use
        self._recorder: Recorder | None = None
        self._bus: Bus | None = None
        self._bus_lock = gevent.lock.Semaphore()
        self._clocks: dict[str, ArrivalClock] = {}
        self.followers = gevent.pool.Group()  # users' e2e waits that outlive their task (RunMixin.follow_e2e)

    @property
    def owner(self) -> bool:
        """The master or the local runner owns the run (workers only run users)."""
        return not isinstance(self.environment.runner, WorkerRunner)

    @property
    def joined(self) -> bool:
        return bool(self.run_dir)

    def begin(self, scenario: str, run_dir: str, namespace: str, stack_state: str) -> None:
        """The owner's decisions, published in the options every worker receives with its spawn."""
        self.scenario, self.run_dir, self.namespace = scenario, run_dir, namespace
        self.publish_options()
        self.set_stack(stack_state)

    def next_run(self, scenario: str, run_dir: str, namespace: str) -> None:
        """The owner's next run on the same stack (the web UI's Start after a Stop): everything of the last one
        is forgotten but the stack and the exit codes."""
        if self._recorder is not None:
            self._recorder.flush()
        self._recorder = None
        self.started_at = self.ended_at = None
        self.chaos, self.chaos_broken, self.chaos_deviated = None, "", False
        self.verdict, self.finished, self.finishing = None, False, None
        self.finish_steps, self.recent_lag = [], ()
        self.begin(scenario, run_dir, namespace, self.stack_state)

    def publish_options(self) -> None:
        """Put the run's values back into the options (the web UI's form may have overwritten them)."""
        opts = self.environment.parsed_options
        if opts is not None:
            opts.run_dir, opts.namespace, opts.stack_state = self.run_dir, self.namespace, self.stack_state
            opts.scenario = self.scenario

    def set_stack(self, stack_state: str) -> None:
        self.stack_state = stack_state
        self.env = stack_env(stack_state, self.adapter.env_keys)
        self.publish_options()

    def join(self) -> None:
        """A worker: take the run's values from the options the master sent."""
        run_dir = option(self.environment, "run_dir")
        if not run_dir:
            raise RuntimeError("no run directory: this process never received the run's options (the "
                               "bridgestorm hooks are installed by harness.install() in the locustfile)")
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        self.run_dir = run_dir
        self.scenario = option(self.environment, "scenario", "")
        self.namespace = option(self.environment, "namespace") or namespace_for(run_dir)
        self.stack_state = option(self.environment, "stack_state", "")
        self.env = stack_env(self.stack_state, self.adapter.env_keys)

    @property
    def recorder(self) -> Recorder:
        if self._recorder is None:
            self._recorder = Recorder(self.run_dir)
        return self._recorder

    def address(self, key: str) -> str:
        """One of the stack's addresses (``KAFKA_BOOTSTRAP_SERVERS``, ``STAMPING_URL``); a clear error if unknown."""
        return require(self.env, key)

    def bus(self) -> Bus:
        """This process's producer and observer on the run's broker (made once; many users start at once)."""
        if self._bus is None:
            bootstrap = self.address("KAFKA_BOOTSTRAP_SERVERS")
            with self._bus_lock:  # starting the observer yields to other greenlets
                if self._bus is None:
                    self._bus = Bus(bootstrap, self.adapter)
        return self._bus

    def arrival_clock(self, user_class: type) -> ArrivalClock | None:
        """This process's arrivals of one user class, when the run has a rate (``--rate``), else None."""
        per_user = float(option(self.environment, "rate_per_user", 0) or 0)
        if per_user <= 0:
            return None
        name = user_class.__name__
        clock = self._clocks.get(name)
        if clock is None:
            lateness = float(option(self.environment, "max_lateness", 1.0))
            clock = self._clocks[name] = ArrivalClock(name, per_user, lateness, self._dropped)
        return clock

    def _dropped(self, name: str, intended: float) -> None:
        """An arrival nobody took: a failed ``dropped`` sample at its intended start (Locust counts it too)."""
        self.environment.events.request.fire(
            request_type="dropped", name=name, response_time=0.0, response_length=0,
            exception=Exception(f"dropped: no free {name} within {self._clocks[name].max_lateness_s:g} s"),
            context={"ts_start": intended, "ts_intended": intended, "key": None}, start_time=intended,
            response=None, url=None)

    def stop_arrivals(self) -> None:
        for clock in self._clocks.values():
            clock.stop()

    def close_bus(self) -> None:
        bus, self._bus = self._bus, None
        if bus is not None:
            try:
                bus.close()
            except Exception:  # noqa: BLE001 - closing at exit must not hide the run's outcome
                pass


def run_context(environment: Environment) -> RunContext:
    """This process's run object, joined to the run (a worker joins on first use)."""
    ctx = getattr(environment, ATTRIBUTE, None)
    if ctx is None:
        raise RuntimeError("bridgestorm is not installed in this Locust run: call harness.install(adapter) in "
                           "the locustfile")
    if not ctx.joined:
        ctx.join()
    return ctx
