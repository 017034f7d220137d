"""Latency and throughput, exact from the raw samples.

Percentiles are exact: pandas/numpy's linear interpolation between the two
closest ranks over every raw sample (not Locust's rounded buckets).

Two latencies per sample:
- ``latency_ms``: service time, measured from the moment the request went out;
- ``lat``: from the intended start where the load recorded one (fixed-rate mode,
  coordinated omission: ``(ts_start - ts_intended) * 1000 + latency_ms``), else
  the service time. This is the one thresholds and charts use, because it is
  what a user waiting at the fixed rate experienced.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

PERCENTILES: dict[str, float] = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99, "p99.9": 0.999}
SERIES_PERCENTILES: dict[str, float] = {"p50": 0.50, "p95": 0.95, "p99": 0.99}
MIN_WINDOW_S = 1.0  # throughput never divides by less than one second


def prepare_samples(samples: pd.DataFrame, t0: float) -> pd.DataFrame:
    """Add the derived columns every later step uses: ``lat``, ``end`` and ``sec`` (whole seconds since t0)."""
    intended = samples["ts_intended"].to_numpy(dtype="float64", na_value=np.nan)
    start = samples["ts_start"].to_numpy(dtype="float64")
    service = samples["latency_ms"].to_numpy(dtype="float64")
    has_intended = ~np.isnan(intended)
    samples["lat"] = np.where(has_intended, (start - intended) * 1000.0 + service, service)
    samples["end"] = start + service / 1000.0
    samples["sec"] = np.floor(start - t0).astype("int64")
    samples["co"] = has_intended
    return samples


def time_origin(samples: pd.DataFrame, info: dict[str, Any]) -> float:
    """Whole second at which the run's clock starts: run.json's start, or the first sample's."""
    first = float(samples["ts_start"].min()) if len(samples) else math.nan
    started = info.get("started_at")
    candidates = [x for x in (first, started) if isinstance(x, (int, float)) and math.isfinite(x)]
    return float(math.floor(min(candidates))) if candidates else 0.0


def _quantiles(grouped: Any, column: str, qs: dict[str, float]) -> pd.DataFrame:
    q = grouped[column].quantile(list(qs.values())).unstack()
    q.columns = [f"{prefix}" for prefix in qs]
    return q


def name_table(samples: pd.DataFrame) -> pd.DataFrame:
    """One row per (type, name): counts, throughput, exact percentiles of both latencies.

    Throughput is successes per second over the name's own window, from its
    first start to its last completion (at least one second).
    """
    g = samples.groupby(["type", "name"], observed=True, sort=True)
    out = pd.DataFrame(
        {
            "count": g.size(),
            "ok": g["ok"].sum(),
            "first": g["ts_start"].min(),
            "last_end": g["end"].max(),
            "co_count": g["co"].sum(),
            "bytes": g["bytes"].sum(),
            "mean": g["lat"].mean(),
            "min": g["lat"].min(),
            "max": g["lat"].max(),
            "service_mean": g["latency_ms"].mean(),
            "service_max": g["latency_ms"].max(),
        }
    )
    out = out.join(_quantiles(g, "lat", PERCENTILES))
    svc = _quantiles(g, "latency_ms", {"p50": 0.5, "p95": 0.95, "p99": 0.99})
    svc.columns = [f"service_{c}" for c in svc.columns]
    out = out.join(svc)
    out["failures"] = out["count"] - out["ok"]
    out["error_rate"] = out["failures"] / out["count"] * 100.0
    out["window_s"] = np.maximum(out["last_end"] - out["first"], MIN_WINDOW_S)
    out["throughput"] = out["ok"] / out["window_s"]
    return out.drop(columns=["last_end"]).reset_index()


def summarize(subset: pd.DataFrame) -> dict[str, float]:
    """The name_table numbers for any selection of samples (one type, several names, everything)."""
    n = len(subset)
    if n == 0:
        return {"count": 0}
    lat = subset["lat"].to_numpy()
    svc = subset["latency_ms"].to_numpy()
    ok = int(subset["ok"].sum())
    window = max(float(subset["end"].max()) - float(subset["ts_start"].min()), MIN_WINDOW_S)
    out: dict[str, float] = {
        "count": n,
        "ok": ok,
        "failures": n - ok,
        "error_rate": (n - ok) / n * 100.0,
        "window_s": window,
        "throughput": ok / window,
        "mean": float(lat.mean()),
        "min": float(lat.min()),
        "max": float(lat.max()),
        "service_mean": float(svc.mean()),
        "service_max": float(svc.max()),
    }
    for key, value in zip(PERCENTILES, np.quantile(lat, list(PERCENTILES.values()))):
        out[key] = float(value)
    for key, value in zip(("p50", "p95", "p99"), np.quantile(svc, [0.5, 0.95, 0.99])):
        out[f"service_{key}"] = float(value)
    return out


def name_series(samples: pd.DataFrame) -> pd.DataFrame:
    """Per (type, name, second): count, failures and exact p50/p95/p99 of ``lat``."""
    g = samples.groupby(["type", "name", "sec"], observed=True, sort=True)
    out = pd.DataFrame({"count": g.size(), "ok": g["ok"].sum()})
    out = out.join(_quantiles(g, "lat", SERIES_PERCENTILES))
    out["failures"] = out["count"] - out["ok"]
    return out.reset_index()


def overall_series(samples: pd.DataFrame) -> pd.DataFrame:
    """Per second, every sample: requests, successes, failures, bytes; missing seconds filled with 0."""
    g = samples.groupby("sec", sort=True)
    out = pd.DataFrame({"count": g.size(), "ok": g["ok"].sum(), "bytes": g["bytes"].sum()})
    if len(out):
        out = out.reindex(range(int(out.index.min()), int(out.index.max()) + 1), fill_value=0)
    out.index.name = "sec"
    out["failures"] = out["count"] - out["ok"]
    return out.reset_index()


def lag_rows(lag: pd.DataFrame | None, column: str) -> pd.DataFrame | None:
    """The lag rows that set ``column`` (a row is a time lag, ``lag_ms``, or a count, ``lag_messages``)."""
    if lag is None or lag.empty or column not in lag:
        return None
    rows = lag[lag[column].notna()]
    return rows if len(rows) else None


def lag_table(lag: pd.DataFrame | None) -> pd.DataFrame:
    """Consumer time lag per consumer: exact p50/p95/p99 and max, in ms (rows with ``lag_ms``)."""
    ms = lag_rows(lag, "lag_ms")
    if ms is None:
        return pd.DataFrame(columns=["consumer", "count", "p50", "p95", "p99", "max"])
    g = ms.groupby("consumer", observed=True)
    out = pd.DataFrame({"count": g.size(), "max": g["lag_ms"].max()})
    out = out.join(_quantiles(g, "lag_ms", {"p50": 0.5, "p95": 0.95, "p99": 0.99}))
    return out.reset_index()


def lag_messages_table(lag: pd.DataFrame | None) -> pd.DataFrame:
    """Consumer lag in messages per consumer (the sampler's rows): samples, mean, p95, max and the last value."""
    rows = lag_rows(lag, "lag_messages")
    if rows is None:
        return pd.DataFrame(columns=["consumer", "count", "mean", "p95", "max", "last"])
    rows = rows.assign(lag_messages=rows["lag_messages"].astype("float64")).sort_values("ts", kind="stable")
    g = rows.groupby("consumer", observed=True)
    out = pd.DataFrame({"count": g.size(), "mean": g["lag_messages"].mean(), "max": g["lag_messages"].max(),
                        "last": g["lag_messages"].last()})
    out = out.join(_quantiles(g, "lag_messages", {"p95": 0.95}))
    return out.reset_index()[["consumer", "count", "mean", "p95", "max", "last"]]


def lag_series(lag: pd.DataFrame | None, t0: float, column: str = "lag_ms") -> pd.DataFrame:
    """Per consumer and second: the largest lag (``lag_ms`` or ``lag_messages``) seen in that second."""
    rows = lag_rows(lag, column)
    if rows is None:
        return pd.DataFrame(columns=["consumer", "sec", column])
    rows = rows.assign(sec=np.floor(rows["ts"].to_numpy() - t0).astype("int64"), value=rows[column].astype("float64"))
    per_second = rows.groupby(["consumer", "sec"], observed=True)["value"].max()
    return per_second.rename(column).reset_index()


def resource_series(resources: pd.DataFrame | None, t0: float) -> pd.DataFrame:
    """Per part and second: mean RSS (bytes) and CPU (%)."""
    if resources is None or resources.empty:
        return pd.DataFrame(columns=["part", "sec", "rss_bytes", "cpu_percent"])
    sec = np.floor(resources["ts"].to_numpy() - t0).astype("int64")
    g = resources.assign(sec=sec).groupby(["part", "sec"], observed=True)
    return pd.DataFrame({"rss_bytes": g["rss_bytes"].mean(), "cpu_percent": g["cpu_percent"].mean()}).reset_index()


def cpu_table(resources: pd.DataFrame | None) -> pd.DataFrame:
    """Per part: CPU in % of one core over every sample (mean, p95, max)."""
    if resources is None or resources.empty:
        return pd.DataFrame(columns=["part", "count", "cpu_mean", "cpu_p95", "cpu_max"])
    g = resources.groupby("part", observed=True, sort=True)
    out = pd.DataFrame({"count": g.size(), "cpu_mean": g["cpu_percent"].mean(), "cpu_max": g["cpu_percent"].max()})
    out = out.join(_quantiles(g, "cpu_percent", {"cpu_p95": 0.95}))
    out = out.reset_index()[["part", "count", "cpu_mean", "cpu_p95", "cpu_max"]]
    out["part"] = out["part"].astype(str)
    return out


@dataclass
class Metrics:
    """Everything latency/throughput; ``select`` answers a threshold's selector from the raw samples."""

    samples: pd.DataFrame
    t0: float
    names: pd.DataFrame
    series: pd.DataFrame
    overall: pd.DataFrame
    lag: pd.DataFrame
    lag_series: pd.DataFrame
    lag_messages: pd.DataFrame
    lag_messages_series: pd.DataFrame
    resources: pd.DataFrame
    cpu: pd.DataFrame
    _cache: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)

    def selection(self, selector: str | None) -> pd.DataFrame | None:
        """Samples a selector means: a sample name, else a request type, else names matching a pattern
        (``workflow→completed*``), ``*``/None for all; None if unknown."""
        s = self.samples
        if selector in (None, "", "*", "all"):
            return s
        names = set(self.names["name"].astype(str))
        if selector in names:
            return s[s["name"] == selector]
        if any(c in selector for c in "*?["):
            matched = [n for n in names if fnmatch.fnmatchcase(n, selector)]
            if matched:
                return s[s["name"].isin(matched)]
        if selector in set(self.names["type"].astype(str)):
            return s[s["type"] == selector]
        if ":" in selector:  # "type:name" when a name exists under several types
            typ, _, name = selector.partition(":")
            m = (self.names["type"].astype(str) == typ) & (self.names["name"].astype(str) == name)
            if m.any():
                return s[(s["type"] == typ) & (s["name"] == name)]
        return None

    def select(self, selector: str | None) -> dict[str, float] | None:
        """Summary of a selection (cached); None when no sample matches the selector."""
        key = selector or "*"
        if key not in self._cache:
            subset = self.selection(selector)
            if subset is None or subset.empty:
                return None
            self._cache[key] = summarize(subset)
        return self._cache[key]


def compute_metrics(samples: pd.DataFrame, info: dict[str, Any], lag: pd.DataFrame | None = None,
                    resources: pd.DataFrame | None = None) -> Metrics:
    """All metrics of one run (samples must not be empty of columns; may be empty of rows)."""
    t0 = time_origin(samples, info)
    prepare_samples(samples, t0)
    return Metrics(
        samples=samples,
        t0=t0,
        names=name_table(samples),
        series=name_series(samples),
        overall=overall_series(samples),
        lag=lag_table(lag),
        lag_series=lag_series(lag, t0),
        lag_messages=lag_messages_table(lag),
        lag_messages_series=lag_series(lag, t0, "lag_messages"),
        resources=resource_series(resources, t0),
        cpu=cpu_table(resources),
    )
