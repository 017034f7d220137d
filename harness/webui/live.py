"""The Live tab's numbers: per second, the p95 of the bus round trips and every consumer group's lag.

Locust's Charts tab shows a rolling response time over every request and
cannot show consumer lag. This keeps, per second of the run, the latencies
of the end-to-end (``e2e``: publish until the result is seen) and the
publish (``kafka``) samples of this process, and reads the lag from the
sampler's latest rows (harness/sampler.py), so the chart and the report
count the same things. The p95 of a second is exact (numpy over that
second's latencies), not an estimate. In a distributed run the workers'
requests never reach the master's request hook: the p95 lines are then
empty, the lag lines are not.
"""
from __future__ import annotations

import collections
import math
import time
from typing import Any

import numpy as np

TYPES = ("e2e", "kafka")
KEEP_S = 3600  # an hour of seconds; older ones are dropped


class LiveSeries:
    """Latencies per (second, request type), fed by Locust's request hook of the owner process."""

    def __init__(self) -> None:
        self._by_second: dict[int, dict[str, list[float]]] = collections.defaultdict(
            lambda: {t: [] for t in TYPES})

    def reset(self) -> None:
        self._by_second.clear()

    def add(self, request_type: str, ts_start: float, latency_ms: float, ok: bool) -> None:
        if request_type not in TYPES or not ok:
            return
        sec = int(ts_start)
        self._by_second[sec][request_type].append(latency_ms)
        if len(self._by_second) > KEEP_S:
            del self._by_second[min(self._by_second)]

    def p95(self, since: float | None) -> dict[str, list[list[float | None]]]:
        """Per type, [second, p95 in ms] for each whole second up to the current one (which is still filling)."""
        now = int(time.time())
        out: dict[str, list[list[float | None]]] = {t: [] for t in TYPES}
        for sec in sorted(self._by_second):
            if sec >= now or (since is not None and sec < int(since)):
                continue
            for t, values in self._by_second[sec].items():
                if values:
                    out[t].append([sec, round(float(np.percentile(values, 95)), 2)])
        return out


def lag_series(recent: Any, since: float | None) -> dict[str, list[list[float]]]:
    """Per consumer group (and system backlog), [ts, messages] from the sampler's recent rows."""
    rows = list(recent or ())
    out: dict[str, list[list[float]]] = {}
    for r in rows:
        n = r.get("lag_messages")
        if n is None or (since is not None and r["ts"] < since):
            continue
        out.setdefault(str(r["consumer"]), []).append([round(float(r["ts"]), 3), int(n)])
    return out


def fault_windows(journal: list[dict[str, Any]], active: dict[str, Any]) -> list[dict[str, Any]]:
    """[start, end or None, name] of each fault of the run: done ones from the journal, open ones still active."""
    out = []
    for j in journal:
        if j.get("started_at"):
            end = j.get("healed_at")
            out.append({"name": j.get("name"), "start": j["started_at"],
                        "end": end if end and math.isfinite(end) else None})
    names = {w["name"] for w in out}
    for e in active.values():
        rec = e.get("record", e)
        if rec.get("started_at") and rec.get("name") not in names:
            out.append({"name": rec.get("name"), "start": rec["started_at"], "end": None})
    return out
