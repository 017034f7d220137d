"""One run directory -> one Analysis: every number the report, the JSON and the thresholds use.

Where a number comes from: ``metrics.py`` (latency, throughput, lag, CPU),
``loss.py`` (ok/lost/recovered/duplicated/unexpected/leaked),
``recovery.py`` (faults, bursts, degradation, memory), ``backlog.py`` (drain and replay
time, joined into the faults table), ``stalls.py`` (consumer stalls), ``thresholds.py`` (verdicts). This
module only wires them together and serialises the result.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis import backlog
from analysis import loss as loss_mod
from analysis import metrics as metrics_mod
from analysis import recovery
from analysis import injected as injected_mod
from analysis import stalls as stalls_mod
from analysis.generator import Generator
from analysis.measured import MeasuredRun
from analysis.thresholds import Result, Threshold, evaluate, format_value, load_thresholds, resolve
from rundir.masking import mask_secrets
from rundir.read import Run, iter_rows, load_run
from rundir.schema import RunDirError

JSON_VERSION = 1


@dataclass
class Analysis(MeasuredRun):
    """A measured run with its thresholds' results and verdict."""

    thresholds_file: str | None = None
    results: list[Result] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """``pass`` only when every threshold passed, ``fail`` when one failed or had no data,
        ``unknown`` when none failed but one raised while measured (an "error" row proves nothing
        either way) or failed where the load generator was the bottleneck ("generator-limited":
        that number is the generator's, not the system's), ``no thresholds`` when none."""
        if not self.results:
            return "no thresholds"
        if any(r.status in ("fail", "no data") for r in self.results):
            return "fail"
        return "pass" if all(r.passed for r in self.results) else "unknown"

    def evaluate(self, thresholds: list[Threshold], source: str | None) -> None:
        self.thresholds_file = source
        self.results = evaluate(thresholds, self)

    def summary(self) -> dict[str, Any]:
        """The JSON-able content of analysis.json (compare.py reads it back)."""
        m = self.metrics
        overall = m.select(None) or {}
        return json_safe({
            "version": JSON_VERSION,
            "run_dir": str(self.run.path),
            "run": mask_secrets(self.run.info),
            "counts": self.run.files,
            "t0": m.t0,
            "verdict": self.verdict,
            "thresholds_file": self.thresholds_file,
            "thresholds": [result_dict(r) for r in self.results],
            "overall": {k: _clean(v) for k, v in overall.items()},
            "names": list(iter_rows(m.names)),
            "loss": {
                "available": self.loss.available,
                "reason": self.loss.reason,
                "totals": self.loss.totals,
                "by_kind": list(iter_rows(self.loss.by_kind)),
                "by_namespace": list(iter_rows(self.loss.by_namespace)),
                "leaks": list(iter_rows(self.loss.leaks)),
            },
            "experiments": mask_secrets(self.run.experiments),
            "generator": self.generator_overall.as_dict(),
            "faults": list(iter_rows(self.faults)),
            "bursts": list(iter_rows(self.bursts)),
            "degradation": {k: _clean(v) for k, v in self.degradation.items()},
            "memory": list(iter_rows(self.memory)),
            "cpu": list(iter_rows(m.cpu)),
            "lag": list(iter_rows(m.lag)),
            "lag_messages": list(iter_rows(m.lag_messages)),
            "stalls": None if self.stalls is None else list(iter_rows(self.stalls)),
            "injected": None if self.injected is None else list(iter_rows(self.injected)),
            "observations": self.run.observations,
            "series": {c: [_clean(v) for v in m.overall[c].tolist()] for c in ("sec", "count", "ok", "failures")},
        })


def json_safe(v: Any) -> Any:
    """Recursively: numpy scalars to Python, NaN/inf to None (JSON has neither)."""
    if isinstance(v, dict):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    return _clean(v)


def _clean(v: Any) -> Any:
    v = v.item() if hasattr(v, "item") else v
    return None if isinstance(v, float) and not math.isfinite(v) else v


def result_dict(r: Result) -> dict[str, Any]:
    t = r.threshold
    return {
        "text": t.text,
        "metric": t.metric,
        "argument": t.argument,
        "op": t.op,
        "limit": t.limit,
        "unit": t.unit,
        "measured": None if r.measured is None or math.isinf(r.measured) else r.measured,
        "measured_display": format_value(r.measured, t),
        "limit_display": format_value(t.limit, t),
        "status": r.status,
        "detail": r.detail,
        "file": t.file,
        "line": t.line,
    }


def threshold_source(run: Run, thresholds: str | os.PathLike[str] | None) -> Path | None:
    """Which threshold file applies: the one given, else run.json's, else the shipped set named after the scenario."""
    if thresholds is not None:
        return resolve(thresholds, run.path)
    ref = run.info.get("thresholds")
    if isinstance(ref, str) and ref:
        return resolve(ref, run.path)
    scenario = run.info.get("scenario")
    if isinstance(scenario, str) and scenario:
        shipped = resolve(f"{scenario}.yaml")
        if shipped.is_file():
            return shipped
    return None


def analyse(
    run_dir: str | os.PathLike[str],
    thresholds: str | os.PathLike[str] | list[Threshold] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> Analysis:
    """Load and analyse a run directory, and evaluate its thresholds (see threshold_source)."""

    def step(label: str) -> None:
        if on_step is not None:
            on_step(label)

    run = load_run(run_dir, on_step=lambda part: step(f"loading {part}"))
    if run.samples.empty:
        raise RunDirError(f"{Path(run_dir) / 'samples'}: no sample rows (the run measured nothing)")
    step("percentiles per name and second")
    m = metrics_mod.compute_metrics(run.samples, run.info, run.lag, run.resources)
    step("loss accounting")
    loss = loss_mod.account(run.ledger, run.truth)
    step("faults and recovery")
    generator = Generator.of(run.samples, run.resources)
    faults = recovery.analyse_faults(run.samples, run.journal, m.t0, generator, run.info.get("ended_at"))
    faults = backlog.drain_times(faults, backlog.backlog_series(run.lag, m.t0))
    faults = backlog.replay_times(faults, backlog.system_series(run.lag))
    bursts = recovery.analyse_bursts(run.samples, run.journal, m.overall, m.t0)
    degradation = recovery.degradation(run.samples)
    memory = recovery.memory_growth(run.resources)
    step("consumer stalls")
    stalls, stalls_error = None, None
    try:
        stalls = stalls_mod.find_stalls(run.lag, faults)
    except Exception as exc:  # noqa: BLE001 - a checker that raises makes its verdict unknown, never a crash
        stalls_error = f"{type(exc).__name__}: {exc}"
    step("injected messages")
    injected, injected_error = None, None
    try:
        injected = injected_mod.summarise(run.injected)
    except Exception as exc:  # noqa: BLE001 - as above
        injected_error = f"{type(exc).__name__}: {exc}"
    a = Analysis(run=run, metrics=m, loss=loss, faults=faults, bursts=bursts, degradation=degradation, memory=memory,
                 generator=generator, stalls=stalls, stalls_error=stalls_error, injected=injected,
                 injected_error=injected_error)
    step("thresholds")
    if isinstance(thresholds, list):
        a.evaluate(thresholds, "(given)")
    else:
        source = threshold_source(run, thresholds)
        if source is not None:
            a.evaluate(load_thresholds(source), str(source))
    return a
