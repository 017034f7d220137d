"""The report: analysis.json and one self-contained index.html (charts inline), and the verdict.

``build_report`` is the public entry point: the CLI calls it, and so does a
Locust run at its end. Every number shown is taken from ``Analysis.summary()``
(the same dict written to analysis.json), so the HTML and the JSON never
disagree.
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime, timezone
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from rich.console import Console
from rich.table import Table

from analysis import charts
from analysis.analyse import Analysis, analyse
from analysis.compare import Delta, as_dicts, compare, load_summary

TEMPLATES = Path(__file__).parent / "templates"


# a verdict -> the exit code of `python -m analysis report|check` and of a Locust run; 2 is bad input
EXIT_CODES = {"pass": 0, "no thresholds": 0, "fail": 1, "unknown": 3}


def exit_code(status: str) -> int:
    """0 pass or nothing to check, 1 a threshold failed, 3 unknown (measuring raised); any other verdict is unknown."""
    return EXIT_CODES.get(status, 3)


@dataclass
class Verdict:
    """The outcome of a report: ``status`` is pass, fail, unknown or no thresholds (see exit_code)."""

    status: str
    results: list[dict[str, Any]]
    run_dir: Path
    report_path: Path | None = None
    json_path: Path | None = None
    deltas: list[Delta] = field(default_factory=list)
    analysis: Analysis | None = field(default=None, repr=False)

    @property
    def passed(self) -> bool:
        return self.exit_code == 0

    @property
    def exit_code(self) -> int:
        return exit_code(self.status)

    def print(self, console: Console | None = None) -> None:
        """The verdict table and the report's path, as ``python -m analysis report`` prints them."""
        if console is None:  # piped or in CI: wide enough that the verdict table does not wrap
            console = Console() if Console().is_terminal else Console(width=160)
        print_verdict(console, self.status, self.results)
        if self.report_path is not None:
            console.print(f"report: {self.report_path}")


STATUS_STYLE = {"pass": "bold green", "fail": "bold red", "no data": "bold red", "error": "bold magenta",
                "generator-limited": "bold magenta"}


def verdict_table(results: list[dict[str, Any]], title: str = "thresholds") -> Table:
    """One row per threshold: text, measured, limit, verdict, detail (rich)."""
    table = Table(title=title, title_justify="left")
    table.add_column("threshold")
    table.add_column("measured", justify="right")
    table.add_column("limit", justify="right")
    table.add_column("verdict")
    table.add_column("detail", style="dim")
    for r in results:
        table.add_row(r["text"], r["measured_display"], f"{r['op']} {r['limit_display']}",
                      f"[{STATUS_STYLE.get(r['status'], '')}]{r['status']}[/]", r["detail"])
    return table


def print_verdict(console: Console, status: str, results: list[dict[str, Any]]) -> None:
    if results:
        console.print(verdict_table(results))
    style = {"pass": "bold green", "fail": "bold red", "unknown": "bold magenta"}.get(status, "bold yellow")
    console.print(f"verdict: [{style}]{status.upper()}[/]")


# --------------------------------------------------------------------------
# formatting filters (the template never formats a number itself)


def fmt_num(v: Any, digits: int = 4) -> str:
    """Numbers at a readable precision: integers as is, else ``digits`` significant figures."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float) and math.isinf(v):
        return "never"
    if isinstance(v, int) or float(v).is_integer() and abs(v) >= 1000:
        return f"{int(v):,}"
    if abs(v) >= 10**digits:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def fmt_ms(v: Any) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{fmt_num(float(v))} ms"


def fmt_s(v: Any) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{fmt_num(float(v), 3)} s"


def fmt_pct(v: Any) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{fmt_num(float(v), 3)} %"


def fmt_rate(v: Any) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{fmt_num(float(v), 3)}"


def fmt_bytes(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{float(v) / 2**20:,.1f} MiB"


def fmt_utc(v: Any) -> str:
    """UNIX seconds as an ISO time in UTC (run.json's started_at)."""
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        return "—"
    return datetime.fromtimestamp(v, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def flatten(d: Any, prefix: str = "") -> list[tuple[str, str]]:
    """run.json as (dotted key, value) rows for the environment table."""
    if isinstance(d, dict):
        rows: list[tuple[str, str]] = []
        for k, v in d.items():
            rows += flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return rows
    if isinstance(d, list):
        return [(prefix, ", ".join(json.dumps(x) if isinstance(x, (dict, list)) else str(x) for x in d))]
    return [(prefix, "—" if d is None else str(d))]


def steady_state_rows(experiment: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per probe of an experiment: its result before and after the method (None: not checked)."""
    before = {p["name"]: p for p in experiment["steady_state_before"]}
    after = {p["name"]: p for p in experiment["steady_state_after"]}
    return [{"name": name, "before": before.get(name), "after": after.get(name)}
            for name in dict.fromkeys([*before, *after])]


def environment(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """Run info (already masked by Analysis.summary) minus what the header shows anyway."""
    return flatten({k: v for k, v in summary["run"].items() if k not in ("run_id",)})


def render_html(summary: dict[str, Any], chart_uris: dict[str, str], deltas: list[Delta] | None,
                baseline: str | None) -> str:
    """The report page from the summary and chart data URIs (no file access)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=fmt_num, ms=fmt_ms, secs=fmt_s, pct=fmt_pct, rate=fmt_rate, mib=fmt_bytes, utc=fmt_utc,
                       basename=lambda p: Path(str(p)).name, steady_state=steady_state_rows)
    marks: dict[tuple[str, str, str], Delta] = {}
    for d in deltas or []:
        marks[(d.section, d.item, d.metric)] = d
    changed = [d for d in deltas or [] if d.direction in ("better", "worse", "new", "gone")]
    return env.get_template("report.html.j2").render(
        s=summary,
        charts=chart_uris,
        env_rows=environment(summary),
        baseline=baseline,
        marks=marks,
        changed=changed,
        deltas=deltas or [],
        max_panels=charts.MAX_LATENCY_PANELS,
    )


def build_report(
    run_dir: str | os.PathLike[str],
    thresholds: str | os.PathLike[str] | None = None,
    baseline: str | os.PathLike[str] | None = None,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> Verdict:
    """Analyse ``run_dir``, write ``analysis.json`` and ``index.html`` into it (or ``out_dir``), return the verdict.

    ``thresholds``: a threshold file (or a shipped set's name); default run.json's
    ``thresholds``, else ``analysis/thresholds/<scenario>.yaml``.
    ``baseline``: another run directory (or its analysis.json) to compare with.
    Raises RunDirError / ThresholdError with the file named when inputs are bad.
    """

    def step(label: str) -> None:
        if on_step is not None:
            on_step(label)

    a = analyse(run_dir, thresholds, on_step=on_step)
    summary = a.summary()
    deltas: list[Delta] = []
    if baseline is not None:
        step("comparing with the baseline")
        base = load_summary(baseline, [r.threshold for r in a.results])
        deltas = compare(base, summary)
        summary["baseline"] = {"run_dir": str(baseline), "run_id": base.get("run", {}).get("run_id"),
                               "deltas": as_dicts(deltas)}
    step("drawing charts")
    uris = charts.draw_all(a.metrics, a.faults, a.bursts)
    step("writing index.html")
    out = Path(out_dir) if out_dir is not None else Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "analysis.json"
    json_path.write_text(json.dumps(summary, indent=1, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    html_path = out / "index.html"
    html_path.write_text(render_html(summary, uris, deltas if baseline is not None else None,
                                     None if baseline is None else str(baseline)), encoding="utf-8")
    return Verdict(status=a.verdict, results=summary["thresholds"], run_dir=Path(run_dir), report_path=html_path,
                   json_path=json_path, deltas=deltas, analysis=a)
