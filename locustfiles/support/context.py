"""What every process needs to know about the current run: run directory, namespace, stack addresses.

The master (or the local runner) decides the run directory and starts an
embedded stack; Locust sends custom options to workers with each spawn, so a
worker resolves the same values here when its first user starts.
"""
from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from locust.env import Environment

from locustfiles.support import stackenv
from locustfiles.support.recorder import Recorder, recorder


def new_run_id(scenario: str) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{scenario}-{os.getpid() % 10000:04d}"


def namespace_for(run_dir: str) -> str:
    """The run's tenant: everything the load sends is stored under it, so truth reads only this run.

    A random suffix keeps two runs with the same directory name apart on one database.
    """
    return f"bs-{Path(run_dir).name[:40]}-{secrets.token_hex(3)}"


@dataclass
class RunContext:
    run_dir: str
    namespace: str
    env: dict[str, str]
    recorder: Recorder
    options: Any


_contexts: dict[tuple[int, str], RunContext] = {}


def option(environment: Environment, name: str, default: Any = None) -> Any:
    opts = environment.parsed_options
    value = getattr(opts, name, None) if opts is not None else None
    return default if value in (None, "") else value


def run_context(environment: Environment) -> RunContext:
    """This process's view of the run (created on first use, after the master's options arrived)."""
    run_dir = option(environment, "run_dir")
    if not run_dir:
        raise RuntimeError("no run directory: the bridgestorm hooks are not installed (call install() in the locustfile)")
    key = (os.getpid(), run_dir)
    ctx = _contexts.get(key)
    if ctx is None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        ctx = RunContext(
            run_dir=run_dir,
            namespace=option(environment, "namespace") or namespace_for(run_dir),
            env=stackenv.stack_env(option(environment, "stack_state")),
            recorder=recorder(run_dir),
            options=environment.parsed_options,
        )
        _contexts[key] = ctx
    return ctx


def current() -> list[RunContext]:
    return [c for (pid, _), c in _contexts.items() if pid == os.getpid()]
