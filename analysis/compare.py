"""Compare two runs: what got better or worse, from their analysis summaries.

Works on the dicts ``Analysis.summary()`` produces (the content of
analysis.json), so a baseline analysed months ago compares without its raw
samples. A change smaller than TOLERANCE_PCT is "same": run-to-run noise is
not news.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

TOLERANCE_PCT = 5.0
NAME_METRICS = {"p50": "lower", "p95": "lower", "p99": "lower", "throughput": "higher", "error_rate": "lower"}
LOSS_METRICS = ("lost", "duplicated", "unexpected", "leaked", "recovered", "unacknowledged")
FAULT_METRICS = {"recovery_s": "lower", "first_success_s": "lower", "during_error_rate": "lower"}


@dataclass
class Delta:
    """One compared number; ``direction`` is better, worse, same, new (only in run) or gone (only in baseline)."""

    section: str
    item: str
    metric: str
    base: float | None
    run: float | None
    change_pct: float | None
    direction: str


def _judge(base: float | None, run: float | None, better: str, tolerance: float = TOLERANCE_PCT) -> tuple[float | None, str]:
    """(change %, direction) of run against base; ``better`` says whether lower or higher is better."""
    if base is None and run is None:
        return None, "same"
    if base is None:
        return None, "new"
    if run is None:
        return None, "gone"
    if base == run:
        return 0.0, "same"
    if math.isinf(base) or math.isinf(run):  # "never recovered" on one side
        improved = run < base if better == "lower" else run > base
        return None, ("better" if improved else "worse")
    change = (run - base) / abs(base) * 100 if base != 0 else math.inf
    if abs(change) < tolerance:
        return change, "same"
    improved = run < base if better == "lower" else run > base
    return (None if math.isinf(change) else change), ("better" if improved else "worse")


def compare(base: dict[str, Any], run: dict[str, Any]) -> list[Delta]:
    """Every comparable number of two summaries, per name, loss category, fault and threshold."""
    out: list[Delta] = []

    def add(section: str, item: str, metric: str, b: Any, r: Any, better: str, tolerance: float = TOLERANCE_PCT) -> None:
        change, direction = _judge(b, r, better, tolerance)
        out.append(Delta(section, item, metric, b, r, change, direction))

    base_names = {(n["type"], n["name"]): n for n in base.get("names", [])}
    run_names = {(n["type"], n["name"]): n for n in run.get("names", [])}
    for key in sorted(set(base_names) | set(run_names)):
        b, r = base_names.get(key, {}), run_names.get(key, {})
        for metric, better in NAME_METRICS.items():
            add("names", f"{key[1]} ({key[0]})", metric, b.get(metric), r.get(metric), better)

    bl, rl = base.get("loss", {}), run.get("loss", {})
    if bl.get("available") or rl.get("available"):
        for c in LOSS_METRICS:
            b = bl.get("totals", {}).get(c) if bl.get("available") else None
            r = rl.get("totals", {}).get(c) if rl.get("available") else None
            add("loss", "all kinds", c, b, r, "lower", tolerance=0.0)

    def worst_by_name(faults: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
        out_: dict[str, dict[str, float | None]] = {}
        for f in faults:
            slot = out_.setdefault(str(f["name"]), {})
            for metric in FAULT_METRICS:
                v = f.get(metric)
                v = math.inf if v is None and metric != "during_error_rate" else v
                prev = slot.get(metric)
                slot[metric] = v if prev is None or (v is not None and v > prev) else prev
        return out_

    bf, rf = worst_by_name(base.get("faults", [])), worst_by_name(run.get("faults", []))
    for name in sorted(set(bf) | set(rf)):
        for metric, better in FAULT_METRICS.items():
            b = bf.get(name, {}).get(metric)
            r = rf.get(name, {}).get(metric)
            add("faults", name, metric, b, r, better)

    bt = {t["text"]: t for t in base.get("thresholds", [])}
    rt = {t["text"]: t for t in run.get("thresholds", [])}
    for text in sorted(set(bt) | set(rt)):
        b, r = bt.get(text), rt.get(text)
        better = "lower" if (r or b)["op"] in ("<", "<=") else "higher"
        add("thresholds", text, "measured", b and b.get("measured"), r and r.get("measured"), better)
    return out


def load_summary(path: str | os.PathLike[str], thresholds: list[Any] | None = None) -> dict[str, Any]:
    """A run's summary: its analysis.json when current, else analysed afresh from the directory.

    Analysed afresh, it is checked against ``thresholds`` (the compared run's, so
    the threshold deltas line up), else its own; a baseline whose own threshold
    file is gone is compared without thresholds rather than refused.
    """
    from analysis.analyse import JSON_VERSION, analyse
    from analysis.thresholds import ThresholdError

    p = Path(path)
    js = p / "analysis.json" if p.is_dir() else p
    if js.is_file():
        try:
            data = json.loads(js.read_text(encoding="utf-8"))
            if data.get("version") == JSON_VERSION:
                return data
        except (OSError, json.JSONDecodeError):
            pass  # damaged or stale: analyse the raw data instead
    try:
        return analyse(p, thresholds).summary()
    except ThresholdError:
        return analyse(p, []).summary()


def as_dicts(deltas: list[Delta]) -> list[dict[str, Any]]:
    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(d).items()}
            for d in deltas]
