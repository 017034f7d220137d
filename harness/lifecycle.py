"""The run's lifecycle as Locust event hooks: options, stack, chaos, samples, drain, truth, report, exit code.

A locustfile calls ``install(adapter)`` once, with the adapter of the system
under test. The process that owns the run (the master, or the local runner)
picks the run directory, starts an embedded stack and the chaos experiment,
and at quit drains the system, reads the truth, builds the report and sets
the exit code. Every process that runs users records its own samples and
ledger. Everything a process knows of the run is on its run object,
``environment.bridgestorm`` (harness/context.py).

The scenario's name (run directory, report title, default threshold set) is
``--scenario``, which every conf in scenarios/ sets; without it, the name of
the locustfile.
"""
from __future__ import annotations

import argparse
import csv
import importlib.metadata as md
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
from locust import events
from locust import stats as locust_stats
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from harness import drain, preflight
from harness.adapter import SystemAdapter
from harness.aio import bridge
from harness.arrivals import rate_per_user
from harness.context import ATTRIBUTE, RunContext, namespace_for, new_run_id, option

log = logging.getLogger("bridgestorm")
EXIT_BROKEN = 3  # the run itself broke: stack, chaos or analysis (README: Exit codes)
REPO = Path(__file__).resolve().parents[1]


HELP_HEADING = "bridgestorm (load, chaos and verdict; exit codes: 0 pass, 1 a threshold failed, 2 bad usage or " \
               "input, nothing ran, 3 the run itself broke)"


class _Group:
    """Locust's ``include_in_web_ui`` on an argument group: argparse groups know only the standard keywords."""

    def __init__(self, group: Any) -> None:
        self.group = group

    def add_argument(self, *names: str, include_in_web_ui: bool = True, **kwargs: Any) -> Any:
        # the web UI's form shows the help text as it is: say the default there too, not "%(default)s"
        if isinstance(kwargs.get("help"), str) and "default" in kwargs:
            kwargs["help"] = kwargs["help"].replace("%(default)s", str(kwargs["default"]))
        action = self.group.add_argument(*names, **kwargs)
        action.include_in_web_ui = include_in_web_ui
        action.is_secret = action.is_required = action.is_multiple = False
        return action


def add_options(parser: Any) -> None:
    """The toolkit's options, under their own heading in ``--help``, each with its default."""
    g = _Group(parser.add_argument_group(HELP_HEADING))
    g.add_argument("--scenario", default="",
                   help="the scenario's name: run directory, report title and default threshold set "
                        "(every conf in scenarios/ sets it; default: the locustfile's name). In the web UI's "
                        "form, another scenario of this locustfile loads its conf: its users, spawn rate, run "
                        "time, rate, chaos and thresholds replace the form's")
    g.add_argument("--stack", choices=["auto", "embedded", "external"], default="auto", include_in_web_ui=False,
                   help="embedded: start the stack before the test and stop it after; external: use "
                        "KAFKA_BOOTSTRAP_SERVERS etc. or the stack's state file (checked to answer before the "
                        "run); auto: external when one is found (default: %(default)s)")
    g.add_argument("--stack-state", default="", include_in_web_ui=False,
                   help="the stack's state file (default $BRIDGESTORM_STATE or .bridgestorm/stack.json)")
    g.add_argument("--chaos", default="", include_in_web_ui=True, help="chaos experiment to run during the load "
                   "(a file, or a name in chaos/experiments/; checked before anything starts; default: none)")
    g.add_argument("--thresholds", default="", include_in_web_ui=True,
                   help="threshold file (or shipped set name) checked at the end; default: the scenario's set")
    g.add_argument("--run-dir", default="", include_in_web_ui=True,
                   help="run directory (default reports/<run-id>; in the web UI, each Start after a Stop takes a "
                        "new one, this one if no run used it yet)")
    g.add_argument("--drain", type=float, default=10.0, help="max seconds to wait, after the load, until "
                   "every acknowledged item is stored (the truth is read then; what is missing counts as lost; "
                   "default: %(default)s)")
    g.add_argument("--rate", type=float, default=None, include_in_web_ui=True,
                   help="open model: the run's arrivals per second (> 0) over its open-model users; latency "
                        "counts from each arrival's intended start (default: none, the users run closed-loop)")
    g.add_argument("--max-lateness", type=float, default=1.0,
                   help="an arrival no user could start within this many seconds is dropped (a 'dropped' sample; "
                        "default: %(default)s)")
    g.add_argument("--rate-per-user", type=float, default=0.0, include_in_web_ui=False,
                   help=argparse.SUPPRESS)  # set by the run's owner from --rate, sent to workers
    g.add_argument("--e2e-timeout", type=float, default=0.0,
                   help="seconds to wait for a result event (0: each user's default); a timeout is a failure "
                        "(default: %(default)s)")
    g.add_argument("--namespace", default="", include_in_web_ui=False,
                   help="tenant for everything sent (default bs-<run-id>)")
    g.add_argument("--no-report", action="store_true", default=False, help="skip the drain and the report")
    g.add_argument("--no-sampler", action="store_true", default=False,
                   help="do not sample, once a second, CPU and memory of the stack's and Locust's processes and "
                        "each consumer group's lag (resources/, lag/: memory_growth, cpu_*, drain_time need them)")
    g.add_argument("--debug", action="store_true", default=False, include_in_web_ui=False,
                   help="print tracebacks with errors (also BRIDGESTORM_DEBUG=1)")
    g.add_argument("--burst", type=int, default=100, help="BurstShape / BurstRecoveryShape: users at once "
                   "(default: %(default)s)")
    g.add_argument("--shape-users", type=int, default=0, help="Sustained/Step: users; BurstRecovery: baseline "
                   "(default: %(default)s)")
    g.add_argument("--shape-rate", type=float, default=0.0, help="SustainedShape: spawn rate (default: %(default)s)")
    g.add_argument("--shape-duration", type=float, default=0.0, help="SustainedShape: seconds (default: "
                   "%(default)s)")
    g.add_argument("--shape-burst-at", type=float, default=0.0, help="BurstRecoveryShape: burst start (s; "
                   "default: %(default)s)")
    g.add_argument("--shape-burst-for", type=float, default=0.0, help="BurstRecoveryShape: burst length (s; "
                   "default: %(default)s)")
    g.add_argument("--shape-step-users", type=int, default=0, help="StepShape: users added per step (default: "
                   "%(default)s)")
    g.add_argument("--shape-step-s", type=float, default=0.0, help="StepShape: seconds per step (default: "
                   "%(default)s)")


def debugging(environment: Environment | None = None) -> bool:
    """Tracebacks wanted: ``--debug`` or ``BRIDGESTORM_DEBUG=1``."""
    if os.environ.get("BRIDGESTORM_DEBUG", "") not in ("", "0"):
        return True
    return bool(environment is not None and option(environment, "debug", False))


def report_error(environment: Environment | None, what: str, exc: BaseException) -> None:
    """One line naming what broke (the traceback too with --debug)."""
    if debugging(environment):
        log.error("bridgestorm: %s", what, exc_info=exc)
    else:
        log.error("bridgestorm: %s: %s: %s (--debug for the traceback)", what, type(exc).__name__, exc)


def scenario_name(environment: Environment) -> str:
    """``--scenario``, else the first locustfile's name (load shapes are added to a locustfile, not named)."""
    given = option(environment, "scenario")
    if given:
        return str(given)
    files = [Path(f).stem for f in str(option(environment, "locustfile", "") or "").split(",") if f.strip()]
    named = [f for f in files if "shapes" not in f] or files
    return named[0] if named else "run"


def experiment_path(ref: str) -> str:
    """A chaos experiment reference: a path, or the name of a shipped experiment."""
    path = preflight.experiment_path(ref)
    if path is None:
        raise FileNotFoundError(f"chaos experiment {ref!r} not found (a path, or a name in chaos/experiments/)")
    return str(path)


def _resolve_stack(ctx: RunContext) -> None:
    from stack.state import StateFile

    opts = ctx.environment.parsed_options
    mode = opts.stack
    state_path = opts.stack_state or str(StateFile(None).path)
    if mode == "auto":
        has_broker = bool(ctx.env.get("KAFKA_BOOTSTRAP_SERVERS")) or StateFile(state_path).exists()
        mode = "external" if has_broker else "embedded"
    ctx.stack_mode = mode
    if mode == "embedded":
        from stack.embedded import StackOptions, up

        state_path = str(Path(ctx.run_dir) / "stack" / "stack.json")
        log.info("starting the embedded stack (state %s)", state_path)
        up(StackOptions(state_path=state_path, node_env=ctx.adapter.stack_env(opts)),
           progress=lambda m: log.info("stack: %s", m))
        ctx.embedded = True
    ctx.set_stack(state_path)


def _stop_forked_workers(opts: Any) -> None:
    """A run refused at init: the workers ``--processes`` forked before it must not outlive it.

    Locust's own clean-up at exit forgets children that have not exited yet, so they would run on,
    orphaned, waiting for a master that is gone. At init this process has no other children. They are
    not waited for here: Locust's clean-up at exit reaps them.
    """
    if not getattr(opts, "processes", None):
        return
    import psutil

    for child in psutil.Process().children():
        child.terminate()


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _run_info(ctx: RunContext) -> dict[str, Any]:
    opts = ctx.environment.parsed_options
    return {
        "run_id": Path(ctx.run_dir).name,
        "scenario": ctx.scenario,
        "system": ctx.adapter.name,
        "started_at": ctx.started_at,
        "ended_at": ctx.ended_at,
        "arguments": {"users": getattr(opts, "num_users", None), "spawn_rate": getattr(opts, "spawn_rate", None),
                      "run_time": getattr(opts, "run_time", None), "processes": getattr(opts, "processes", None),
                      "rate": opts.rate, "chaos": opts.chaos or None, "argv": sys.argv[1:]},
        "versions": {"bridgestorm": _version("bridgestorm"), "locust": _version("locust"),
                     "python": sys.version.split()[0]},
        "stack": {"mode": ctx.stack_mode, "broker": ctx.env.get("KAFKA_BOOTSTRAP_SERVERS"),
                  "database": ctx.env.get("DATABASE_URL"), "state": ctx.stack_state},
        "namespace": ctx.namespace,
        "thresholds": opts.thresholds or None,
    }


def _write_run_info(ctx: RunContext) -> None:
    from rundir.write import write_run_info

    write_run_info(ctx.run_dir, _run_info(ctx))


# ---------------------------------------------------------------- workers finish before the master quits

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
    ctx: RunContext = getattr(environment, ATTRIBUTE)
    runner.send_message(FINISHED, {"samples": ctx.recorder.samples.rows if ctx.joined else 0})


def _finish_workers(environment: Environment, finished: set[str], timeout: float = 20.0) -> None:
    """Master at test stop: have every worker stop and report before Locust's quit."""
    runner = environment.runner
    clients = [c.id for c in runner.clients.all]
    if not clients:
        return
    finished.clear()
    for cid in clients:
        runner.send_message(FINISH, None, cid)
    deadline = time.monotonic() + timeout
    while not set(clients) <= finished and time.monotonic() < deadline:
        gevent.sleep(0.05)
    if not set(clients) <= finished:
        log.warning("workers %s did not report their end within %.0f s", sorted(set(clients) - finished), timeout)


# ---------------------------------------------------------------- the hooks


class Hooks:
    """The listeners ``install()`` registers, for one adapter."""

    def __init__(self, adapter: SystemAdapter) -> None:
        self.adapter = adapter
        self.finished: set[str] = set()  # workers that reported their end (master)
        self.environment: Environment | None = None

    def on_init(self, environment: Environment, **_: Any) -> None:
        # libev caches "now" per loop iteration; imports and set-up before the first iteration (pandas, pyarrow:
        # seconds on a busy machine) leave it stale, and Locust's -t timer would then fire that much too early
        gevent.get_hub().loop.update_now()
        self.environment = environment
        ctx = RunContext(environment, self.adapter)
        setattr(environment, ATTRIBUTE, ctx)
        environment.events.request.add_listener(lambda **kw: self.on_request(ctx, **kw))
        runner = environment.runner
        if isinstance(runner, WorkerRunner):
            runner.register_message(FINISH, _worker_finish)
        elif isinstance(runner, MasterRunner):
            runner.register_message(FINISHED, lambda environment, msg, **_: self.finished.add(msg.node_id))
        if not ctx.owner or environment.parsed_options is None:
            return
        opts = environment.parsed_options
        scenario = scenario_name(environment)
        found = preflight.problems(opts, scenario, self.adapter.env_keys)
        if found:  # before the run directory and the stack: nothing is left running or written
            _stop_forked_workers(opts)
            preflight.refuse(found)
        run_dir = opts.run_dir or str(REPO / "reports" / new_run_id(scenario))
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        # unique per run, even when a run directory name is reused; sent to workers
        namespace = opts.namespace or namespace_for(run_dir)
        ctx.begin(scenario, run_dir, namespace, opts.stack_state)
        ctx.experiment_file = experiment_path(opts.chaos) if opts.chaos else None
        if not getattr(opts, "html_file", None):  # Locust's own HTML report, into the run directory's locust/
            (Path(run_dir) / "locust").mkdir(exist_ok=True)
            opts.html_file = str(Path(run_dir) / "locust" / "report.html")
        try:
            _resolve_stack(ctx)
        except Exception as exc:  # noqa: BLE001 - the run broke before it began: exit 3, one line
            report_error(environment, "the stack did not start", exc)  # up() stopped what it had started
            _stop_forked_workers(opts)
            raise SystemExit(EXIT_BROKEN) from None
        _write_run_info(ctx)
        if environment.web_ui is not None:
            from harness import webui

            webui.install(environment, ctx)
        gevent.get_hub().loop.update_now()  # an embedded stack took seconds to start: see above

    def on_test_start(self, environment: Environment, **_: Any) -> None:
        gevent.get_hub().loop.update_now()
        ctx: RunContext = getattr(environment, ATTRIBUTE)
        if not ctx.owner:
            ctx.join()
            return
        # the web UI's form may name another run directory or scenario than the one set up at start
        wanted = str(option(environment, "run_dir", "") or "")
        scenario = str(option(environment, "scenario", "") or "")
        if (ctx.finished or ctx.finishing is not None or (wanted and wanted != ctx.run_dir)
                or (scenario and scenario != ctx.scenario)):
            _begin_next_run(ctx)  # and each Start after a Stop: a run of its own
        ctx.publish_options()
        opts = environment.parsed_options
        opts.rate = float(opts.rate) if opts.rate not in (None, "") else None  # the web UI's form sends text
        opts.rate_per_user = rate_per_user(opts.rate or 0.0, list(environment.user_classes),
                                           getattr(opts, "num_users", None))
        ctx.started_at = ctx.started_at or time.time()
        _write_run_info(ctx)
        _start_sampler(ctx)
        ref = option(environment, "chaos")  # the web UI's form may have named another one
        if not ref:
            ctx.experiment_file = None
        elif ctx.chaos is None:
            from chaos.runner import start_experiment

            try:
                ctx.experiment_file = experiment_path(ref)
                ctx.chaos = start_experiment(ctx.experiment_file, ctx.run_dir, state_path=ctx.stack_state,
                                             toxiproxy_url=ctx.env.get("TOXIPROXY_URL"),
                                             log=lambda m: log.info("chaos: %s", m))
            except Exception as exc:  # noqa: BLE001 - preflight checked it; if it still fails, the run broke
                report_error(environment, f"the chaos experiment {ref!r} did not start", exc)
                ctx.chaos_broken = f"did not start: {exc}"

    def on_test_stop(self, environment: Environment, **_: Any) -> None:
        ctx: RunContext = getattr(environment, ATTRIBUTE)
        ctx.stop_arrivals()
        if ctx.owner:
            ctx.ended_at = time.time()
            # no fault may start once the load has stopped (nothing would measure it), and the
            # waits below finish sooner on a healed system
            _stop_chaos(ctx)
        _wait_for_followers(ctx)
        if ctx.owner and isinstance(environment.runner, MasterRunner):
            _finish_workers(environment, self.finished)
        if ctx.joined:
            ctx.recorder.flush(wait=False)  # written in the background; quitting waits for it
        if ctx.owner and environment.web_ui is not None and ctx.started_at is not None and ctx.finishing is None:
            # Stop in the web UI: the drain and the report go on in the background, their progress in the UI
            ctx.finish_steps = []
            ctx.finishing = gevent.spawn(finish_run, ctx, lambda text: ctx.finish_steps.append((time.time(), text)))

    @staticmethod
    def on_request(ctx: RunContext, request_type: str, name: str, response_time: float, response_length: int,
                   exception: BaseException | None = None, context: dict | None = None,
                   start_time: float | None = None, **_: Any) -> None:
        """Every request event of this process becomes one exact sample row."""
        if not ctx.joined:
            return
        c = context or {}
        ts = c.get("ts_start") or start_time or (time.time() - (response_time or 0) / 1000.0)
        ctx.recorder.sample(
            ts_start=ts, type=request_type, name=name, latency_ms=response_time or 0.0,
            ok=exception is None, bytes=response_length or 0,
            error=None if exception is None else (str(exception) or type(exception).__name__)[:500],
            key=c.get("key"), ts_intended=c.get("ts_intended"), ts_ready=c.get("ts_ready"),
        )

    def on_quitting(self, environment: Environment, **_: Any) -> None:
        ctx: RunContext = getattr(environment, ATTRIBUTE)
        if ctx.joined:
            ctx.recorder.flush()
        if not ctx.owner or not ctx.run_dir:
            ctx.close_bus()
            return
        try:
            if ctx.finishing is not None:  # the web UI's Stop began it: let it end
                ctx.finishing.join()
            elif not ctx.finished:
                finish_run(ctx)
        finally:
            _stop_sampler(ctx)
            ctx.close_bus()
            if ctx.embedded:
                from stack.embedded import down

                log.info("stopping the embedded stack (its logs are kept in stack/logs/)")
                try:
                    down(ctx.stack_state, keep_logs=Path(ctx.run_dir) / "stack" / "logs")
                except Exception as exc:  # noqa: BLE001
                    report_error(environment, "stopping the embedded stack failed", exc)
                    ctx.exit_codes.append(EXIT_BROKEN)
                ctx.embedded = False
            if ctx.exit_codes:
                environment.process_exit_code = max(ctx.exit_codes)

    def on_quit(self, exit_code: int, **_: Any) -> None:
        """After Locust's own summary: the verdict table, the report's path, the exit code last."""
        if self.environment is None:
            return
        ctx: RunContext | None = getattr(self.environment, ATTRIBUTE, None)
        if ctx is not None and ctx.verdict is not None:
            ctx.verdict.print()


def finish_run(ctx: RunContext, step: Callable[[str], None] | None = None) -> None:
    """Everything after the load, once per run: heal the chaos, wait for the samples, drain, read the truth,
    write run.json, analyse and write the report. Exit codes go to ``ctx.exit_codes``; ``step(text)`` is
    told each part as it begins (the web UI shows it). Never raises."""
    environment, codes = ctx.environment, ctx.exit_codes

    def say(text: str) -> None:
        log.info("bridgestorm: %s", text)
        if step is not None:
            step(text)

    try:
        _stop_chaos(ctx)
        ctx.ended_at = ctx.ended_at or time.time()
        if ctx.started_at is None:
            return  # nothing was run
        say("waiting for the last samples")
        _wait_for_samples(ctx)
        _write_locust_stats(ctx)
        opts = environment.parsed_options
        dead = _dead_parts(ctx)
        if dead:  # the report is still written: it shows what the users saw when it died
            log.error("bridgestorm: the stack died during the run: %s not running", ", ".join(dead))
            codes.append(EXIT_BROKEN)
        if not opts.no_report:
            say(f"draining: waiting (up to {opts.drain:g} s) for the system to store what it acknowledged")
            _drain(ctx, opts.drain)
        _stop_sampler(ctx)
        _write_run_info(ctx)
        if not opts.no_report:
            say("analysing the run and writing the report")
            from analysis.report import build_report

            # in the hub, not a thread: a native thread logging through gevent's locks can stall the hub
            # (harness/aio.py); the web UI waits the few seconds this takes
            ctx.verdict = build_report(ctx.run_dir, opts.thresholds or None)
            codes.append(ctx.verdict.exit_code)
    except Exception as exc:  # noqa: BLE001 - one line (a traceback with --debug), exit 3
        report_error(environment, "the end of the run failed", exc)
        codes.append(EXIT_BROKEN)
    finally:
        _stop_sampler(ctx)
        if ctx.chaos_broken:
            log.error("bridgestorm: the chaos experiment did not run as planned: %s", ctx.chaos_broken)
            codes.append(EXIT_BROKEN)
        elif ctx.chaos_deviated:
            log.warning("bridgestorm: the chaos experiment's steady state did not come back after its faults")
            codes.append(1)
        ctx.finished = True
        ctx.runs.append({"run_dir": ctx.run_dir, "scenario": ctx.scenario,
                         "verdict": ctx.verdict.status if ctx.verdict is not None else "no report"})


def _begin_next_run(ctx: RunContext) -> None:
    """A new run on the same stack, after the previous one finished: its own run directory and namespace.

    The web UI can start and stop any number of times; each Start is one run with one report. The
    previous run's report is finished first. A run directory the form names that no run used yet is
    taken; otherwise a new one under reports/.
    """
    if ctx.finishing is not None:
        ctx.finishing.join()
    environment, opts = ctx.environment, ctx.environment.parsed_options
    scenario = scenario_name(environment)
    wanted = str(getattr(opts, "run_dir", "") or "")
    used = bool(wanted) and _run_started_in(Path(wanted))
    run_dir = wanted if wanted and not used else str(REPO / "reports" / new_run_id(scenario))
    n = 2
    while run_dir != wanted and Path(run_dir).exists():  # two runs within one second
        run_dir, n = f"{run_dir.rsplit('~', 1)[0]}~{n}", n + 1
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / "locust").mkdir(exist_ok=True)
    opts.html_file = str(Path(run_dir) / "locust" / "report.html")
    ctx.next_run(scenario, run_dir, namespace_for(run_dir))
    log.info("bridgestorm: a new run in %s", run_dir)


def _run_started_in(run_dir: Path) -> bool:
    """A run began in this directory (its run.json has a start): a new one must not mix with it."""
    try:
        return bool(json.loads((run_dir / "run.json").read_text(encoding="utf-8")).get("started_at"))
    except (OSError, ValueError, AttributeError):
        return False


def _dead_parts(ctx: RunContext) -> list[str]:
    """The embedded stack's processes that are gone at the end of the load (chaos heals what it killed)."""
    if not ctx.embedded:
        return []
    from stack.state import StateFile

    parts = StateFile(ctx.stack_state).read().parts.values()
    return sorted(p.name for p in parts if p.kind == "process" and p.pid is not None and p.process() is None)


def _wait_for_followers(ctx: RunContext, timeout: float = 30.0) -> None:
    """The e2e waits still running when the users stopped record their results (each is bounded by its timeout)."""
    if len(ctx.followers):
        log.info("waiting for %d end-to-end result(s) still in flight", len(ctx.followers))
        ctx.followers.join(timeout=timeout)
        ctx.followers.kill(block=False)


def _stop_chaos(ctx: RunContext) -> None:
    """Stop the experiment (healing whatever is still injected); what did not run as planned is recorded.

    An experiment cut short by the end of the load is fine once one of its faults ran (scenarios' short
    forms do that); one that failed, was aborted or never injected a fault tested nothing.
    """
    if ctx.chaos is None:
        return
    handle, ctx.chaos = ctx.chaos, None
    try:
        result = handle.stop()
    except Exception as exc:  # noqa: BLE001 - the runner itself broke
        ctx.chaos_broken = f"{type(exc).__name__}: {exc}"
        return
    if result is None:
        ctx.chaos_broken = "it did not finish healing in time"
    elif result.status in ("failed", "aborted"):
        ctx.chaos_broken = f"{result.status}: {result.error or 'a fault was not injected or not healed'}"
    elif result.status == "interrupted" and not result.faults:
        ctx.chaos_broken = "the load ended before its first fault"
    elif result.status == "deviated":
        ctx.chaos_deviated = True


def _start_sampler(ctx: RunContext) -> None:
    """CPU, memory and consumer lag once a second from now until after the drain (harness/sampler.py)."""
    if ctx.sampler is None and not option(ctx.environment, "no_sampler", False):
        from harness.sampler import Sampler

        ctx.sampler = Sampler(ctx.run_dir, ctx.adapter, ctx.env, ctx.stack_state).start()
        ctx.recent_lag = ctx.sampler.recent  # kept after the sampler stops: the web UI's Live tab still shows it


def _stop_sampler(ctx: RunContext) -> None:
    if ctx.sampler is not None:
        sampler, ctx.sampler = ctx.sampler, None
        sampler.stop()  # writes what it buffered


def _drain(ctx: RunContext, drain_s: float) -> None:
    """Wait (up to ``drain_s``) until the system stored what it acknowledged, then write the truth; then the
    fates of the messages the run injected, in what is left of ``drain_s``."""
    deadline = time.monotonic() + drain_s
    kinds = ctx.adapter.truth_kinds()
    if kinds:
        log.info("draining (up to %.0f s) and reading the truth", drain_s)
        expected, sent = drain.ledger_items(ctx.run_dir, kinds)
        rows = bridge().run(drain.drain_and_read(ctx.adapter, ctx.env, ctx.namespace, drain_s, expected=expected,
                                                 sent=sent), timeout=drain_s + 60)
        drain.write(ctx.run_dir, rows)
    _observe(ctx)
    messages = drain.injected_messages(ctx.run_dir)
    if messages:
        wait_s = max(2.0, deadline - time.monotonic())
        log.info("looking up what became of %d injected messages (up to %.0f s)", len(messages), wait_s)
        try:
            fates = bridge().run(drain.wait_for_fates(ctx.adapter, ctx.env, messages, wait_s), timeout=wait_s + 60)
        except Exception as exc:  # noqa: BLE001 - the report is still written; `unaccounted` then has no data
            report_error(ctx.environment, "looking up the injected messages failed", exc)
            return
        if fates is None:
            log.info("the %s adapter cannot tell what became of injected messages", ctx.adapter.name)
        else:
            drain.write_fates(ctx.run_dir, fates)


def _observe(ctx: RunContext) -> None:
    """What the system reports about the run (SystemAdapter.observe) into ``observations.json``."""
    try:
        observed = bridge().run(ctx.adapter.observe(ctx.env, ctx.namespace), timeout=30)
    except Exception as exc:  # noqa: BLE001 - the report is still written; `observed` then has no data
        report_error(ctx.environment, "reading what the system observed failed", exc)
        return
    if observed:
        from rundir.write import write_observations

        write_observations(ctx.run_dir, observed)
        log.info("the system observed: %s", ", ".join(f"{k}={v:g}" for k, v in sorted(observed.items())))


def _wait_for_samples(ctx: RunContext, timeout: float = 30.0) -> int:
    """Wait until the samples on disk from every process add up to Locust's own total (workers flush late)."""
    import pyarrow.parquet as pq

    runner = ctx.environment.runner
    want = runner.stats.total.num_requests if runner else 0
    deadline = time.monotonic() + timeout
    while True:
        d = Path(ctx.run_dir) / "samples"
        have = sum(pq.read_metadata(p).num_rows for p in d.glob("*.parquet")) if d.is_dir() else 0
        if have >= want or time.monotonic() > deadline:
            if have != want:
                log.warning("samples on disk: %d, Locust counted %d", have, want)
            return have
        gevent.sleep(0.2)


def _write_locust_stats(ctx: RunContext) -> None:
    """Locust's own totals as CSV next to its HTML report (its rounded view, kept for comparison)."""
    out = Path(ctx.run_dir) / "locust"
    out.mkdir(exist_ok=True)
    writer = locust_stats.StatsCSV(ctx.environment, locust_stats.PERCENTILES_TO_REPORT)
    with open(out / "stats.csv", "w", newline="") as f:
        writer.requests_csv(csv.writer(f))
    with open(out / "failures.csv", "w", newline="") as f:
        writer.failures_csv(csv.writer(f))


_installed: Hooks | None = None


def install(adapter: SystemAdapter) -> None:
    """Register the hooks once, for the system under test that ``adapter`` describes.

    A run has one system: several locustfiles of one run may each call this with the same adapter class.
    """
    global _installed
    if _installed is not None:
        if type(_installed.adapter) is not type(adapter):
            raise RuntimeError(f"one run, one system: install({type(adapter).__name__}()) after "
                               f"install({type(_installed.adapter).__name__}())")
        return
    hooks = _installed = Hooks(adapter)
    events.init_command_line_parser.add_listener(add_options)
    events.init.add_listener(hooks.on_init)
    events.test_start.add_listener(hooks.on_test_start)
    events.test_stop.add_listener(hooks.on_test_stop)
    events.quitting.add_listener(hooks.on_quitting)
    events.quit.add_listener(hooks.on_quit)
