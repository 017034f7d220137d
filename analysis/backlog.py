"""Drain time: from a fault's heal until the system's backlog is back to its level before the fault.

The backlog is what waits to be handled, in messages: per second, the sum of
every consumer's ``lag_messages`` in ``lag/`` (each consumer group's lag read
from the broker, and the system's own backlog, e.g. the bridge's unsent
outbox rows). A second counts only when every consumer that has samples
before and after it has one in it; a second in which the broker (or the
database) did not answer has no total, so a missing group never reads as an
empty backlog.

Per fault (docs/analysis.md):

- the level before the fault is twice the p95 of the total over the 30 s
  before it (not reaching back into an earlier fault or its draining), at
  least ``FLOOR_MESSAGES``: a healthy bus's in-flight count jitters by that
  much from second to second, a backlog a fault built is hundreds;
- the drain time is from the heal to the first counted second after it from
  which the total stays at or below that level for ``HOLD_S`` (3)
  consecutive samples (an incomplete second breaks the streak); its
  resolution is the sampling interval, one second;
- never drained (infinite) when that does not happen before the next fault or
  the end of the samples, or when the fault was never healed; unknown (NaN)
  when the run has no ``lag_messages`` samples at all.

The replay time is the same rule over the system's own backlog alone (rows
with ``source`` ``system``, e.g. the outbox the broker kill filled), sampled
four times a second: from the heal until it is back at its level and stays
there for ``REPLAY_HOLD_S``. It is what "the replay after the broker's
recovery" means: the events the system held back are on the bus again, even
while its consumers still work through them (that is the drain time).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pandas as pd

from analysis.metrics import lag_rows
from analysis.recovery import BASELINE_WINDOW_S, HOLD_S, recovery_time

FLOOR_MESSAGES = 10.0  # a backlog this small is drained: a healthy bus always has a few messages in flight
LEVEL_FACTOR = 2.0  # the level is this many times the pre-fault p95 (at least FLOOR_MESSAGES)
REPLAY_HOLD_S = 1.0
DRAIN_COLUMNS = ["drain_s", "drain_level", "drain_outcome", "drain_note"]
REPLAY_COLUMNS = ["replay_s", "replay_level", "replay_outcome", "replay_note"]


def backlog_series(lag: pd.DataFrame | None, t0: float) -> pd.DataFrame:
    """Per second with samples: ``ts`` (its latest sample), ``total`` messages, ``complete`` (every consumer in)."""
    rows = lag_rows(lag, "lag_messages")
    if rows is None:
        return pd.DataFrame(columns=["sec", "ts", "total", "complete"])
    rows = rows.assign(sec=np.floor(rows["ts"].to_numpy(dtype="float64") - t0).astype("int64"),
                       consumer=rows["consumer"].astype(str), lag_messages=rows["lag_messages"].astype("float64"))
    rows = rows.sort_values("ts", kind="stable")
    grid = rows.pivot_table(index="sec", columns="consumer", values="lag_messages", aggfunc="last")
    seen = grid.notna()
    index = grid.index.to_numpy()
    first = {c: index[seen[c].to_numpy()].min() for c in grid.columns}
    last = {c: index[seen[c].to_numpy()].max() for c in grid.columns}
    expected = pd.DataFrame({c: (index >= first[c]) & (index <= last[c]) for c in grid.columns}, index=grid.index)
    out = pd.DataFrame({
        "sec": index,
        "ts": rows.groupby("sec")["ts"].max().reindex(grid.index).to_numpy(),
        "total": grid.sum(axis=1, min_count=1).to_numpy(),
        "complete": (seen | ~expected).all(axis=1).to_numpy(),
    })
    return out.reset_index(drop=True)


def _level(before: np.ndarray) -> float:
    """The backlog a fault must get back to: LEVEL_FACTOR x the p95 before it, at least FLOOR_MESSAGES."""
    return max(LEVEL_FACTOR * float(np.quantile(before, 0.95)) if len(before) else 0.0, FLOOR_MESSAGES)


def drain_time(series: pd.DataFrame, start: float, heal: float | None, prev_busy: float,
               horizon: float) -> dict[str, object]:
    """The drain columns of one fault (DRAIN_COLUMNS) from the backlog series."""
    if series.empty:
        return {"drain_s": math.nan, "drain_level": math.nan, "drain_outcome": "no data",
                "drain_note": "no lag samples (lag_messages: the sampler's, see --no-sampler)"}
    ts = series["ts"].to_numpy(dtype="float64")
    total = series["total"].to_numpy(dtype="float64")
    complete = series["complete"].to_numpy(dtype=bool)
    pre = complete & (ts >= max(start - BASELINE_WINDOW_S, prev_busy)) & (ts < start)
    level = _level(total[pre])
    notes = [] if pre.any() else [f"no backlog samples before the fault: level {FLOOR_MESSAGES:g} messages"]
    row: dict[str, object] = {"drain_s": math.inf, "drain_level": level, "drain_outcome": "not drained"}
    if heal is None:
        row["drain_note"] = "; ".join([*notes, "never healed"])
        return row
    after = (ts >= heal) & (ts < horizon)
    # the hold rule of the recovery time, over samples: the offset of the first of HOLD_S good ones in a row
    drained = recovery_time(pd.DataFrame({"k": ts[after] - heal, "good": (complete & (total <= level))[after]}))
    if not math.isnan(drained):
        row.update(drain_s=drained, drain_outcome="drained")
    else:
        until = "the next fault" if math.isfinite(horizon) else "the end of the samples"
        notes.append(f"not back to {level:g} messages for {HOLD_S} samples before {until}")
    row["drain_note"] = "; ".join(notes)
    return row


OneFault = Callable[[pd.DataFrame, float, "float | None", float, float], dict[str, object]]


def per_fault(faults: pd.DataFrame, series: pd.DataFrame, one_fault: OneFault, columns: list[str]) -> pd.DataFrame:
    """The faults table with ``columns`` joined, ``one_fault`` measuring each fault in turn.

    ``columns`` are ``<x>_s, <x>_level, <x>_outcome, <x>_note``. The level
    before a fault leaves out the earlier faults and their draining: each
    fault is busy from its start until its heal plus its measured time (for
    ever when never healed or never back), and ``one_fault`` gets the end of
    the last busy stretch and the next fault's start as its horizon.
    """
    seconds, level, outcome, note = columns
    out = faults.copy()
    if faults.empty:
        for c in columns:
            out[c] = pd.Series(dtype="object")
        return out
    starts = pd.to_numeric(faults.get("started_at"), errors="coerce").to_numpy(dtype="float64")
    heals = pd.to_numeric(faults.get("healed_at"), errors="coerce").to_numpy(dtype="float64")
    rows: list[dict[str, object]] = []
    busy_until = -math.inf
    for i in range(len(faults)):
        if math.isnan(starts[i]):
            rows.append({seconds: math.nan, level: math.nan, outcome: "no data", note: "never injected"})
            continue
        heal = None if math.isnan(heals[i]) else float(heals[i])
        later = starts[starts > (heal if heal is not None else starts[i])]
        row = one_fault(series, float(starts[i]), heal, busy_until, float(later.min()) if len(later) else math.inf)
        took = float(row[seconds])  # type: ignore[arg-type]
        busy_until = math.inf if heal is None else max(busy_until, heal + (0.0 if math.isnan(took) else took))
        rows.append(row)
    for c in columns:
        out[c] = [r[c] for r in rows]
    return out


def drain_times(faults: pd.DataFrame, series: pd.DataFrame) -> pd.DataFrame:
    """The faults table (recovery.analyse_faults) with the DRAIN_COLUMNS joined, one value per fault."""
    return per_fault(faults, series, drain_time, DRAIN_COLUMNS)


def system_series(lag: pd.DataFrame | None) -> pd.DataFrame:
    """The system's own backlog (``source`` ``system``): per sampling tick, ``ts`` and the ``total`` messages."""
    rows = lag_rows(lag, "lag_messages")
    if rows is None or "source" not in rows:
        return pd.DataFrame(columns=["ts", "total"])
    rows = rows[rows["source"].astype("string") == "system"]
    if rows.empty:
        return pd.DataFrame(columns=["ts", "total"])
    totals = rows.assign(lag_messages=rows["lag_messages"].astype("float64")).groupby("ts")["lag_messages"].sum()
    return pd.DataFrame({"ts": totals.index.to_numpy(dtype="float64"), "total": totals.to_numpy()})


def replay_time(series: pd.DataFrame, start: float, heal: float | None, prev_busy: float,
                horizon: float) -> dict[str, object]:
    """The replay columns of one fault (REPLAY_COLUMNS) from the system's backlog series."""
    if series.empty:
        return {"replay_s": math.nan, "replay_level": math.nan, "replay_outcome": "no data",
                "replay_note": "the system reports no backlog of its own (SystemAdapter.backlog)"}
    ts = series["ts"].to_numpy(dtype="float64")
    total = series["total"].to_numpy(dtype="float64")
    pre = (ts >= max(start - BASELINE_WINDOW_S, prev_busy)) & (ts < start)
    level = _level(total[pre])
    row: dict[str, object] = {"replay_s": math.inf, "replay_level": level, "replay_outcome": "not replayed",
                              "replay_note": "never healed"}
    if heal is None:
        return row
    after = np.flatnonzero((ts >= heal) & (ts < horizon))
    good = total <= level
    for n, i in enumerate(after):  # the first sample from which every sample for REPLAY_HOLD_S is at the level
        if not good[i]:
            continue
        streak = after[n:][ts[after[n:]] <= ts[i] + REPLAY_HOLD_S]
        if ts[streak[-1]] >= ts[i] + REPLAY_HOLD_S * 0.75 and good[streak].all():
            row.update(replay_s=float(ts[i] - heal), replay_outcome="replayed", replay_note="")
            return row
    until = "the next fault" if math.isfinite(horizon) else "the end of the samples"
    row["replay_note"] = f"the system's backlog not back to {level:g} messages for {REPLAY_HOLD_S:g} s before {until}"
    return row


def replay_times(faults: pd.DataFrame, series: pd.DataFrame) -> pd.DataFrame:
    """The faults table with the REPLAY_COLUMNS joined, one value per fault."""
    return per_fault(faults, series, replay_time, REPLAY_COLUMNS)
