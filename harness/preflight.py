"""Everything a run needs, checked before anything starts: one line per problem, all of them at once.

Why: a typo in an experiment file, a threshold set that does not exist or a
``--rate`` of 0 used to surface only at the end of the run (or never: the
load ran without its fault and passed). The run's owner calls ``problems()``
at Locust's init, before it writes the run directory or starts a stack; the
web UI calls ``form_problems()`` before a form's values replace the options.
Each check is a small function returning problem strings that name the
option (``--rate: ...``) or the file and line (``file:line: field: ...``).
A run refused here exits 2 (bad usage or input, nothing ran).
"""
from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "chaos" / "experiments"
EXIT_BAD_INPUT = 2

# option (its dest) -> (smallest value, whether the smallest is allowed, whole numbers only)
NUMBERS: dict[str, tuple[float, bool, bool]] = {
    "drain": (0, True, False),
    "max_lateness": (0, False, False),
    "e2e_timeout": (0, True, False),
    "burst": (1, True, True),
    "shape_users": (0, True, True),
    "shape_rate": (0, True, False),
    "shape_duration": (0, True, False),
    "shape_burst_at": (0, True, False),
    "shape_burst_for": (0, True, False),
    "shape_step_users": (0, True, True),
    "shape_step_s": (0, True, False),
}
SCENARIO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


def flag(dest: str) -> str:
    """The command-line spelling of an option's dest: ``max_lateness`` -> ``--max-lateness``."""
    return "--" + dest.replace("_", "-")


def _number(value: Any) -> float | None:
    """A number from an option's value (a float from the command line, a string from the web UI's form)."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def shown(value: Any) -> str:
    """An option's value as the user wrote it: ``0`` rather than ``0.0``, a string quoted."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, str) else str(value)


def check_number(dest: str, value: Any) -> list[str]:
    """A numeric option within its range (NUMBERS)."""
    if value in (None, ""):
        return []
    low, low_allowed, whole = NUMBERS[dest]
    number = _number(value)
    kind = "a whole number" if whole else "a number"
    bound = f">= {low:g}" if low_allowed else f"> {low:g}"
    if number is None or (whole and not number.is_integer()) or number < low or (number == low and not low_allowed):
        return [f"{flag(dest)}: must be {kind} {bound}, got {shown(value)}"]
    return []


def check_rate(value: Any) -> list[str]:
    """``--rate`` given: a number of arrivals per second > 0 (left out, the users run closed-loop)."""
    if value in (None, ""):
        return []
    number = _number(value)
    if number is None or number <= 0:
        return [f"--rate: must be a number of arrivals per second > 0 (leave it out for a closed loop), "
                f"got {shown(value)}"]
    return []


def check_scenario(name: str) -> list[str]:
    """The scenario names the run directory and the report: a plain file name."""
    if name and not SCENARIO_NAME.match(name):
        return [f"--scenario: {name!r} is not a plain name (letters, digits, '.', '_', '-'; it names the run "
                "directory)"]
    return []


def check_run_dir(path: str) -> list[str]:
    """``--run-dir``: a directory, or a path one can be made at."""
    if not path:
        return []
    p = Path(path)
    if p.exists() and not p.is_dir():
        return [f"--run-dir: {path} exists and is not a directory"]
    parent = next((a for a in (p, *p.parents) if a.exists()), None)
    if parent is not None and not (parent.is_dir() and os.access(parent, os.W_OK)):
        return [f"--run-dir: {path}: {parent} is not a writable directory"]
    return []


def experiment_path(ref: str) -> Path | None:
    """A chaos experiment reference: a path, or the name of a shipped experiment (None: neither)."""
    for candidate in (Path(ref), EXPERIMENTS / ref, EXPERIMENTS / f"{ref}.yaml"):
        if candidate.is_file():
            return candidate
    return None


def check_chaos(ref: str, run_time_s: float | None = None) -> list[str]:
    """``--chaos``: the file exists and parses (every ``file:line: field`` mistake), and its first fault
    starts before ``--run-time`` ends the load (else the experiment would silently test nothing)."""
    if not ref:
        return []
    from chaos.experiment import ExperimentError, load

    path = experiment_path(ref)
    if path is None:
        shipped = ", ".join(sorted(p.stem for p in EXPERIMENTS.glob("*.yaml")))
        return [f"--chaos: {ref!r} is neither a file nor a shipped experiment ({shipped})"]
    try:
        plan = load(path).plan()
    except ExperimentError as exc:
        return [f"{path}:{line or '?'}: {field + ': ' if field else ''}{message}"
                for line, field, message in exc.problems]
    if run_time_s and plan.faults and plan.faults[0].at >= run_time_s:
        return [f"--chaos {ref}: its first fault starts at {plan.faults[0].at:g} s, after --run-time "
                f"({run_time_s:g} s) ends the load"]
    return []


def check_thresholds(ref: str, scenario: str) -> list[str]:
    """``--thresholds`` (else the scenario's shipped set, when there is one) exists and parses."""
    from analysis.thresholds import SHIPPED, ThresholdError, load_thresholds, resolve

    if not ref:
        default = SHIPPED / f"{scenario}.yaml"
        if not default.is_file():
            return []
        path = default
    else:
        path = resolve(ref)
        if not path.is_file():
            shipped = ", ".join(sorted(p.stem for p in SHIPPED.glob("*.yaml")))
            return [f"--thresholds: {ref!r} is neither a file nor a shipped set ({shipped})"]
    try:
        load_thresholds(path)
    except ThresholdError as exc:
        return [str(exc)]
    return []


def _address(value: str) -> tuple[str, int] | None:
    """host:port of a bootstrap list's first entry or of a URL (None when there is none)."""
    from urllib.parse import urlsplit

    first = value.split(",")[0].strip()
    if "://" in first:
        parts = urlsplit(first)
        default = {"http": 80, "https": 443, "postgresql": 5432, "postgres": 5432}.get(parts.scheme)
        try:
            port = parts.port or default
        except ValueError:
            return None
        return (parts.hostname, port) if parts.hostname and port else None
    host, sep, port = first.rpartition(":")
    return (host.strip("[]"), int(port)) if sep and port.isdigit() else None


def check_stack(mode: str, state_path: str, keys: Iterable[str]) -> list[str]:
    """``--stack external`` (or auto, finding one): every address the run will use answers on TCP."""
    from harness.stackenv import stack_env
    from stack.processes import tcp_answers
    from stack.state import StateFile

    state = state_path or str(StateFile(None).path)
    if mode == "auto":
        found = bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")) or StateFile(state).exists()
        mode = "external" if found else "embedded"
    if mode != "external":
        return []
    env = stack_env(state, keys)
    if not env.get("KAFKA_BOOTSTRAP_SERVERS"):
        return [f"--stack external: no stack found (no state file {state}, no KAFKA_BOOTSTRAP_SERVERS): start "
                "one (`python -m stack up`), or use --stack embedded"]
    problems = []
    network = ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")
    for key in (*network, *keys):
        value = env.get(key)
        if not value:
            continue
        address = _address(value)
        if address is None and key not in network:
            continue  # an adapter's value that names no host (a file path, a store): nothing to reach
        if address is None:
            problems.append(f"--stack external: {key}={value!r} is not host:port or a URL")
        elif not tcp_answers(*address, timeout=1.0):
            problems.append(f"--stack external: {key} {address[0]}:{address[1]} does not answer")
    return problems


def problems(opts: Any, scenario: str, env_keys: Iterable[str] = ()) -> list[str]:
    """Every problem with a run's options, files and stack, in the order of the options."""
    found = check_scenario(scenario)
    found += check_rate(getattr(opts, "rate", None))
    for dest in NUMBERS:
        found += check_number(dest, getattr(opts, dest, None))
    found += check_run_dir(getattr(opts, "run_dir", "") or "")
    timed = getattr(opts, "headless", False) or getattr(opts, "autostart", False)  # else the form's run time
    run_time = getattr(opts, "run_time", None) if timed else None
    found += check_chaos(getattr(opts, "chaos", "") or "", run_time)
    if getattr(opts, "no_report", False) and getattr(opts, "thresholds", ""):
        found.append("--thresholds with --no-report: the thresholds would never be checked")
    else:
        found += check_thresholds(getattr(opts, "thresholds", "") or "", scenario)
    found += check_stack(getattr(opts, "stack", "auto"), getattr(opts, "stack_state", "") or "", env_keys)
    return found


def form_problems(form: Mapping[str, str], scenario: str) -> list[str]:
    """The bridgestorm fields of the web UI's start form (strings, as the browser sent them)."""
    found = check_rate(form.get("rate"))
    for dest in NUMBERS:
        found += check_number(dest, form.get(dest))
    found += check_run_dir(form.get("run_dir", ""))
    found += check_chaos(form.get("chaos", ""))
    found += check_thresholds(form.get("thresholds", ""), scenario)
    return found


def refuse(found: list[str]) -> NoReturn:
    """Print each problem on its own line and exit 2: nothing has started, nothing was written."""
    for line in found:
        print(f"error: {line}", file=sys.stderr)
    sys.stderr.flush()
    raise SystemExit(EXIT_BAD_INPUT)
