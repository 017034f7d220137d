"""Chaos and stability analysis: faults, bursts, sustained degradation, memory growth.

Recovery time of a fault, as docs/analysis.md defines it: from the heal time,
in one-second buckets counted from the heal, the first bucket from which the
success ratio is >= 0.99 and p95 <= 1.5 x the pre-fault baseline p95, held for
three consecutive buckets. The recovery time is that bucket's offset in
seconds (so the resolution is one second: 0 means "fine from the first
second after the heal"). An empty bucket is not evidence of health, so it
breaks a streak. Latency is ``lat`` (from the intended start where recorded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.generator import Generator
from rundir.journal import BURST

SUCCESS_RATIO = 0.99
P95_FACTOR = 1.5
HOLD_S = 3
BASELINE_WINDOW_S = 30.0
BURST_FACTOR = 5.0  # a second with >= 5x the median rate (and >= BURST_MIN requests) is a burst
BURST_MIN = 50
SUSTAINED_WINDOW_S = 10.0
MEMORY_GROWTH_FLAG_PCT = 10.0


PHASES = ("before", "during", "after")
PHASE_STATS = ("offered", "achieved", "dropped", "p50", "p95", "p99", "errors", "timeouts")
AFTER_WINDOW_S = 30.0
DROPPED = "dropped"  # the sample type of an arrival no user could start (harness/arrivals.py)
_TIMEOUT_WORDS = ("within", "timed out", "timeout")


@dataclass
class Arrays:
    """The sample columns recovery needs, as numpy arrays (sliced by masks, never iterated)."""

    ts: np.ndarray
    end: np.ndarray
    ok: np.ndarray
    lat: np.ndarray
    intended: np.ndarray  # NaN where the load recorded no intended start (closed loop)
    arrival: np.ndarray  # one code per arrival (process and intended start), -1 for none
    dropped: np.ndarray
    timeout: np.ndarray

    @classmethod
    def of(cls, samples: pd.DataFrame) -> Arrays:
        intended = samples["ts_intended"].to_numpy(dtype="float64", na_value=np.nan)
        has = ~np.isnan(intended)
        arrival = np.full(len(samples), -1, dtype="int64")
        if has.any():  # the samples of one arrival (its request and its e2e result) share process and intended start
            keys = pd.MultiIndex.from_arrays([samples["process"].to_numpy()[has], intended[has]])
            arrival[has] = pd.factorize(keys)[0]
        errors = samples["error"].astype("string").str.lower()
        timeout = np.zeros(len(samples), dtype=bool)
        for word in _TIMEOUT_WORDS:
            timeout |= errors.str.contains(word, regex=False).fillna(False).to_numpy(dtype=bool)
        return cls(
            ts=samples["ts_start"].to_numpy(dtype="float64"),
            end=samples["end"].to_numpy(dtype="float64"),
            ok=samples["ok"].to_numpy(dtype=bool),
            lat=samples["lat"].to_numpy(dtype="float64"),
            intended=intended,
            arrival=arrival,
            dropped=(samples["type"].astype(str) == DROPPED).to_numpy(dtype=bool),
            timeout=timeout,
        )

    @property
    def due(self) -> np.ndarray:
        """When each sample was meant to happen: its intended start where recorded, else its start."""
        return np.where(np.isnan(self.intended), self.ts, self.intended)


def phase_stats(a: Arrays, start: float, end: float) -> dict[str, float]:
    """What users lived through in [start, end): offered and achieved rate, dropped, latency, errors, timeouts.

    Offered counts arrivals (open model: each intended start once, started or dropped);
    a closed-loop run has no arrivals, so there offered is what was sent. Latency is from
    the intended start; errors are % of the samples that started; timeouts and dropped are counts.
    """
    length = end - start
    if not (length > 0) or not math.isfinite(length):
        return {k: math.nan for k in PHASE_STATS}
    m = (a.due >= start) & (a.due < end)
    started = m & ~a.dropped
    arrivals = a.arrival[m & (a.arrival >= 0)]
    taken = a.arrival[started & (a.arrival >= 0)]
    closed = int((started & (a.arrival < 0)).sum())
    offered = len(np.unique(arrivals)) if len(arrivals) else closed
    achieved = len(np.unique(taken)) if len(taken) else closed
    lat = a.lat[started]
    return {
        "offered": offered / length,
        "achieved": achieved / length,
        "dropped": float((m & a.dropped).sum()),
        "p50": float(np.quantile(lat, 0.5)) if len(lat) else math.nan,
        "p95": float(np.quantile(lat, 0.95)) if len(lat) else math.nan,
        "p99": float(np.quantile(lat, 0.99)) if len(lat) else math.nan,
        "errors": (1 - a.ok[started].mean()) * 100 if started.any() else math.nan,
        "timeouts": float((started & a.timeout).sum()),
    }


def _p95(values: np.ndarray) -> float:
    return float(np.quantile(values, 0.95)) if len(values) else math.nan


def recovery_buckets(a: Arrays, heal: float, horizon: float, baseline_p95: float) -> pd.DataFrame:
    """One row per second after the heal (until the horizon): count, success ratio, p95, good."""
    m = (a.ts >= heal) & (a.ts < horizon)
    k = np.floor(a.ts[m] - heal).astype("int64")
    if len(k) == 0:
        return pd.DataFrame(columns=["k", "count", "ok_ratio", "p95", "good"])
    frame = pd.DataFrame({"k": k, "ok": a.ok[m], "lat": a.lat[m]})
    g = frame.groupby("k", sort=True)
    b = pd.DataFrame({"count": g.size(), "ok_ratio": g["ok"].mean(), "p95": g["lat"].quantile(0.95)})
    last = int(b.index.max()) if math.isinf(horizon) else int(math.ceil(horizon - heal)) - 1
    b = b.reindex(range(0, max(last, int(b.index.max())) + 1))
    b["count"] = b["count"].fillna(0).astype("int64")
    latency_ok = b["p95"] <= P95_FACTOR * baseline_p95 if math.isfinite(baseline_p95) else True
    b["good"] = (b["count"] > 0) & (b["ok_ratio"] >= SUCCESS_RATIO) & latency_ok
    b.index.name = "k"
    return b.reset_index()


def recovery_time(buckets: pd.DataFrame) -> float:
    """Offset of the first bucket that starts HOLD_S consecutive good buckets; NaN if none."""
    good = buckets["good"].to_numpy(dtype=bool) if len(buckets) else np.zeros(0, bool)
    if len(good) < HOLD_S:
        return math.nan
    held = np.convolve(good.astype("int64"), np.ones(HOLD_S, "int64"), mode="valid") == HOLD_S
    hits = np.flatnonzero(held)
    return float(buckets["k"].iloc[hits[0]]) if len(hits) else math.nan


def analyse_window(a: Arrays, name: str, start: float, heal: float | None, prev_busy: float,
                   horizon: float, generator: Generator | None = None,
                   load_end: float = math.inf) -> dict[str, object]:
    """Numbers of one fault (or burst): baseline before, behaviour during, recovery after.

    With the run's ``generator``, each phase also says whether the load generator limited it
    (``{phase}_generator``: the reason, or ""). The phases end where the load ended
    (``load_end``): seconds after the users stopped offered nothing, and counting them would
    blame the system for the load's end.
    """
    base_from = max(start - BASELINE_WINDOW_S, prev_busy)
    pre = (a.ts >= base_from) & (a.ts < start)
    baseline_p95 = _p95(a.lat[pre])
    until = heal if heal is not None else horizon
    during = (a.ts >= start) & (a.ts < until)
    n_during = int(during.sum())
    row: dict[str, object] = {
        "baseline_count": int(pre.sum()),
        "baseline_p95": baseline_p95,
        "baseline_error_rate": (1 - a.ok[pre].mean()) * 100 if pre.any() else math.nan,
        "during_count": n_during,
        # every sample while the fault was on, dropped arrivals included: what went wrong for users
        "during_error_rate": (1 - a.ok[during].mean()) * 100 if n_during else math.nan,
        "first_success_s": math.nan,
        "recovery_s": math.nan,
        "recovered": False,
        "note": "",
    }
    # the phases never reach outside the run's own samples (a rate over seconds that had no load is no rate)
    first, last = (float(a.due.min()), float(a.due.max())) if len(a.ts) else (math.nan, math.nan)
    phases = {"before": (max(base_from, first), start), "during": (start, min(until, load_end)),
              "after": (until, min(until + AFTER_WINDOW_S, horizon, last, load_end)) if heal is not None
              else (math.nan, math.nan)}
    for phase, (lo, hi) in phases.items():
        for stat, value in phase_stats(a, lo, hi).items():
            row[f"{phase}_{stat}"] = value
        if generator is not None:
            row[f"{phase}_generator"] = generator.window(lo, hi).limited
    before = row["before_offered"]
    row["offered_ratio"] = row["during_offered"] / before * 100 if before and before > 0 else math.nan
    if heal is None:
        row["note"] = "never healed"
        return row
    after = a.ok & (a.end >= heal) & (a.ts < horizon)
    if after.any():
        row["first_success_s"] = float(a.end[after].min() - heal)
    buckets = recovery_buckets(a, heal, horizon, baseline_p95)
    rec = recovery_time(buckets)
    row["recovery_s"] = rec
    row["recovered"] = not math.isnan(rec)
    notes = []
    if not math.isfinite(baseline_p95):
        notes.append("no pre-fault baseline: success ratio only")
    if not row["recovered"]:
        notes.append("did not recover before " + ("the next fault" if math.isfinite(horizon) else "the end of the run"))
    row["note"] = "; ".join(notes)
    return row


def outside_faults(samples: pd.DataFrame, faults: pd.DataFrame) -> np.ndarray:
    """Which samples were due in the steady state: not from a fault's injection to its recovery.

    A fault's window runs from its injection to its heal plus its recovery time
    (to the end of the run when it never healed or never recovered), so the
    steady-state latency of a run with chaos is the seeds' performance number
    and the faults' impact stays in the faults table (phases, recovery, drain).
    """
    a = Arrays.of(samples)
    due = a.due
    keep = np.ones(len(samples), dtype=bool)
    if faults is None or faults.empty:
        return keep
    starts = pd.to_numeric(faults.get("started_at"), errors="coerce").to_numpy(dtype="float64")
    heals = pd.to_numeric(faults.get("healed_at"), errors="coerce").to_numpy(dtype="float64")
    recovered = faults.get("recovered", pd.Series([False] * len(faults))).fillna(False).to_numpy(dtype=bool)
    rec = pd.to_numeric(faults.get("recovery_s"), errors="coerce").to_numpy(dtype="float64")
    for start, heal, ok, r in zip(starts, heals, recovered, rec):
        if math.isnan(start):
            continue
        end = heal + r if (ok and not math.isnan(heal) and not math.isnan(r)) else math.inf
        keep &= ~((due >= start) & (due < end))
    return keep


def analyse_faults(samples: pd.DataFrame, journal: pd.DataFrame, t0: float,
                   generator: Generator | None = None, load_end: float | None = None) -> pd.DataFrame:
    """One row per journal entry (faults and journal-marked bursts alike), in start order.

    A fault injected after the load ended (``load_end``, run.json's ``ended_at``: an experiment
    that was still running while the run stopped) has nothing to be measured against: its row
    says so (``after_load``) and the fault checks leave it out.
    """
    end = math.inf if load_end is None else float(load_end)
    cols = ["fault_id", "name", "action", "target", "outcome", "started_at", "healed_at", "start_s", "heal_s",
            "duration_s"]
    journal = journal[journal["action"] != BURST].reset_index(drop=True)  # bursts: analyse_bursts
    if journal.empty:
        return pd.DataFrame(columns=cols)
    a = Arrays.of(samples)
    starts = journal["started_at"].to_numpy(dtype="float64")
    heals = journal["healed_at"].to_numpy(dtype="float64")
    rows = []
    for i, f in enumerate(journal.itertuples(index=False)):  # one iteration per fault, not per sample
        if math.isnan(starts[i]):
            rows.append({"fault_id": f.fault_id, "name": f.name, "action": f.action, "target": f.target,
                         "outcome": f.outcome, "recovered": False, "recovery_s": math.nan, "after_load": False,
                         "note": "never injected (no started_at)" + (f": {f.error}" if f.error else "")})
            continue
        heal = None if math.isnan(heals[i]) else float(heals[i])
        # the baseline must not overlap an earlier fault's window
        earlier = [(h if not math.isnan(h) else math.inf) for h in heals[:i]]
        prev_busy = max(earlier, default=-math.inf)
        later = starts[(starts > (heal if heal is not None else starts[i]))]
        horizon = float(later.min()) if len(later) else math.inf
        row = {
            "fault_id": f.fault_id,
            "name": f.name,
            "action": f.action,
            "target": f.target,
            "outcome": f.outcome,
            "started_at": float(starts[i]),
            "healed_at": heal,
            "start_s": float(starts[i]) - t0,
            "heal_s": None if heal is None else heal - t0,
            "duration_s": None if heal is None else heal - float(starts[i]),
            "after_load": bool(starts[i] >= end),
        }
        if row["after_load"]:
            row.update(recovered=False, recovery_s=math.nan,
                       note=f"injected {starts[i] - end:.1f} s after the load ended: nothing to measure")
            rows.append(row)
            continue
        row.update(analyse_window(a, str(f.name), float(starts[i]), heal, prev_busy, horizon, generator, end))
        rows.append(row)
    return pd.DataFrame(rows)


def detect_bursts(overall: pd.DataFrame, t0: float) -> list[tuple[float, float]]:
    """(start, end) wall-clock of runs of seconds with >= BURST_FACTOR x the median request rate."""
    busy = overall[overall["count"] > 0]
    if busy.empty:
        return []
    median = float(busy["count"].median())
    hot = (overall["count"] >= BURST_FACTOR * median) & (overall["count"] >= BURST_MIN)
    secs = overall.loc[hot, "sec"].to_numpy()
    if len(secs) == 0 or len(secs) == len(busy):
        return []
    breaks = np.flatnonzero(np.diff(secs) > 1)
    first = np.concatenate([[0], breaks + 1])
    last = np.concatenate([breaks, [len(secs) - 1]])
    return [(t0 + float(secs[i]), t0 + float(secs[j]) + 1.0) for i, j in zip(first, last)]


def analyse_bursts(samples: pd.DataFrame, journal: pd.DataFrame, overall: pd.DataFrame, t0: float) -> pd.DataFrame:
    """Time back to baseline after each burst: journal entries with action ``burst``, else detected ones."""
    marked = journal[journal["action"] == BURST] if not journal.empty else journal
    if not marked.empty:
        windows = [(float(r.started_at), None if math.isnan(r.healed_at) else float(r.healed_at), "journal")
                   for r in marked.itertuples(index=False)]
    else:
        windows = [(s, e, "detected") for s, e in detect_bursts(overall, t0)]
    if not windows:
        return pd.DataFrame(columns=["start_s", "end_s", "source", "back_to_baseline_s"])
    a = Arrays.of(samples)
    rows = []
    for i, (start, end, source) in enumerate(windows):
        if i == 0:
            prev_busy = -math.inf
        else:
            prev_end = windows[i - 1][1]
            prev_busy = math.inf if prev_end is None else prev_end
        horizon = windows[i + 1][0] if i + 1 < len(windows) else math.inf
        r = analyse_window(a, "burst", start, end, prev_busy, horizon)
        rows.append({"start_s": start - t0, "end_s": None if end is None else end - t0, "source": source,
                     "back_to_baseline_s": r.pop("recovery_s"), **r})
    return pd.DataFrame(rows)


def window_size(duration_s: float) -> float:
    """Sustained windows: 10 s, or a quarter of a short run."""
    return max(1.0, min(SUSTAINED_WINDOW_S, math.floor(duration_s / 4)))


def degradation(samples: pd.DataFrame) -> dict[str, float]:
    """First vs last window of the run: p95 increase and throughput drop, in %."""
    if samples.empty:
        return {}
    sec = samples["sec"].to_numpy()
    lo, hi = int(sec.min()), int(sec.max())
    duration = hi - lo + 1
    w = window_size(duration)
    first = sec < lo + w
    last = sec > hi - w
    lat = samples["lat"].to_numpy()
    ok = samples["ok"].to_numpy(dtype=bool)
    p_first, p_last = _p95(lat[first]), _p95(lat[last])
    t_first, t_last = ok[first].sum() / w, ok[last].sum() / w
    return {
        "duration_s": float(duration),
        "window_s": float(w),
        "p95_first": p_first,
        "p95_last": p_last,
        "latency_degradation_pct": (p_last / p_first - 1) * 100 if p_first > 0 else math.nan,
        "throughput_first": float(t_first),
        "throughput_last": float(t_last),
        "throughput_drop_pct": (1 - t_last / t_first) * 100 if t_first > 0 else math.nan,
    }


def memory_growth(resources: pd.DataFrame | None) -> pd.DataFrame:
    """Per part: mean RSS in the first and last window, growth %, slope; flagged above 10 %."""
    cols = ["part", "rss_first", "rss_last", "growth_pct", "slope_bytes_per_min", "flagged"]
    if resources is None or resources.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for part, g in resources.groupby("part", observed=True, sort=True):  # one iteration per part
        ts = g["ts"].to_numpy(dtype="float64")
        rss = g["rss_bytes"].to_numpy(dtype="float64")
        w = window_size(ts.max() - ts.min())
        first = rss[ts < ts.min() + w].mean()
        last = rss[ts > ts.max() - w].mean()
        slope = float(np.polyfit(ts - ts.min(), rss, 1)[0] * 60) if len(ts) > 1 and np.ptp(ts) > 0 else 0.0
        growth = (last / first - 1) * 100 if first > 0 else math.nan
        rows.append({"part": str(part), "rss_first": float(first), "rss_last": float(last), "growth_pct": growth,
                     "slope_bytes_per_min": slope, "flagged": bool(growth > MEMORY_GROWTH_FLAG_PCT)})
    return pd.DataFrame(rows, columns=cols)
