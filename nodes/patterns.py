"""Pattern discovery over hooks: small pure functions from a history of measures to a pattern or None.

The hook receiver stores every hook's numbers (`hook_events.measures`) and,
as each hook arrives, runs these over the recent history of its namespace.
Each answers with a `Pattern` whose `confidence_score` is one minus a
p-value (or a posterior probability), so 0.7 means the same thing for every
kind: the data would look like this by chance at most 30 % of the time.

- **startup_performance** (across services): are start-up times trending?
  Kendall's tau between arrival order and start-up time over the last
  `STARTUP_WINDOW` start-ups of at least `MIN_SERVICES` services; confidence
  = 1 - the one-sided p-value (scipy's exact test for small samples). The
  affected services are those that started slower than the median of the
  earliest third of the window (the baseline the trend moved away from).
- **service_initialization** (one service): which initialization step
  dominates? The step with the largest share of the step time, and how often
  it was the dominant one over the service's recent start-ups: confidence
  = the Laplace estimate (k + 1) / (n + 2), so one start-up gives 0.67.
- **performance_anomaly** (one tool): is this execution out of line with the
  tool's earlier ones? For execution time, CPU peak and memory peak, a
  one-sided prediction-interval test against the earlier executions that were
  not anomalous themselves: t = (x - mean) / (sd * sqrt(1 + 1/n)), Student's t
  with n - 1 degrees of freedom; at least `MIN_BASELINE` earlier executions.
  A metric is anomalous when p < `ANOMALY_P`; confidence = 1 - the smallest p.

scipy.stats gives the distributions (a well-kept library; the tests here are
the textbook ones, so no model of our own is needed).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Sequence

from scipy import stats

STARTUP_WINDOW = 50  # start-ups looked at, newest last
MIN_STARTUPS = 4  # fewer cannot give a one-sided p below 0.05 with Kendall's tau
MIN_SERVICES = 3  # a pattern "across services" needs several of them
MIN_BASELINE = 3  # earlier executions a tool needs before one can be out of line
ANOMALY_P = 0.01
REPORT_CONFIDENCE = 0.6  # weaker findings are not reported at all (and a current one that weakens is retracted)
ANOMALY_METRICS = {"execution_time_ms": "execution time", "cpu_peak_percent": "CPU peak",
                   "memory_peak_mb": "memory peak"}


@dataclass(frozen=True)
class Pattern:
    pattern_type: str
    subject: str
    confidence_score: float
    affected_services: list[str]
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"pattern_type": self.pattern_type, "subject": self.subject,
                "confidence_score": round(self.confidence_score, 4),
                "affected_services": self.affected_services, **self.data}


@dataclass(frozen=True)
class Startup:
    service: str
    startup_time_ms: float


def startup_performance(startups: Sequence[Startup]) -> Pattern | None:
    """A trend in start-up times across services (oldest first), or None."""
    window = list(startups)[-STARTUP_WINDOW:]
    services = {s.service for s in window}
    if len(window) < MIN_STARTUPS or len(services) < MIN_SERVICES:
        return None
    times = [s.startup_time_ms for s in window]
    if len(set(times)) == 1:
        return None
    tau, p_two_sided = stats.kendalltau(range(len(times)), times)
    if math.isnan(tau) or tau == 0:
        return None
    confidence = float(1 - p_two_sided / 2)  # one-sided, in the direction tau points
    if confidence < REPORT_CONFIDENCE:
        return None
    baseline = statistics.median(times[: max(2, len(times) // 3)])
    slower = sorted({s.service for s in window if s.startup_time_ms > baseline})
    trend = "degrading" if tau > 0 else "improving"
    affected = slower if trend == "degrading" else sorted(services)
    return Pattern("startup_performance", "startups", confidence, affected, {
        "trend": trend, "kendall_tau": round(float(tau), 4), "p_value": float(p_two_sided) / 2,
        "startups": len(window), "services": len(services), "baseline_ms": baseline,
        "mean_ms": round(statistics.fmean(times), 3), "latest_ms": times[-1],
        "method": "Kendall's tau of start-up time against arrival order, one-sided",
    })


def service_initialization(service: str, steps_history: Sequence[Sequence[tuple[str, float]]]) -> Pattern | None:
    """Which step dominates a service's initialization, over its start-ups (oldest first), or None."""
    dominant: list[str] = []
    latest_share = 0.0
    for steps in steps_history:
        total = sum(d for _, d in steps)
        if not steps or total <= 0:
            continue
        name, duration = max(steps, key=lambda s: s[1])
        dominant.append(name)
        latest_share = duration / total
    if not dominant:
        return None
    step = dominant[-1]
    k = sum(1 for d in dominant if d == step)
    confidence = (k + 1) / (len(dominant) + 2)
    if confidence < REPORT_CONFIDENCE:
        return None
    return Pattern("service_initialization", service, confidence, [service], {
        "dominant_step": step, "share_of_step_time": round(latest_share, 4), "startups": len(dominant),
        "times_dominant": k, "method": "dominant step, Laplace estimate of how often it dominates",
    })


def performance_anomaly(tool: str, measures: dict[str, float], baseline: Sequence[dict[str, float]],
                        services: Sequence[str] = ()) -> Pattern | None:
    """This execution's measures against the tool's earlier normal ones, or None if nothing is out of line."""
    anomalies: dict[str, dict[str, float]] = {}
    for metric in ANOMALY_METRICS:
        if metric not in measures:
            continue
        earlier = [b[metric] for b in baseline if metric in b]
        if len(earlier) < MIN_BASELINE:
            continue
        x, mean = measures[metric], statistics.fmean(earlier)
        sd = statistics.stdev(earlier)
        sd = max(sd, abs(mean) * 0.01, 1e-9)  # identical baselines: 1 % of the mean is "no spread"
        t = (x - mean) / (sd * math.sqrt(1 + 1 / len(earlier)))
        p = float(stats.t.sf(t, df=len(earlier) - 1))
        if p < ANOMALY_P:
            anomalies[metric] = {"value": x, "baseline_mean": round(mean, 3), "baseline_sd": round(sd, 3),
                                 "t": round(t, 3), "p_value": p, "baseline_n": len(earlier)}
    if not anomalies:
        return None
    confidence = 1 - min(a["p_value"] for a in anomalies.values())
    return Pattern("performance_anomaly", tool, confidence, sorted(set(services)), {
        "tool_name": tool, "anomalous_metrics": anomalies,
        "method": "one-sided prediction interval, Student's t on the tool's earlier normal executions",
    })
