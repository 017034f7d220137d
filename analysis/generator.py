"""Was the generator the bottleneck? Per time window, the load's own evidence that it, not the system, set a number.

Why: latency counted from the intended start (the open model) grows when
the generator itself falls behind as surely as when the system under test
is slow, and a run's achieved rate falls with it. A verdict must not blame
the system for the generator's limits, so two signs are read, each on the
generator's side only:

- **lateness**: per arrival, ``ts_start - ts_ready``: how long after it could
  start (its intended start, or when a free user took it, whichever is
  later) the request went out. Only the generator delays that: a slow or
  broken system shows as users not free (``ts_ready`` after
  ``ts_intended``) or dropped arrivals, never here. Limited when the
  window's p95 is at least ``LATE_P95_MS``.
- **CPU**: a Locust process is one Python thread; at ``CPU_PERCENT`` of a
  core (Locust's own warning level) it cannot send more. Limited when the
  busiest Locust process (``resources/`` parts ``locust``, ``locust-<pid>``)
  averages that over the window's samples.

A window with neither kind of evidence (a closed-loop run without a
sampler) is not limited: there is nothing to say it was.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

LATE_P95_MS = 50.0  # a request that could start went out this late (p95): the generator's loop was behind
CPU_PERCENT = 90.0  # of one core, the busiest Locust process's mean: Locust warns at the same level
LOCUST_PART = "locust"


@dataclass
class GeneratorWindow:
    """What the generator did in one window: its lateness p95 (ms), its busiest process's CPU, and why limited."""

    late_p95_ms: float
    cpu_percent: float
    limited: str  # "" when not limited, else the reason, e.g. "Locust at 97 % of a core"

    @property
    def busy(self) -> str:
        """The CPU sign alone: a Locust process out of CPU is late to read answers too (service times)."""
        return limited_reason(math.nan, self.cpu_percent)

    def as_dict(self) -> dict[str, object]:
        return {"late_p95_ms": self.late_p95_ms, "cpu_percent": self.cpu_percent, "limited": self.limited}


@dataclass
class Generator:
    """The generator's signs over a whole run, as arrays, so any window is a mask (never a loop over samples)."""

    due: np.ndarray  # when each arrival was due (its intended start)
    late_ms: np.ndarray  # ts_start - ts_ready, per sample that has a ready time
    cpu_ts: np.ndarray
    cpu_part: np.ndarray
    cpu: np.ndarray

    @classmethod
    def of(cls, samples: pd.DataFrame, resources: pd.DataFrame | None) -> Generator:
        ready = (samples["ts_ready"].to_numpy(dtype="float64", na_value=np.nan) if "ts_ready" in samples
                 else np.full(len(samples), np.nan))
        has = ~np.isnan(ready)
        start = samples["ts_start"].to_numpy(dtype="float64")
        due = samples["ts_intended"].to_numpy(dtype="float64", na_value=np.nan)
        if resources is not None and len(resources):
            parts = resources["part"].astype(str)
            mine = parts.str.startswith(LOCUST_PART).to_numpy(dtype=bool)
            cpu_ts = resources["ts"].to_numpy(dtype="float64")[mine]
            cpu_part = parts.to_numpy()[mine]
            cpu = resources["cpu_percent"].to_numpy(dtype="float64")[mine]
        else:
            cpu_ts, cpu_part, cpu = np.zeros(0), np.zeros(0, dtype=object), np.zeros(0)
        return cls(due=due[has], late_ms=(start[has] - ready[has]) * 1000.0,
                   cpu_ts=cpu_ts, cpu_part=cpu_part, cpu=cpu)

    def window(self, start: float, end: float) -> GeneratorWindow:
        """The generator's signs for arrivals due, and CPU sampled, in [start, end)."""
        if not (end > start):
            return GeneratorWindow(math.nan, math.nan, "")
        late = self.late_ms[(self.due >= start) & (self.due < end)]
        late_p95 = float(np.quantile(late, 0.95)) if len(late) else math.nan
        m = (self.cpu_ts >= start) & (self.cpu_ts < end)
        cpu = math.nan
        if m.any():
            per_part = pd.Series(self.cpu[m]).groupby(self.cpu_part[m]).mean()
            cpu = float(per_part.max())
        return GeneratorWindow(late_p95, cpu, limited_reason(late_p95, cpu))


def limited_reason(late_p95_ms: float, cpu_percent: float) -> str:
    """Why a window is generator-limited ("" when it is not): the signs at or past their levels, in words."""
    reasons = []
    if late_p95_ms >= LATE_P95_MS:
        reasons.append(f"requests went out {late_p95_ms:.0f} ms after they could (p95)")
    if cpu_percent >= CPU_PERCENT:
        reasons.append(f"Locust at {cpu_percent:.0f} % of a core")
    return "generator-limited: " + ", ".join(reasons) if reasons else ""
