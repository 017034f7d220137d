"""Charts for the report: matplotlib (Agg, no display), returned as base64 PNG data URIs.

Every chart's x axis is seconds since the run's start (Metrics.t0), and fault
windows from the journal are shaded and labelled, so a latency spike can be
read against the fault that caused it.
"""

from __future__ import annotations

import base64
import io
import logging
import math

import matplotlib

matplotlib.use("Agg")
# a first run builds matplotlib's font cache and says so in the middle of the run's output: not news
logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.metrics import Metrics  # noqa: E402

MAX_LATENCY_PANELS = 8
DPI = 100
WIDTH_IN = 10.0
COLOURS = {"p50": "#2b6cb0", "p95": "#dd6b20", "p99": "#c53030", "ok": "#2f855a", "failures": "#c53030"}
FAULT_COLOUR = "#e53e3e"
BURST_COLOUR = "#805ad5"


def _png(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _shade(ax: plt.Axes, windows: list[tuple[float, float, str, str]], label: bool) -> None:
    """Shade fault/burst windows (start_s, end_s, label, colour); label them at the top of the axes."""
    for start, end, text, colour in windows:
        ax.axvspan(start, end, color=colour, alpha=0.12, lw=0)
        ax.axvline(start, color=colour, alpha=0.6, lw=0.8)
        if label:
            ax.annotate(text, xy=(start, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -2),
                        textcoords="offset points", va="top", ha="left", fontsize=8, color=colour)


def fault_windows(faults: pd.DataFrame, bursts: pd.DataFrame, end_s: float) -> list[tuple[float, float, str, str]]:
    """(start_s, end_s, label, colour) for every fault and burst; unhealed faults run to the end."""
    out = []
    for f in faults.itertuples(index=False):
        if f.start_s is None or math.isnan(f.start_s):  # never injected: nothing to shade
            continue
        heal = f.heal_s if f.heal_s is not None and not (isinstance(f.heal_s, float) and math.isnan(f.heal_s)) \
            else end_s
        out.append((float(f.start_s), float(heal), str(f.name), FAULT_COLOUR))
    for b in bursts.itertuples(index=False):
        end = b.end_s if b.end_s is not None and not (isinstance(b.end_s, float) and math.isnan(b.end_s)) else end_s
        out.append((float(b.start_s), float(end), "burst", BURST_COLOUR))
    return out


def latency_chart(m: Metrics, windows: list[tuple[float, float, str, str]]) -> str | None:
    """p50/p95/p99 per second for the busiest names (one panel each), fault windows shaded."""
    if m.series.empty:
        return None
    top = m.names.sort_values("count", ascending=False).head(MAX_LATENCY_PANELS)
    n = len(top)
    fig, axes = plt.subplots(n, 1, figsize=(WIDTH_IN, 1.9 * n + 0.4), sharex=True, squeeze=False)
    for i, (ax, row) in enumerate(zip(axes[:, 0], top.itertuples(index=False))):
        s = m.series[(m.series["type"] == row.type) & (m.series["name"] == row.name)]
        for p in ("p50", "p95", "p99"):
            ax.plot(s["sec"], s[p], label=p, color=COLOURS[p], lw=1.1)
        positive = s[["p50", "p99"]].to_numpy()
        positive = positive[positive > 0]
        if len(positive) and positive.max() / max(positive.min(), 1e-9) > 50:
            ax.set_yscale("log")
        ax.set_ylabel("ms")
        ax.set_title(f"{row.name}  ({row.type})", loc="left", fontsize=9)
        ax.grid(alpha=0.3)
        _shade(ax, windows, label=True)
        if i == 0:
            ax.legend(loc="upper right", fontsize=8, ncol=3)
    axes[-1, 0].set_xlabel("seconds since start")
    fig.tight_layout()
    return _png(fig)


def throughput_chart(m: Metrics, windows: list[tuple[float, float, str, str]]) -> str | None:
    """Successes and failures per second (all samples), fault windows shaded."""
    o = m.overall
    if o.empty:
        return None
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 2.8))
    ax.plot(o["sec"], o["ok"], color=COLOURS["ok"], lw=1.1, label="ok/s")
    ax.plot(o["sec"], o["failures"], color=COLOURS["failures"], lw=1.1, label="failures/s")
    ax.fill_between(o["sec"], 0, o["failures"], color=COLOURS["failures"], alpha=0.25, step=None)
    ax.set_ylabel("requests/s")
    ax.set_xlabel("seconds since start")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    _shade(ax, windows, label=True)
    fig.tight_layout()
    return _png(fig)


def _line_per_group(frame: pd.DataFrame, group: str, values: pd.Series | np.ndarray, ylabel: str,
                    windows: list[tuple[float, float, str, str]], legend_loc: str, label_windows: bool,
                    gaps: bool = False) -> str:
    """One line per value of ``group`` over ``sec`` (the lag, CPU and memory charts).

    With ``gaps``, a second without a value breaks the line (a sampler's
    series: a source that did not answer is not drawn across).
    """
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 2.6))
    data = frame.assign(_y=np.asarray(values, dtype=float))
    groups = data.groupby(group, observed=True)
    for key, s in groups:
        y = s.set_index("sec")["_y"]
        if gaps and len(y):
            y = y.groupby(level=0).max().reindex(range(int(y.index.min()), int(y.index.max()) + 1))
        ax.plot(y.index, y.to_numpy(), lw=1.1, label=str(key))
    ax.set_ylabel(ylabel)
    ax.set_xlabel("seconds since start")
    ax.grid(alpha=0.3)
    ax.legend(loc=legend_loc, fontsize=7 if groups.ngroups > 6 else 8, ncol=1 + (groups.ngroups - 1) // 6)
    _shade(ax, windows, label=label_windows)
    fig.tight_layout()
    return _png(fig)


def lag_chart(m: Metrics, windows: list[tuple[float, float, str, str]]) -> str | None:
    """Largest consumer lag per second, per consumer."""
    if m.lag_series.empty:
        return None
    return _line_per_group(m.lag_series, "consumer", m.lag_series["lag_ms"], "lag (ms)", windows, "upper right", True)


def lag_messages_chart(m: Metrics, windows: list[tuple[float, float, str, str]]) -> str | None:
    """Each consumer group's lag in messages (and the system's backlog, e.g. the outbox) per second."""
    s = m.lag_messages_series
    if s.empty:
        return None
    return _line_per_group(s, "consumer", s["lag_messages"], "lag (messages)", windows, "upper right", True, gaps=True)


def memory_chart(m: Metrics, windows: list[tuple[float, float, str, str]]) -> str | None:
    """RSS of each part over time (MiB)."""
    if m.resources.empty:
        return None
    mib = np.asarray(m.resources["rss_bytes"], dtype=float) / 2**20
    return _line_per_group(m.resources, "part", mib, "RSS (MiB)", windows, "upper left", False, gaps=True)


def cpu_chart(m: Metrics, windows: list[tuple[float, float, str, str]]) -> str | None:
    """CPU of each part over time (% of one core)."""
    if m.resources.empty:
        return None
    return _line_per_group(m.resources, "part", m.resources["cpu_percent"], "CPU (% of a core)", windows,
                           "upper left", True, gaps=True)


def draw_all(m: Metrics, faults: pd.DataFrame, bursts: pd.DataFrame) -> dict[str, str]:
    """Every chart that has data, by name, as data URIs."""
    end_s = float(m.overall["sec"].max() + 1) if len(m.overall) else 0.0
    windows = fault_windows(faults, bursts, end_s)
    charts = {
        "latency": latency_chart(m, windows),
        "throughput": throughput_chart(m, windows),
        "lag": lag_chart(m, windows),
        "lag_messages": lag_messages_chart(m, windows),
        "cpu": cpu_chart(m, windows),
        "memory": memory_chart(m, windows),
    }
    return {k: v for k, v in charts.items() if v is not None}
