"""Thresholds: a YAML list of one-line checks, parsed with line numbers and evaluated on an analysis.

A threshold file is a YAML list of strings (or a mapping with a ``thresholds:``
list and optional ``description:``)::

    - p95(workflow→completed) < 400ms
    - throughput(POST /stamp) > 1000/s
    - lost == 0
    - duplicated < 0.1%
    - recovery(broker-kill) < 2s

Each line is ``metric[(argument)] operator number[unit]``. METRICS is the
registry of metric kinds: each MetricSpec says which units the metric takes,
what its argument selects, and carries the function that measures it on a
MeasuredRun (a new kind is one measure function and one entry). A threshold
whose input is absent (no such sample name, no ledger, no such fault) fails
with "no data": a check that cannot be made proves nothing. A measure
function that raises gives its row "error" and the others still evaluate:
the verdict is then unknown, neither pass nor fail. So is it when a check
that the load's own pace can fail (a latency, a rate, a fault's phase
numbers or recovery) failed in a window where the generator was the
bottleneck (analysis/generator.py): its row is "generator-limited".
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from analysis.loss import CATEGORIES, percent
from analysis.measured import MeasuredRun
from analysis import injected as injected_mod
from analysis import recovery
from analysis.metrics import summarize
from analysis.recovery import PHASE_STATS, PHASES
from analysis.stalls import STALL_AFTER_S


OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}

# unit -> (dimension, factor to the dimension's base unit)
UNITS: dict[str, tuple[str, float]] = {
    "ms": ("latency", 1.0),  # base: milliseconds
    "s": ("latency", 1000.0),
    "/s": ("rate", 1.0),  # base: per second
    "/min": ("rate", 1 / 60),
    "%": ("percent", 1.0),
    "": ("count", 1.0),
}


Measure = Callable[["Threshold", MeasuredRun], tuple[float | None, str]]


@dataclass(frozen=True)
class MetricSpec:
    """A metric kind: its dimension (which units it accepts), what its argument means, how it is measured.

    ``measure(threshold, analysis)`` returns the value in the dimension's base
    unit (None when there is nothing to measure) and a detail for the report.
    """

    dimension: str  # latency (ms), duration (s), rate (/s), percent, count, count_or_percent
    argument: str  # what the argument selects; "" when the metric takes none
    help: str
    measure: Measure


# --------------------------------------------------------------------------
# measure functions, one per group of metrics that read the same part of the analysis


def _worst(values: list[float], metric_op: str) -> float:
    """The value that decides a check over several things: the largest for '<' checks, else the smallest."""
    return max(values) if metric_op in ("<", "<=", "==", "!=") else min(values)


def _missing(v: Any) -> bool:
    """A value the analysis left empty (None or NaN): a fault or burst that never recovered."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def measure_samples(t: Threshold, a: MeasuredRun) -> tuple[float | None, str]:
    """Latency (p50 ... max, service_*), throughput, count and errors over the samples the argument selects."""
    stats = a.metrics.select(t.argument)
    if stats is None:
        known = ", ".join(sorted(set(a.metrics.names["name"].astype(str))))
        return None, f"no samples named {t.argument!r} (names: {known})"
    if t.metric == "count":
        return float(stats["count"]), ""
    if t.metric == "errors" and t.unit == "%":
        return stats["error_rate"], f"{stats['failures']:,} of {stats['count']:,} failed"
    if t.metric == "errors":
        return float(stats["failures"]), f"of {stats['count']:,} samples"
    if t.metric == "throughput":
        return stats["throughput"], f"{stats['ok']:,} ok in {stats['window_s']:.1f} s"
    return stats[t.metric], f"{stats['count']:,} samples"  # a latency: the summary has a key per metric


def measure_steady(t: Threshold, a: MeasuredRun) -> tuple[float | None, str]:
    """A latency over the selected samples due in the steady state (recovery.outside_faults)."""
    subset = a.metrics.selection(t.argument)
    if subset is None or subset.empty:
        known = ", ".join(sorted(set(a.metrics.names["name"].astype(str))))
        return None, f"no samples named {t.argument!r} (names: {known})"
    steady = subset[recovery.outside_faults(subset, a.faults)]
    if steady.empty:
        return None, f"none of the {len(subset):,} samples was due outside a fault and its recovery"
    stats = summarize(steady)
    return stats[t.metric.removeprefix("steady_")], f"{len(steady):,} of {len(subset):,} samples (outside faults)"


def measure_loss(t: Threshold, a: MeasuredRun) -> tuple[float | None, str]:
    """A loss category (lost, duplicated...) of one ledger kind or all, as a count or % of its denominator."""
    loss = a.loss
    if not loss.available:
        return None, loss.reason
    n = loss.count(t.metric, t.argument)
    if n is None:
        return None, f"no ledger or truth items of kind {t.argument!r}"
    whole = loss.denominator(t.metric, t.argument)
    if t.unit == "%":
        return percent(n, whole), f"{n:,} of {whole:,}"
    return float(n), f"of {whole:,}"


FAULT_COLUMNS = {"recovery": "recovery_s", "first_success": "first_success_s", "fault_errors": "during_error_rate"}


def _select_faults(t: Threshold, a: MeasuredRun) -> tuple[pd.DataFrame | None, str]:
    """The faults the argument names (name, id or action; every fault without one), or None and why not.

    Faults injected after the load ended are left out: nothing was offered to measure them by.
    """
    faults = a.faults
    if faults.empty:
        return None, "no faults in chaos.jsonl"
    sel = faults
    if t.argument:
        sel = faults[(faults["name"] == t.argument) | (faults["fault_id"] == t.argument)
                     | (faults["action"] == t.argument)]
        if sel.empty:
            return None, f"no fault named {t.argument!r} (faults: {', '.join(map(str, faults['name'].unique()))})"
    if "after_load" in sel.columns:
        sel = sel[~sel["after_load"].fillna(False).astype(bool)]
        if sel.empty:
            return None, "injected after the load ended: nothing was offered to measure it by"
    return sel, ""


def measure_fault(t: Threshold, a: MeasuredRun) -> tuple[float | None, str]:
    """A column of the faults table (FAULT_COLUMNS) over the selected faults; never recovered is infinite."""
    sel, why = _select_faults(t, a)
    if sel is None:
        return None, why
    values = [math.inf if _missing(v) else float(v) for v in sel[FAULT_COLUMNS[t.metric]]]
    detail = f"{len(sel)} fault(s)"
    if t.metric != "fault_errors" and math.inf in values:
        detail += ": not recovered (" + "; ".join(n for n in sel["note"] if n) + ")"
    return _worst(values, t.op), detail


def measure_fault_phase(t: Threshold, a: MeasuredRun) -> tuple[float | None, str]:
    """A phase's number (``during_p95``, ``before_offered``, ``offered_ratio`` ...) over the selected faults.

    A phase with no samples has no number: it is left out, and with none left the check has no data.
    """
    sel, why = _select_faults(t, a)
    if sel is None:
        return None, why
    if t.metric not in sel.columns:
        return None, "no fault was analysed in phases (it was never injected)"
    values = [float(v) for v in sel[t.metric] if not _missing(v)]
    if not values:
        return None, f"{len(sel)} fault(s), none with samples in that phase"
    return _worst(values, t.op), f"{len(values)} fault(s)"


def measure_drain(t: Threshold, a: MeasuredRun) -> tuple[float | None, str]:
    """Drain or replay time of the selected faults (analysis/backlog.py); never is infinite, unknown is no data."""
    sel, why = _select_faults(t, a)
    if sel is None:
        return None, why
    what = "replay" if t.metric == "replay_time" else "drain"
    if f"{what}_s" not in sel.columns:
        return None, f"no {what} time was analysed"
    unknown = sel[[_missing(v) for v in sel[f"{what}_s"]]]
    if len(unknown):
        return None, "; ".join(f"{name}: {note}" for name, note in zip(unknown["name"], unknown[f"{what}_note"]))
    values = [float(v) for v in sel[f"{what}_s"]]
    detail = f"{len(sel)} fault(s)"
    if math.inf in values:
        detail += f": not {what}ed (" + "; ".join(n for n in sel[f"{what}_note"] if n) + ")"
    return _worst(values, t.op), detail


def measure_burst_recovery(t: Threshold, a: MeasuredRun) -> tuple[float | None, str]:
    """Time back to baseline after each burst; never back is infinite."""
    b = a.bursts
    if b.empty:
        return None, "no burst found (journal action 'burst', or a detected rate spike)"
    values = [math.inf if _missing(v) else float(v) for v in b["back_to_baseline_s"]]
    return _worst(values, t.op), f"{len(b)} burst(s), {b['source'].iloc[0]}"


# metric -> (key of the change, key of the first window's value, key of the last window's value)
DEGRADATION_KEYS = {
    "degradation": ("latency_degradation_pct", "p95_first", "p95_last"),
    "throughput_drop": ("throughput_drop_pct", "throughput_first", "throughput_last"),
}


def measure_degradation(t: Threshold, a: MeasuredRun) -> tuple[float | None, str]:
    """The last window against the first (DEGRADATION_KEYS) of the selected samples."""
    d = a.degradation_of(t.argument)
    if not d:
        return None, f"no samples for {t.argument or 'the run'}"
    change, first, last = DEGRADATION_KEYS[t.metric]
    return d[change], f"first {d['window_s']:.0f} s: {d[first]:.4g}, last: {d[last]:.4g}"


def measure_memory_growth(t: Threshold, a: MeasuredRun) -> tuple[float | None, str]:
    """RSS growth of one part, or the worst part."""
    mem = a.memory
    if mem.empty:
        return None, "no resources/ samples"
    sel = mem if not t.argument else mem[mem["part"] == t.argument]
    if sel.empty:
        return None, f"no part named {t.argument!r}"
    return _worst([float(v) for v in sel["growth_pct"]], t.op), ", ".join(sel["part"])


def measure_cpu(t: Threshold, a: MeasuredRun) -> tuple[float | None, str]:
    """CPU of one part, or the worst part, in % of one core: the mean or the largest sample."""
    cpu = a.metrics.cpu
    if cpu.empty:
        return None, "no resources/ samples"
    sel = cpu if not t.argument else cpu[cpu["part"] == t.argument]
    if sel.empty:
        return None, f"no part named {t.argument!r} (parts: {', '.join(cpu['part'])})"
    detail = f"{int(sel['count'].sum()):,} samples of {', '.join(sel['part'])}"
    return _worst([float(v) for v in sel[t.metric]], t.op), detail


def measure_lag(t: Threshold, a: MeasuredRun) -> tuple[float | None, str]:
    """A lag statistic (the metric's name after ``lag_``) of one consumer, or the worst consumer."""
    lag = a.metrics.lag
    if lag.empty:
        return None, "no lag/ samples"
    sel = lag if not t.argument else lag[lag["consumer"].astype(str) == t.argument]
    if sel.empty:
        return None, f"no consumer named {t.argument!r}"
    column = t.metric.removeprefix("lag_")
    return _worst([float(v) for v in sel[column]], t.op), ", ".join(sel["consumer"].astype(str))


def measure_stalled(t: Threshold, a: MeasuredRun) -> tuple[float | None, str]:
    """Consumer stalls that count (analysis/stalls.py) of one group, or of every group."""
    if a.stalls is None:
        raise RuntimeError(f"the stalls could not be found: {a.stalls_error}")
    lag = a.run.lag
    if lag is None or "committed" not in lag or not lag["committed"].notna().any():
        return None, "no committed positions in lag/ (no consumer group's lag was sampled)"
    groups = sorted(set(lag.loc[lag["committed"].notna(), "consumer"].astype(str)))
    if t.argument and t.argument not in groups:
        return None, f"no consumer group named {t.argument!r} (sampled: {', '.join(groups)})"
    sel = a.stalls if not t.argument else a.stalls[a.stalls["consumer"] == t.argument]
    counted = sel[sel["counted"].astype(bool)] if not sel.empty else sel
    if counted.empty:
        excused = len(sel)
        return 0.0, f"no stall in {t.argument or f'{len(groups)} groups'}" + (
            f" ({excused} while a fault was on)" if excused else "")
    t0 = a.metrics.t0
    return float(len(counted)), "; ".join(
        f"{r.consumer} at +{r.start_ts - t0:.0f} s for {r.length_s:.0f} s{' (still at the end)' if r.ongoing else ''},"
        f" lag up to {r.max_lag}" for r in counted.itertuples())


def measure_max_lag(t: Threshold, a: MeasuredRun) -> tuple[float | None, str]:
    """The largest lag in messages of one consumer group (or system backlog), or of the worst one."""
    table = a.metrics.lag_messages
    if table.empty:
        return None, "no lag in messages in lag/"
    sel = table if not t.argument else table[table["consumer"].astype(str) == t.argument]
    if sel.empty:
        return None, f"no consumer named {t.argument!r} (sampled: {', '.join(table['consumer'].astype(str))})"
    worst = sel.loc[sel["max"].astype(float).idxmax()]
    return float(worst["max"]), f"{worst['consumer']}, {int(worst['count'])} samples"


def measure_injected(t: Threshold, a: MeasuredRun) -> tuple[float | None, str]:
    """Injected messages (of one class) that a consumer group neither dead-lettered nor applied (analysis/injected.py)."""
    if a.injected is None:
        raise RuntimeError(f"the injected messages could not be summarised: {a.injected_error}")
    faults = injected_mod.injected_faults(a.run.journal)
    if not faults:
        return None, "no topic fault of this run published messages"
    if a.run.injected is None:
        return None, (f"{len(faults)} topic fault(s) published messages, but the adapter did not say what became"
                      " of them (SystemAdapter.message_fates)")
    classes = sorted(set(a.injected["class"]))
    if t.argument and t.argument not in classes:
        return None, f"no injected message of class {t.argument!r} (injected: {', '.join(classes)})"
    count, detail = injected_mod.unaccounted(a.injected, t.argument or None)
    return float(count), detail


def measure_observed(t: Threshold, a: MeasuredRun) -> tuple[float | None, str]:
    """A number the system reported about the run (SystemAdapter.observe, observations.json)."""
    observed = a.run.observations
    if observed is None:
        return None, "the system reported nothing about this run (SystemAdapter.observe)"
    if t.argument not in observed:
        return None, f"the system did not report {t.argument!r} (reported: {', '.join(sorted(observed)) or 'nothing'})"
    return observed[t.argument], "reported by the system"


PHASE_DIMENSIONS = {"offered": "rate", "achieved": "rate", "dropped": "count", "p50": "latency", "p95": "latency",
                    "p99": "latency", "errors": "percent", "timeouts": "count"}
PHASE_HELP = {"before": "the 30 s before the fault", "during": "while the fault was on",
              "after": "the 30 s after the heal"}
PHASE_STAT_HELP = {"offered": "arrivals per second, started or dropped", "achieved": "arrivals started per second",
                   "dropped": "arrivals no user could start", "p50": "p50 latency from the intended start",
                   "p95": "p95 latency from the intended start", "p99": "p99 latency from the intended start",
                   "errors": "failed samples, % of those started", "timeouts": "samples that timed out"}
_LAT = "a sample name, a request type (kafka/http/e2e) or nothing for all samples"
_FAULT = "a fault name, id or action, or nothing"
_PART = "a part name (a stack part, locust), or nothing for the worst part"
METRICS: dict[str, MetricSpec] = {
    **{p: MetricSpec("latency", _LAT, f"{p} latency from the intended start where recorded, else service time",
                     measure_samples)
       for p in ("p50", "p90", "p95", "p99", "p99.9", "mean", "min", "max")},
    **{f"service_{p}": MetricSpec("latency", _LAT, f"{p} service time (from the actual start)", measure_samples)
       for p in ("p50", "p95", "p99", "mean", "max")},
    **{f"steady_{p}": MetricSpec("latency", _LAT, f"{p} latency from the intended start of the samples due outside "
                                 "every fault (from its injection to its heal plus its recovery time)", measure_steady)
       for p in ("p50", "p90", "p95", "p99", "max")},
    "throughput": MetricSpec("rate", _LAT, "successes per second over the selection's window", measure_samples),
    "count": MetricSpec("count", _LAT, "number of samples", measure_samples),
    "errors": MetricSpec("count_or_percent", _LAT, "failed samples: a count, or % of samples", measure_samples),
    **{c: MetricSpec("count_or_percent", "a ledger kind (workflow, stamp, introspection, event, adapter-event, dead-letter) or nothing",
                     f"loss accounting: {c} items (count, or % of distinct items sent; unexpected: of stored)",
                     measure_loss)
       for c in CATEGORIES},
    "recovery": MetricSpec("duration", f"{_FAULT} for every fault",
                           "recovery time after heal (worst fault); never recovered = infinite", measure_fault),
    "first_success": MetricSpec("duration", _FAULT, "time from heal to the first success (worst fault)",
                                measure_fault),
    "fault_errors": MetricSpec("percent", _FAULT, "error rate while the fault was active (worst fault)",
                               measure_fault),
    **{f"{phase}_{stat}": MetricSpec(PHASE_DIMENSIONS[stat], _FAULT, f"{PHASE_HELP[phase]}: {PHASE_STAT_HELP[stat]}",
                                     measure_fault_phase)
       for phase in PHASES for stat in PHASE_STATS},
    "offered_ratio": MetricSpec("percent", _FAULT, "offered rate during the fault, % of the rate before it "
                                "(an open-model load keeps offering: near 100 %)", measure_fault_phase),
    "burst_recovery": MetricSpec("duration", "", "time back to baseline after a burst (worst burst)",
                                 measure_burst_recovery),
    "degradation": MetricSpec("percent", _LAT, "p95 increase, last window vs first window of the run",
                              measure_degradation),
    "throughput_drop": MetricSpec("percent", _LAT, "throughput drop, last window vs first window",
                                  measure_degradation),
    "drain_time": MetricSpec("duration", f"{_FAULT} for every fault",
                             "from the heal until the backlog (consumer lag, outbox) is back to its pre-fault "
                             "level (worst fault); never drained = infinite", measure_drain),
    "replay_time": MetricSpec("duration", f"{_FAULT} for every fault",
                              "from the heal until the system's own backlog (e.g. unsent outbox rows) is back to its "
                              "pre-fault level (worst fault): the replay after the broker's return; never = infinite",
                              measure_drain),
    "memory_growth": MetricSpec("percent", _PART, "RSS growth, last window vs first window", measure_memory_growth),
    "cpu_mean": MetricSpec("percent", _PART, "mean CPU over the run, % of one core", measure_cpu),
    "cpu_max": MetricSpec("percent", _PART, "largest one-second CPU sample, % of one core", measure_cpu),
    "stalled": MetricSpec("count", "a consumer group, or nothing for every group",
                          f"consumer stalls: lag with no committed progress for {STALL_AFTER_S:.0f} s or more outside "
                          "the fault windows (analysis/stalls.py)", measure_stalled),
    "max_lag": MetricSpec("count", "a consumer group or system backlog, or nothing for the worst",
                          "largest lag in messages (the sampler's, once a second)", measure_max_lag),
    "unaccounted": MetricSpec("count", "a message class (malformed, huge, replay, ...), or nothing for all",
                              "injected messages some consumer group neither dead-lettered nor applied, or applied"
                              " though not JSON objects (analysis/injected.py)", measure_injected),
    "observed": MetricSpec("number", "a name the system reports (SystemAdapter.observe)",
                           "a number the system under test reported about the run, read after the drain",
                           measure_observed),
    **{f"lag_{p}": MetricSpec("latency", "a consumer name, or nothing for the worst consumer", f"consumer lag {p}",
                              measure_lag)
       for p in ("p50", "p95", "p99", "max")},
}

NEEDS_ARGUMENT = {"observed"}  # a metric that means nothing over "everything"

ALLOWED_UNITS: dict[str, tuple[str, ...]] = {
    "latency": ("ms", "s"),
    "duration": ("s", "ms"),
    "rate": ("/s", "/min", ""),
    "percent": ("%",),
    "count": ("",),
    "count_or_percent": ("", "%"),
    "number": ("",),
}


class ThresholdError(Exception):
    """A mistake in a threshold file; the message is ``file:line: what is wrong``."""

    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}:{line}: {message}")
        self.file, self.line, self.message = file, line, message


@dataclass(frozen=True)
class Threshold:
    """One parsed check. ``limit`` is in the dimension's base unit (ms, s, /s, %, count)."""

    text: str
    metric: str
    argument: str | None
    op: str
    limit: float
    unit: str
    file: str = "<string>"
    line: int = 0

    @property
    def display_unit(self) -> str:
        return {"latency": "ms", "duration": "s", "rate": "/s"}.get(METRICS[self.metric].dimension, self.unit)


@dataclass
class Result:
    """A threshold with its measured value (base unit) and verdict."""

    threshold: Threshold
    measured: float | None
    status: str  # pass, fail, no data, error (measuring raised), generator-limited (failed where the load was the bottleneck)
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "pass"


_LEFT = re.compile(r"^(?P<metric>[A-Za-z_][A-Za-z0-9_.]*)\s*(?:\((?P<arg>.*)\))?$")
_RIGHT = re.compile(r"^(?P<num>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*(?P<unit>\S*)$")
_OP = re.compile(r"(<=|>=|==|!=|<|>|=)")


def parse_expression(text: str, file: str = "<string>", line: int = 0) -> Threshold:
    """Parse one ``metric(arg) op number unit`` line; ThresholdError says what is wrong."""
    expr = text.strip()

    def fail(msg: str) -> ThresholdError:
        return ThresholdError(file, line, f"{msg} in {expr!r}")

    # the operator is the first one after the argument's closing parenthesis (names may hold anything)
    cut = expr.rfind(")") + 1 if "(" in expr else 0
    m = _OP.search(expr, cut)
    if not m:
        raise fail("no comparison operator (one of < <= > >= == !=)")
    op = m.group(1)
    if op == "=":
        raise fail("'=' is not an operator; use '=='")
    left, right = expr[: m.start()].strip(), expr[m.end():].strip()
    lm = _LEFT.match(left)
    if not left:
        raise fail("no metric before the operator")
    if not lm:
        raise fail(f"cannot read the metric {left!r} (expected e.g. p95(name) or lost)")
    metric, arg = lm["metric"], lm["arg"]
    if metric not in METRICS:
        close = difflib.get_close_matches(metric, METRICS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(METRICS)})"
        raise fail(f"unknown metric {metric!r}{hint}")
    spec = METRICS[metric]
    if arg is not None:
        arg = arg.strip()
        if not arg:
            raise fail(f"empty argument in {metric}(); leave the parentheses out to mean everything")
        if not spec.argument:
            raise fail(f"{metric} takes no argument")
    elif metric in NEEDS_ARGUMENT:
        raise fail(f"{metric} needs an argument: {metric}(<{spec.argument}>)")
    if not right:
        raise fail("no limit after the operator")
    rm = _RIGHT.match(right)
    if not rm:
        raise fail(f"the limit {right!r} is not a number with an optional unit")
    unit = rm["unit"]
    allowed = ALLOWED_UNITS[spec.dimension]
    if unit not in allowed:
        shown = " or ".join(repr(u) if u else "no unit" for u in allowed)
        raise fail(f"{metric} takes {shown}, not {unit!r}" if unit else f"{metric} needs a unit: {shown}")
    limit = float(rm["num"])
    if not math.isfinite(limit):
        raise fail("the limit must be a finite number")
    if spec.dimension == "duration":
        limit = limit / 1000.0 if unit == "ms" else limit
    elif unit in UNITS:
        limit = limit * UNITS[unit][1]
    return Threshold(text=expr, metric=metric, argument=arg, op=op, limit=limit, unit=unit, file=file, line=line)


def parse_text(text: str, file: str = "<string>") -> list[Threshold]:
    """Parse a threshold file's text; every error names the file and line."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        context = getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        if context is not None and "end of stream" in problem:
            mark = context  # an unclosed quote or bracket: point at where it was opened
        line = mark.line + 1 if mark is not None else 0
        what = f"{exc.context}: {problem}" if getattr(exc, "context", None) else problem
        raise ThresholdError(file, line, f"not valid YAML ({what})") from exc
    if root is None:
        raise ThresholdError(file, 1, "empty: a threshold file lists at least one threshold")
    items = root
    if isinstance(root, yaml.MappingNode):
        keys = {k.value: v for k, v in root.value}
        unknown = [k for k in keys if k not in ("thresholds", "description", "scenario")]
        if unknown:
            node = next(k for k, _ in root.value if k.value == unknown[0])
            raise ThresholdError(file, node.start_mark.line + 1, f"unknown key {unknown[0]!r} (use thresholds:)")
        if "thresholds" not in keys:
            raise ThresholdError(file, root.start_mark.line + 1, "no 'thresholds:' list")
        items = keys["thresholds"]
    if not isinstance(items, yaml.SequenceNode):
        raise ThresholdError(file, items.start_mark.line + 1, "expected a list of thresholds ('- p95(name) < 400ms')")
    out = []
    for node in items.value:
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            raise ThresholdError(file, line, "expected a threshold as text, found 'key: value' (write '- lost == 0')")
        if not isinstance(node, yaml.ScalarNode):
            raise ThresholdError(file, line, "expected one threshold per line as text, e.g. '- lost == 0'")
        if node.tag != "tag:yaml.org,2002:str":
            raise ThresholdError(file, line, f"expected a threshold such as 'p95(name) < 400ms', found {node.value!r}")
        out.append(parse_expression(node.value, file, line))
    if not out:
        raise ThresholdError(file, items.start_mark.line + 1, "the thresholds list is empty")
    return out


def load_thresholds(path: str | Path) -> list[Threshold]:
    """Parse a threshold file; a missing file is a ThresholdError too (line 0)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ThresholdError(str(p), 0, "no such threshold file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ThresholdError(str(p), 0, f"unreadable ({exc})") from exc
    return parse_text(text, str(p))


SHIPPED = Path(__file__).parent / "thresholds"


def resolve(ref: str | Path, run_dir: Path | None = None) -> Path:
    """A threshold file reference: a path (as given, from the run dir, from the repo) or a shipped set's name."""
    ref = Path(ref)
    candidates = [ref]
    if run_dir is not None:
        candidates.append(run_dir / ref)
    candidates += [SHIPPED.parent.parent / ref, SHIPPED / ref, SHIPPED / f"{ref}.yaml"]
    for c in candidates:
        if c.is_file():
            return c
    return ref


# --------------------------------------------------------------------------
# evaluation


GENERATOR_PHASES = {"recovery": ("after",), "first_success": ("after",), "fault_errors": ("during",),
                    "offered_ratio": ("before", "during")}


def generator_limits(t: Threshold, a: MeasuredRun) -> str:
    """Why the load generator, not the system, may have set this threshold's number ("" when it did not).

    Only numbers the generator's pace moves are read: latencies and rates of samples
    (over the whole run), a fault's phase numbers (that phase), recovery and first
    success (the phase after the heal), the offered ratio (before and during).
    """
    spec = METRICS[t.metric]
    if spec.measure in (measure_samples, measure_steady):
        if spec.dimension not in ("latency", "rate"):
            return ""
        overall = a.generator_overall  # service times start when the request went out: only the CPU sign counts
        return overall.busy if t.metric.startswith("service_") else overall.limited
    if spec.measure not in (measure_fault_phase, measure_fault):
        return ""
    phases = GENERATOR_PHASES.get(t.metric) or (t.metric.split("_", 1)[0],)
    sel, _ = _select_faults(t, a)
    if sel is None:
        return ""
    reasons = []
    for phase in phases:
        column = f"{phase}_generator"
        if column in sel.columns:
            reasons += [f"{name} {phase}: {why}" for name, why in zip(sel["name"], sel[column])
                        if isinstance(why, str) and why]
    return "; ".join(reasons)


def measure(t: Threshold, a: MeasuredRun) -> tuple[float | None, str]:
    """The measured value of a threshold (its dimension's base unit) and a detail, by its metric's function."""
    return METRICS[t.metric].measure(t, a)


def check(t: Threshold, a: MeasuredRun) -> Result:
    """One threshold's verdict; absent data and NaN fail as 'no data', an exception is an 'error' row."""
    try:
        value, detail = measure(t, a)
        measured = None if value is None else float(value)
    except Exception as exc:  # noqa: BLE001 - a broken measure makes this row unknown, not the whole run
        return Result(t, None, "error", f"error: {type(exc).__name__}: {exc}")
    if measured is None or math.isnan(measured):
        return Result(t, None, "no data", detail or "nothing to measure")
    if OPERATORS[t.op](measured, t.limit):
        return Result(t, measured, "pass", detail)
    try:
        limited = generator_limits(t, a)
    except Exception as exc:  # noqa: BLE001 - whose number it is cannot be told: unknown, not a fail
        return Result(t, measured, "error", f"error: generator check: {type(exc).__name__}: {exc}")
    if limited:
        return Result(t, measured, "generator-limited", "; ".join(x for x in (detail, limited) if x))
    return Result(t, measured, "fail", detail)


def evaluate(thresholds: list[Threshold], a: MeasuredRun) -> list[Result]:
    """Every threshold's measured value and verdict, each on its own (see check)."""
    return [check(t, a) for t in thresholds]


def format_value(value: float | None, t: Threshold) -> str:
    """A measured value or limit in the threshold's own unit, e.g. '412.3ms', '1.8s', '0.02%'."""
    if value is None:
        return "—"
    if math.isinf(value):
        return "never"
    dim = METRICS[t.metric].dimension
    unit = t.unit
    if dim == "latency":
        v = value / UNITS[unit][1]
    elif dim == "duration":
        v = value * 1000.0 if unit == "ms" else value
    elif dim == "rate":
        v = value / UNITS[unit or "/s"][1]
        unit = unit or "/s"
    else:
        v = value
    if unit == "" and float(v).is_integer():
        return f"{int(v)}"
    return f"{v:.4g}{unit}" if abs(v) < 1e5 else f"{v:,.0f}{unit}"
