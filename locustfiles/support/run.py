"""The run's lifecycle as Locust event hooks: options, stack, chaos, samples, drain, truth, report, exit code.

``install(scenario)`` is called once by each locustfile. The master (or the
local runner) owns the run: it picks the run directory, starts an embedded
stack and the chaos experiment, and at quit drains the system, reads the
truth, builds the report and sets the exit code. Every process that runs
users records its own samples and ledger.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import gevent
from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from rundir.write import write_run_info
from locustfiles.support import context, kafka, recorder, truth
from locustfiles.support.aio import bridge
from locustfiles.support.context import new_run_id, option

log = logging.getLogger("bridgestorm")
REPO = Path(__file__).resolve().parents[2]


class RunState:
    """What the master/local process keeps for the whole run."""

    scenario: str = "bridge"
    run_dir: str = ""
    stack_mode: str = ""
    stack_state: str = ""
    embedded: bool = False
    started_at: float | None = None
    ended_at: float | None = None
    chaos: Any = None
    verdict: Any = None


STATE = RunState()
_installed = False


def add_options(parser: Any) -> None:
    g = parser  # Locust only knows include_in_web_ui on the parser itself, not on groups
    g.add_argument("--stack", choices=["auto", "embedded", "external"], default="auto", include_in_web_ui=False,
                   help="embedded: start the stack before the test and stop it after; external: use "
                        "KAFKA_BOOTSTRAP_SERVERS etc. or the stack's state file; auto: external when one is found")
    g.add_argument("--stack-state", default="", help="the stack's state file (default $BRIDGESTORM_STATE or "
                   ".bridgestorm/stack.json)")
    g.add_argument("--chaos", default="", include_in_web_ui=True, help="chaos experiment to run during the load "
                   "(a file, or a name in chaos/experiments/)")
    g.add_argument("--thresholds", default="", include_in_web_ui=True,
                   help="threshold file (or shipped set name) checked at the end; default: the scenario's set")
    g.add_argument("--run-dir", default="", include_in_web_ui=True, help="run directory (default reports/<run-id>)")
    g.add_argument("--drain", type=float, default=10.0, help="max seconds to wait, after the load, until "
                   "every acknowledged item is stored (the truth is read then; what is missing counts as lost)")
    g.add_argument("--rate", type=float, default=0.0, include_in_web_ui=True,
                   help="fixed-rate mode: requests/s per user; records intended start times")
    g.add_argument("--e2e-timeout", type=float, default=0.0,
                   help="seconds to wait for a result event (0: each user's default); a timeout is a failure")
    g.add_argument("--heartbeat", type=float, default=1.0, help="NodeUser heartbeat interval (s)")
    g.add_argument("--intelligence", type=float, default=0.5, help="share of workflows using intelligence")
    g.add_argument("--stamp-sizes", default="256,4096,65536", help="stamp content sizes in bytes")
    g.add_argument("--namespace", default="", help="tenant for everything sent (default bs-<run-id>)")
    g.add_argument("--no-report", action="store_true", default=False, help="skip the drain and the report")
    g.add_argument("--burst", type=int, default=100, help="BurstShape / BurstRecoveryShape: users at once")
    g.add_argument("--shape-users", type=int, default=0, help="Sustained/Step: users; BurstRecovery: baseline")
    g.add_argument("--shape-rate", type=float, default=0.0, help="SustainedShape: spawn rate")
    g.add_argument("--shape-duration", type=float, default=0.0, help="SustainedShape: seconds")
    g.add_argument("--shape-burst-at", type=float, default=0.0, help="BurstRecoveryShape: burst start (s)")
    g.add_argument("--shape-burst-for", type=float, default=0.0, help="BurstRecoveryShape: burst length (s)")
    g.add_argument("--shape-step-users", type=int, default=0, help="StepShape: users added per step")
    g.add_argument("--shape-step-s", type=float, default=0.0, help="StepShape: seconds per step")


def _owner(environment: Environment) -> bool:
    """The master or the local runner owns the run (workers only run users)."""
    return not isinstance(environment.runner, WorkerRunner)


def _resolve_stack(environment: Environment) -> None:
    opts = environment.parsed_options
    from stack.state import StateFile

    mode = opts.stack
    state_path = opts.stack_state or str(StateFile(None).path)
    if mode == "auto":
        mode = "external" if (os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or StateFile(state_path).exists()) \
            else "embedded"
    STATE.stack_mode = mode
    if mode == "embedded":
        from stack.embedded import StackOptions, up

        state_path = str(Path(opts.run_dir) / "stack" / "stack.json")
        log.info("starting the embedded stack (state %s)", state_path)
        up(StackOptions(state_path=state_path, heartbeat_interval_s=opts.heartbeat),
           progress=lambda m: log.info("stack: %s", m))
        STATE.embedded = True
    STATE.stack_state = state_path
    opts.stack_state = state_path  # sent to workers with every spawn


def _run_info(environment: Environment) -> dict[str, Any]:
    import importlib.metadata as md

    opts = environment.parsed_options
    env = context.stackenv.stack_env(STATE.stack_state)

    def version(dist: str) -> str | None:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None

    return {
        "run_id": Path(STATE.run_dir).name,
        "scenario": STATE.scenario,
        "started_at": STATE.started_at,
        "ended_at": STATE.ended_at,
        "arguments": {"users": getattr(opts, "num_users", None), "spawn_rate": getattr(opts, "spawn_rate", None),
                      "run_time": getattr(opts, "run_time", None), "processes": getattr(opts, "processes", None),
                      "rate": opts.rate, "chaos": opts.chaos or None, "argv": sys.argv[1:]},
        "versions": {"bridgestorm": version("bridgestorm"), "locust": version("locust"),
                     "python": sys.version.split()[0]},
        "stack": {"mode": STATE.stack_mode, "broker": env.get("KAFKA_BOOTSTRAP_SERVERS"),
                  "database": env.get("DATABASE_URL"), "state": STATE.stack_state},
        "namespace": option(environment, "namespace") or context.namespace_for(STATE.run_dir),
        "thresholds": opts.thresholds or None,
    }


FINISH, FINISHED = "bridgestorm_finish", "bridgestorm_finished"


def _worker_finish(environment: Environment, msg: Any, **_: Any) -> None:
    """Worker: stop the users now and send the final statistics, then say so.

    Locust's master gives quitting workers 0.5 s for their last statistics;
    under load that is too short, and Locust's totals would miss requests the
    samples have. Finishing before the quit makes both count the same.
    """
    runner = environment.runner
    runner.stop()
    runner._send_stats()
    runner.send_message(FINISHED, {"samples": sum(c.recorder.samples.rows for c in context.current())})


_finished: set[str] = set()


def _master_finished(environment: Environment, msg: Any, **_: Any) -> None:
    _finished.add(msg.node_id)


def _finish_workers(environment: Environment, timeout: float = 20.0) -> None:
    """Master at test stop: have every worker stop and report before Locust's quit."""
    runner = environment.runner
    clients = [c.id for c in runner.clients.all]
    if not clients:
        return
    _finished.clear()
    for cid in clients:
        runner.send_message(FINISH, None, cid)
    deadline = time.monotonic() + timeout
    while not set(clients) <= _finished and time.monotonic() < deadline:
        gevent.sleep(0.05)
    if not set(clients) <= _finished:
        log.warning("workers %s did not report their end within %.0f s", sorted(set(clients) - _finished), timeout)


def on_init(environment: Environment, **_: Any) -> None:
    # libev caches "now" per loop iteration; imports and set-up before the first iteration (pandas, pyarrow:
    # seconds on a busy machine) leave it stale, and Locust's -t timer would then fire that much too early
    gevent.get_hub().loop.update_now()
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.register_message(FINISH, _worker_finish)
    elif isinstance(runner, MasterRunner):
        runner.register_message(FINISHED, _master_finished)
    if not _owner(environment) or environment.parsed_options is None:
        return
    opts = environment.parsed_options
    if not opts.run_dir:
        opts.run_dir = str(REPO / "reports" / new_run_id(STATE.scenario))
    STATE.run_dir = opts.run_dir
    if not opts.namespace:  # unique per run, even when a run directory name is reused; sent to workers
        opts.namespace = context.namespace_for(opts.run_dir)
    Path(STATE.run_dir).mkdir(parents=True, exist_ok=True)
    if not getattr(opts, "html_file", None):  # Locust's own HTML report, into the run directory's locust/
        (Path(STATE.run_dir) / "locust").mkdir(exist_ok=True)
        opts.html_file = str(Path(STATE.run_dir) / "locust" / "report.html")
    _resolve_stack(environment)
    write_run_info(STATE.run_dir, _run_info(environment))
    from locustfiles.support import webui

    if environment.web_ui is not None:
        webui.install(environment, STATE)
    gevent.get_hub().loop.update_now()  # an embedded stack took seconds to start: see above


def _experiment_path(ref: str) -> str:
    p = Path(ref)
    if p.exists():
        return str(p)
    for cand in (REPO / "chaos" / "experiments" / ref, REPO / "chaos" / "experiments" / f"{ref}.yaml"):
        if cand.exists():
            return str(cand)
    raise FileNotFoundError(f"chaos experiment {ref!r} not found (a path, or a name in chaos/experiments/)")


def on_test_start(environment: Environment, **_: Any) -> None:
    gevent.get_hub().loop.update_now()
    if not _owner(environment):
        return
    STATE.started_at = STATE.started_at or time.time()
    write_run_info(STATE.run_dir, _run_info(environment))
    ref = option(environment, "chaos")
    if ref and STATE.chaos is None:
        from chaos.runner import start_experiment

        env = context.stackenv.stack_env(STATE.stack_state)
        STATE.chaos = start_experiment(_experiment_path(ref), STATE.run_dir, state_path=STATE.stack_state,
                                       toxiproxy_url=env.get("TOXIPROXY_URL"), log=lambda m: log.info("chaos: %s", m))


def _stop_chaos() -> None:
    if STATE.chaos is not None:
        handle, STATE.chaos = STATE.chaos, None
        handle.stop()  # heals whatever is still injected


def on_test_stop(environment: Environment, **_: Any) -> None:
    if _owner(environment):
        STATE.ended_at = time.time()
        if isinstance(environment.runner, MasterRunner):
            _finish_workers(environment)
        _stop_chaos()
    for ctx in context.current():
        ctx.recorder.flush(wait=False)  # written in the background; quitting waits for it


def on_request(request_type: str, name: str, response_time: float, response_length: int,
               exception: BaseException | None = None, context: dict | None = None,
               start_time: float | None = None, **_: Any) -> None:
    """Every request event of this process becomes one exact sample row."""
    ctx = context or {}
    run_ctxs = _process_contexts()
    if not run_ctxs:
        return
    ts = ctx.get("ts_start") or start_time or (time.time() - (response_time or 0) / 1000.0)
    run_ctxs[0].recorder.sample(
        ts_start=ts, type=request_type, name=name, latency_ms=response_time or 0.0,
        ok=exception is None, bytes=response_length or 0,
        error=None if exception is None else (str(exception) or type(exception).__name__)[:500],
        key=ctx.get("key"), ts_intended=ctx.get("ts_intended"),
    )


def _process_contexts() -> list[context.RunContext]:
    return context.current()


def _wait_for_samples(environment: Environment, timeout: float = 30.0) -> int:
    """Wait until the samples on disk from every process add up to Locust's own total (workers flush late)."""
    import pyarrow.parquet as pq

    want = environment.runner.stats.total.num_requests if environment.runner else 0
    deadline = time.monotonic() + timeout
    have = 0
    while True:
        d = Path(STATE.run_dir) / "samples"
        have = sum(pq.read_metadata(p).num_rows for p in d.glob("*.parquet")) if d.is_dir() else 0
        if have >= want or time.monotonic() > deadline:
            if have != want:
                log.warning("samples on disk: %d, Locust counted %d", have, want)
            return have
        gevent.sleep(0.2)


def _write_locust_stats(environment: Environment) -> None:
    """Locust's own totals as CSV next to its HTML report (its rounded view, kept for comparison)."""
    import csv

    from locust import stats as lstats

    out = Path(STATE.run_dir) / "locust"
    out.mkdir(exist_ok=True)
    writer = lstats.StatsCSV(environment, lstats.PERCENTILES_TO_REPORT)
    with open(out / "stats.csv", "w", newline="") as f:
        writer.requests_csv(csv.writer(f))
    with open(out / "failures.csv", "w", newline="") as f:
        writer.failures_csv(csv.writer(f))


def on_quitting(environment: Environment, **_: Any) -> None:
    for ctx in context.current():
        ctx.recorder.flush()
    if not _owner(environment) or not STATE.run_dir:
        kafka.close_all()
        return
    try:
        _stop_chaos()
        STATE.ended_at = STATE.ended_at or time.time()
        if STATE.started_at is None:
            return  # nothing was run
        _wait_for_samples(environment)
        _write_locust_stats(environment)
        env = context.stackenv.stack_env(STATE.stack_state)
        opts = environment.parsed_options
        namespace = option(environment, "namespace") or context.namespace_for(STATE.run_dir)
        if not opts.no_report and env.get("DATABASE_URL"):
            log.info("draining (up to %.0f s) and reading the truth", opts.drain)
            expected = truth.acknowledged(STATE.run_dir)
            rows = bridge().run(truth.drain_and_read(env["DATABASE_URL"], namespace, opts.drain,
                                                     expected=expected), timeout=opts.drain + 60)
            truth.write(STATE.run_dir, rows)
        write_run_info(STATE.run_dir, _run_info(environment))
        if not opts.no_report:
            from analysis.report import build_report

            verdict = build_report(STATE.run_dir, opts.thresholds or None)
            STATE.verdict = verdict
            verdict.print()
            environment.process_exit_code = verdict.exit_code
    except Exception:
        log.exception("bridgestorm: the end of the run failed")
        environment.process_exit_code = 3
    finally:
        kafka.close_all()
        if STATE.embedded:
            from stack.embedded import down

            log.info("stopping the embedded stack")
            down(STATE.stack_state)
            STATE.embedded = False


def install(scenario: str) -> None:
    """Register the hooks once (a locustfile may import several user modules)."""
    global _installed
    STATE.scenario = scenario
    if _installed:
        return
    _installed = True
    events.init_command_line_parser.add_listener(add_options)
    events.init.add_listener(on_init)
    events.test_start.add_listener(on_test_start)
    events.test_stop.add_listener(on_test_stop)
    events.request.add_listener(on_request)
    events.quitting.add_listener(on_quitting)
