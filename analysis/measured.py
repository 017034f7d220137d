"""The numbers of one analysed run, before any verdict: what thresholds measure and the report shows.

``analysis.analyse.analyse`` computes them (metrics.py, loss.py,
recovery.py) and ``Analysis`` adds the verdict; the thresholds' measure
functions read only this, so they never need the verdict's module.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import pandas as pd

from analysis import loss as loss_mod
from analysis import metrics as metrics_mod
from analysis import recovery
from analysis.generator import Generator, GeneratorWindow
from rundir.read import Run


@dataclass
class MeasuredRun:
    """A loaded, analysed run. Frames are small (one row per name, fault, kind...) except ``run.samples``."""

    run: Run
    metrics: metrics_mod.Metrics
    loss: loss_mod.Loss
    faults: pd.DataFrame
    bursts: pd.DataFrame
    degradation: dict[str, float]
    memory: pd.DataFrame
    generator: Generator | None = None
    stalls: pd.DataFrame | None = None  # analysis/stalls.py; None when finding them raised (stalls_error)
    stalls_error: str | None = None
    injected: pd.DataFrame | None = None  # analysis/injected.py's summary; None when it raised (injected_error)
    injected_error: str | None = None
    _degradation_cache: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)

    @cached_property
    def generator_overall(self) -> GeneratorWindow:
        """The generator's signs over the whole run (analysis/generator.py), computed once: every latency
        and rate threshold and the summary read it, and it is a quantile over every sample."""
        if self.generator is None:
            return GeneratorWindow(float("nan"), float("nan"), "")
        return self.generator.window(-float("inf"), float("inf"))

    def degradation_of(self, selector: str | None) -> dict[str, float]:
        """Sustained-run degradation of a selection (see recovery.degradation)."""
        if not selector:
            return self.degradation
        if selector not in self._degradation_cache:
            subset = self.metrics.selection(selector)
            self._degradation_cache[selector] = {} if subset is None else recovery.degradation(subset)
        return self._degradation_cache[selector]
