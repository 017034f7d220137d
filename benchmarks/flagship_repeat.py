"""`make report` N times in a row: the pass rate of the main job, and every threshold that failed.

    .venv/bin/python benchmarks/flagship_repeat.py 10

One verdict is one sample; a main job that passes honestly passes again.
Each run is the README's first command as a user runs it (a fresh embedded
stack, the flagship scenario, the report), into its own run directory under
``reports/repeat-<time>/``. Prints one line per run (exit code, verdict,
failed thresholds with their measured values) and the pass rate; exits 1
when fewer than ``--need`` runs passed.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCUST = str(ROOT / ".venv" / "bin" / "locust")


def one_run(run_dir: Path) -> tuple[int, str, list[str], float]:
    """(exit code, verdict, failed thresholds, seconds) of one `make report`."""
    started = time.monotonic()
    proc = subprocess.run([LOCUST, "--config", "scenarios/flagship.conf", "--run-dir", str(run_dir)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    took = time.monotonic() - started
    summary = run_dir / "analysis.json"
    if not summary.is_file():
        return proc.returncode, "no report", [(proc.stdout + proc.stderr)[-300:].strip()], took
    analysis = json.loads(summary.read_text())
    failed = [f"{r['text']} = {r['measured_display']} ({r['status']})" for r in analysis["thresholds"]
              if r["status"] != "pass"]
    return proc.returncode, analysis["verdict"], failed, took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=int, nargs="?", default=10, help="how many runs (default %(default)s)")
    ap.add_argument("--need", type=int, default=None, help="runs that must pass (default: 90 %% of them)")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("runs must be 1 or more")
    need = args.need if args.need is not None else -(-9 * args.runs // 10)
    base = ROOT / "reports" / time.strftime("repeat-%Y%m%d-%H%M%S", time.gmtime())
    passed = 0
    for i in range(1, args.runs + 1):
        code, verdict, failed, took = one_run(base / f"run-{i:02d}")
        passed += verdict == "pass" and code == 0
        print(f"run {i:2d}/{args.runs}: exit {code}, {verdict.upper()}, {took:.0f} s"
              + ("" if not failed else ": " + "; ".join(failed)), flush=True)
    print(f"passed {passed} of {args.runs} ({passed / args.runs:.0%}); needed {need}; run directories in {base}")
    return 0 if passed >= need else 1


if __name__ == "__main__":
    sys.exit(main())
