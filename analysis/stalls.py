"""Consumer stalls: a group with lag whose committed position does not move.

Lag alone cannot tell a stuck consumer from a busy one (a steady lag of 40 is
a healthy consumer keeping pace), so the sampler records beside each group's
lag its committed offsets summed (``committed`` in ``lag/``). A stall is a
run of samples in which the lag is above 0 and that sum stays the same; it
ends at the first sample where the sum changes (any change: a new broker
incarnation starts the group's offsets again) or the lag is 0.

A stall counts (``stalled`` in thresholds) when it lasts at least
``STALL_AFTER_S`` outside the fault windows: from a fault's injection to
``FAULT_GRACE_S`` after its heal a consumer may well wait (its broker or its
database is away), and that is what recovery and drain times measure. A
consumer still stuck past the grace counts from there. A stall still open at
the last sample is ``ongoing``.

A pure function from rows to rows, in the spirit of a Jepsen checker: the
caller (analysis/analyse.py) turns an exception into "unknown".
"""
from __future__ import annotations

import math

import pandas as pd

STALL_AFTER_S = 10.0
FAULT_GRACE_S = 10.0
STALL_COLUMNS = ["consumer", "start_ts", "end_ts", "length_s", "excused_s", "max_lag", "ongoing", "counted", "faults"]


def fault_windows(faults: pd.DataFrame | None, grace_s: float = FAULT_GRACE_S) -> list[tuple[float, float, str]]:
    """(start, end, name) per fault: from its injection to `grace_s` after its heal (open-ended if never healed)."""
    if faults is None or faults.empty or "started_at" not in faults:
        return []
    out = []
    for f in faults.itertuples(index=False):
        start = float(f.started_at)
        healed = float(getattr(f, "healed_at", math.nan))
        end = math.inf if math.isnan(healed) else healed + grace_s
        out.append((start, end, str(getattr(f, "name", "") or getattr(f, "action", "fault"))))
    return out


def _overlap(start: float, end: float, windows: list[tuple[float, float, str]]) -> tuple[float, list[str]]:
    """Seconds of [start, end] inside the union of the windows, and the names of the windows it touches."""
    spans = sorted((max(start, ws), min(end, we)) for ws, we, _ in windows if ws < end and we > start)
    covered, reach = 0.0, start
    for s, e in spans:
        s = max(s, reach)
        if e > s:
            covered += e - s
            reach = e
    names = [name for ws, we, name in windows if ws < end and we > start]
    return covered, names


def find_stalls(lag: pd.DataFrame | None, faults: pd.DataFrame | None = None,
                stall_after_s: float = STALL_AFTER_S, grace_s: float = FAULT_GRACE_S) -> pd.DataFrame:
    """Every stall of every consumer group in ``lag/`` rows (STALL_COLUMNS); empty without ``committed``."""
    if lag is None or lag.empty or "committed" not in lag:
        return pd.DataFrame(columns=STALL_COLUMNS)
    rows = lag[lag["committed"].notna() & lag["lag_messages"].notna()]
    if rows.empty:
        return pd.DataFrame(columns=STALL_COLUMNS)
    windows = fault_windows(faults, grace_s)
    found = []
    for consumer, group in rows.sort_values("ts", kind="stable").groupby("consumer", observed=True, sort=True):
        ts = group["ts"].to_numpy(dtype="float64")
        behind = group["lag_messages"].to_numpy(dtype="float64")
        at = group["committed"].to_numpy(dtype="float64")
        start = None
        peak = 0.0
        for i in range(1, len(ts)):
            if behind[i] > 0 and at[i] == at[i - 1]:
                if start is None:
                    start, peak = ts[i - 1], behind[i - 1]
                peak = max(peak, behind[i])
                continue
            if start is not None:
                found.append(_stall(str(consumer), start, ts[i - 1], peak, False, windows, stall_after_s))
                start = None
        if start is not None:
            found.append(_stall(str(consumer), start, ts[-1], peak, True, windows, stall_after_s))
    out = pd.DataFrame([s for s in found if s["length_s"] >= stall_after_s], columns=STALL_COLUMNS)
    return out.reset_index(drop=True)


def _stall(consumer: str, start: float, end: float, peak: float, ongoing: bool,
           windows: list[tuple[float, float, str]], stall_after_s: float) -> dict:
    excused, names = _overlap(start, end, windows)
    length = end - start
    return {"consumer": consumer, "start_ts": start, "end_ts": end, "length_s": length, "excused_s": excused,
            "max_lag": int(peak), "ongoing": ongoing, "counted": length - excused >= stall_after_s,
            "faults": ", ".join(names)}
