"""``python -m analysis``: report, check and compare run directories.

Exit codes (README: Exit codes): 0 pass (or nothing to check for ``report``),
1 a threshold failed, 2 bad input (missing/damaged run directory file,
threshold file mistake, or ``check`` with no thresholds at all; the run
directory and the threshold file are checked before anything is read), 3
unknown (none failed, but measuring one raised, or the analysis itself broke:
nothing is proven). Errors are one line; ``--debug`` or ``BRIDGESTORM_DEBUG=1``
adds the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from analysis.report import exit_code, print_verdict
from analysis.thresholds import METRICS, ThresholdError
from rundir.schema import RunDirError

EPILOG = """\
threshold files (YAML, one check per line):
  - p95(workflow→completed) < 400ms     latency: p50 p90 p95 p99 p99.9 mean min max, service_p95 ...
  - throughput(POST /stamp) > 1000/s    successes per second
  - errors(POST /workflows) < 1%        failures, as a count or % of samples
  - lost == 0                           loss, a count or %: sent acked ok lost recovered
  - duplicated(event) < 0.1%            unacknowledged duplicated unexpected leaked (argument: ledger kind)
  - recovery(broker-kill) < 2s          faults: recovery first_success fault_errors
  - burst_recovery < 5s, degradation < 50%, throughput_drop < 50%, memory_growth < 10%, lag_p95 < 100ms
shipped sets: analysis/thresholds/*.yaml (pass a name, e.g. --thresholds flagship)

exit codes: 0 pass, 1 a threshold failed, 2 bad usage or input (nothing was analysed), 3 unknown (measuring a
threshold raised, or the analysis broke)
"""


def input_problems(args: argparse.Namespace) -> list[str]:
    """The run directory, the threshold file and the baseline, checked before anything is read (all at once)."""
    from analysis.thresholds import load_thresholds, resolve

    found = []
    for name in ("run_dir", "baseline", "run"):
        path = getattr(args, name, None)
        if path is not None and not path.exists():
            found.append(f"{path}: no such run directory")
        elif name == "run_dir" and path is not None and not path.is_dir():
            found.append(f"{path}: not a run directory")
    ref = getattr(args, "thresholds", None)
    if ref:
        source = resolve(ref, args.run_dir if args.run_dir.is_dir() else None)
        try:
            load_thresholds(source)
        except ThresholdError as exc:
            found.append(str(exc) if source.is_file() else f"--thresholds: {ref!r} is neither a file nor a "
                                                           "shipped set (analysis/thresholds/)")
    return found


@contextmanager
def progress(console: Console, enabled: bool) -> Iterator[Callable[[str], None]]:
    """A spinner line naming the current step (loading samples, drawing charts...)."""
    if not enabled:
        yield lambda label: None
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=True) as p:
        task = p.add_task("starting", total=None)
        yield lambda label: p.update(task, description=label)


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from analysis.report import build_report

    with progress(console, not args.quiet) as step:
        v = build_report(args.run_dir, thresholds=args.thresholds, baseline=args.baseline, out_dir=args.out,
                         on_step=step)
    print_verdict(console, v.status, v.results)
    if v.deltas:
        worse = [d for d in v.deltas if d.direction == "worse"]
        console.print(f"against the baseline: {len(worse)} worse, "
                      f"{sum(d.direction == 'better' for d in v.deltas)} better")
    console.print(f"report: {v.report_path}")
    return v.exit_code


def cmd_check(args: argparse.Namespace, console: Console) -> int:
    from analysis.analyse import analyse, result_dict

    with progress(console, not args.quiet) as step:
        a = analyse(args.run_dir, args.thresholds, on_step=step)
    if not a.results:
        console.print("[bold red]no thresholds to check[/]: give --thresholds, or name a file in run.json")
        return 2
    print_verdict(console, a.verdict, [result_dict(r) for r in a.results])
    return exit_code(a.verdict)


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    from analysis.compare import compare, load_summary
    from analysis.report import fmt_num

    with progress(console, not args.quiet) as step:
        step(f"loading {args.baseline}")
        base = load_summary(args.baseline)
        step(f"loading {args.run}")
        run = load_summary(args.run)
    deltas = compare(base, run)
    shown = deltas if args.all else [d for d in deltas if d.direction != "same"]
    table = Table(title=f"{args.run} against {args.baseline}", title_justify="left")
    for col, justify in (("what", "left"), ("metric", "left"), ("baseline", "right"), ("run", "right"),
                         ("change", "right"), ("", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    style = {"better": "green", "worse": "red"}
    for d in shown:
        change = "—" if d.change_pct is None else f"{d.change_pct:+.1f} %"
        table.add_row(f"{d.section} · {d.item}", d.metric, fmt_num(d.base), fmt_num(d.run), change,
                      f"[{style.get(d.direction, 'dim')}]{d.direction}[/]")
    console.print(table if shown else "no change beyond ±5 %")
    worse = sum(d.direction == "worse" for d in deltas)
    console.print(f"{worse} worse, {sum(d.direction == 'better' for d in deltas)} better")
    return 1 if worse and args.fail_on_worse else 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Analyse bridgestorm run directories: exact percentiles, loss, recovery, thresholds, "
                    "HTML report.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--debug", action="store_true", help="print tracebacks with errors (also BRIDGESTORM_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True, metavar="{report,check,compare,metrics}")

    r = sub.add_parser("report", help="write analysis.json and index.html, print the verdict",
                       description="Analyse a run directory, write analysis.json and a self-contained index.html "
                                   "into it, print the verdict table. Exit 1 when a threshold fails, 3 when none "
                                   "failed but one could not be measured.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("run_dir", type=Path, help="reports/<run-id>")
    r.add_argument("--thresholds", "-t", help="threshold file or shipped set name (default: run.json's, "
                                               "else analysis/thresholds/<scenario>.yaml)")
    r.add_argument("--baseline", "-b", type=Path, help="a baseline run directory (or its analysis.json) to compare with")
    r.add_argument("--out", type=Path, help="write the report here instead of into the run directory")
    r.add_argument("--quiet", "-q", action="store_true", help="no progress display")
    r.set_defaults(func=cmd_report)

    c = sub.add_parser("check", help="evaluate thresholds only (for CI); exit 1 on failure",
                       description="Evaluate thresholds against a run directory without writing a report. "
                                   "Exit 0 pass, 1 fail, 2 bad input or no thresholds, 3 unknown.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("run_dir", type=Path)
    c.add_argument("--thresholds", "-t", help="threshold file or shipped set name")
    c.add_argument("--quiet", "-q", action="store_true")
    c.set_defaults(func=cmd_check)

    m = sub.add_parser("compare", help="what got better or worse between two runs",
                       description="Compare a run with a baseline: latency, throughput and errors per name, loss, "
                                   "recovery per fault, thresholds. Changes under 5 %% are 'same'.")
    m.add_argument("baseline", type=Path)
    m.add_argument("run", type=Path)
    m.add_argument("--all", action="store_true", help="show unchanged numbers too")
    m.add_argument("--fail-on-worse", action="store_true", help="exit 1 when anything got worse")
    m.add_argument("--quiet", "-q", action="store_true")
    m.set_defaults(func=cmd_compare)

    k = sub.add_parser("metrics", help="list the threshold metrics")
    k.set_defaults(func=lambda args, console: list_metrics(console))
    return p


def list_metrics(console: Console) -> int:
    table = Table(title="threshold metrics", title_justify="left")
    for col in ("metric", "unit", "argument", "meaning"):
        table.add_column(col)
    units = {"latency": "ms, s", "duration": "s, ms", "rate": "/s, /min", "percent": "%", "count": "(none)",
             "count_or_percent": "(none) or %"}
    for name, spec in METRICS.items():
        table.add_row(name, units[spec.dimension], spec.argument or "—", spec.help)
    console.print(table)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    console = Console()
    if not console.is_terminal:  # piped or in CI: wide enough that the verdict table does not wrap
        console = Console(width=160)
    err = Console(stderr=True, soft_wrap=True)
    found = input_problems(args)
    if found:
        for line in found:
            err.print(f"[bold red]error:[/] {line}", highlight=False)
        return 2
    debug = args.debug or os.environ.get("BRIDGESTORM_DEBUG", "") not in ("", "0")
    try:
        return int(args.func(args, console))
    except (RunDirError, ThresholdError) as exc:
        if debug:
            traceback.print_exc()
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2
    except Exception as exc:  # noqa: BLE001 - the analysis broke: one line, exit 3
        if debug:
            traceback.print_exc()
        err.print(f"[bold red]error:[/] the analysis failed: {type(exc).__name__}: {exc}", highlight=False)
        return 3


if __name__ == "__main__":
    sys.exit(main())
