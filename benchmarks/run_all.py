"""All of bridgestorm's side-by-side comparisons in one command, one table.

Each row is a ratio measured in this run, on this machine, against an
independent peer doing the same work: Kafka publishes of one Locust process
against plain aiokafka (and `kcat`, librdkafka, when installed); the CPU
one Locust process spends per HTTP request and per acknowledged publish at
a fixed rate against plain aiohttp and plain aiokafka; stamping over HTTP
from Locust against `wrk` (when installed); our Toxiproxy server
against a direct connection; the analysis against pandas alone. The chaos
rows hold fault inject and heal times against their 100 ms target instead
of a peer. The detailed scripts beside this file measure more (and
longer); this is the summary.

    .venv/bin/python benchmarks/run_all.py [--seconds 6] [--samples 1000000]
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import analysis_speed  # noqa: E402
import chaos_timings  # noqa: E402
import generator_cost  # noqa: E402
import kafka_publish  # noqa: E402
import proxy_overhead  # noqa: E402

console = Console(width=None if sys.stdout.isatty() else 120)  # a wide table in logs too
Row = tuple[str, str, str, str]  # measure, ours, peer, ratio


def kafka_rows(seconds: float) -> list[Row]:
    from stack.broker import start_broker_process
    from stack.processes import free_port, stop_process

    stack_dir = Path(tempfile.mkdtemp(prefix="bench-broker-"))
    (stack_dir / "logs").mkdir()
    broker = start_broker_process(stack_dir, free_port())
    try:
        bootstrap = broker.address
        kafka_publish.ensure_topic(bootstrap)
        plain = kafka_publish.variant("plain", bootstrap, seconds, 50)["acks_per_s"]
        locust = kafka_publish.variant("locust", bootstrap, seconds, 50)["acks_per_s"]
        rows = [("Kafka publishes/s: one Locust process vs plain aiokafka (50 in flight)",
                 f"{locust:,}", f"{plain:,}", f"{locust / plain:.2f}")]
        kcat = shutil.which("kcat")
        if kcat:
            count = 200_000
            data = stack_dir / "messages.txt"
            data.write_text(("x" * 100 + "\n") * count)
            start = time.perf_counter()
            done = subprocess.run([kcat, "-P", "-b", bootstrap, "-t", kafka_publish.TOPIC, "-X", "acks=all",
                                   "-l", str(data)], capture_output=True, text=True, timeout=300)
            if done.returncode == 0:
                kcat_rate = int(count / (time.perf_counter() - start))
                rows.append(("Kafka publishes/s: one Locust process vs kcat (librdkafka)",
                             f"{locust:,}", f"{kcat_rate:,}", f"{locust / kcat_rate:.2f}"))
            else:  # librdkafka's ApiVersions handshake fails against Tansu 0.6 ("Read underflow")
                error = next((line for line in done.stderr.splitlines() if "ERROR" in line), done.stderr[-200:])
                rows.append(("Kafka publishes/s vs kcat", "—", f"kcat failed: {error[:120]}", "—"))
        else:
            rows.append(("Kafka publishes/s vs kcat", "—", "kcat not installed (apt-get install kcat)", "—"))
        return rows
    finally:
        stop_process(broker)
        shutil.rmtree(stack_dir, ignore_errors=True)


def generator_rows(seconds: float, rate: float = 200.0, users: int = 100) -> list[Row]:
    """One pair per kind of benchmarks/generator_cost.py (which runs three, and says more)."""
    seconds = max(seconds, 8.0)  # its steady window leaves out the first 3 s and the last 1 s
    rows: list[Row] = []
    for kind, (work, peer, target) in generator_cost.KINDS.items():
        with target() as address:
            r = generator_cost.summary(generator_cost.compare(kind, address, rate, seconds, users, 1))
        rows.append((f"CPU µs per {work} at {rate:g}/s: one Locust process vs {peer} (goal ≤ {generator_cost.GOAL:g}×)",
                     f"{r['locust_median']:.0f}", f"{r['plain_median']:.0f}", f"{r['ratio']:.2f}"))
    return rows


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, "/stamp", nil, '{"namespace": "wrk", "content": "wrk ' .. counter .. ' ' .. math.random() .. '"}')
end
"""


def stamping_rows(seconds: float) -> list[Row]:
    from stack.embedded import StackOptions, down, up

    state_path = str(Path(tempfile.mkdtemp(prefix="bench-stamp-")) / "stack.json")
    state = up(StackOptions(state_path=state_path, nodes=["stamping"], proxies=False))
    try:
        run_dir = Path(tempfile.mkdtemp(prefix="bench-stamp-run-"))
        subprocess.run([str(Path(sys.executable).with_name("locust")), "-f", "locustfiles/stamping.py", "--headless",
                        "-u", "20", "-r", "20", "-t", f"{seconds:.0f}s", "--stack", "external", "--stack-state",
                        state_path, "--run-dir", str(run_dir), "--no-report", "--only-summary",
                        "--csv", str(run_dir / "stats")],
                       cwd=ROOT, capture_output=True, text=True, timeout=seconds * 4 + 120)
        locust_rate = 0.0
        with open(run_dir / "stats_stats.csv") as f:
            for row in csv.DictReader(f):
                if row["Name"] == "POST /stamp":
                    locust_rate = float(row["Requests/s"])
        wrk = shutil.which("wrk")
        if not wrk:
            return [("POST /stamp per s: Locust (20 users) vs wrk", f"{locust_rate:,.0f}",
                     "wrk not installed (apt-get install wrk)", "—")]
        script = run_dir / "stamp.lua"
        script.write_text(WRK_SCRIPT)
        out = subprocess.run([wrk, "-t1", "-c20", f"-d{seconds:.0f}s", "-s", str(script), state.env["STAMPING_URL"]],
                             capture_output=True, text=True, timeout=seconds * 4 + 60).stdout
        wrk_rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        return [("POST /stamp per s: Locust (20 users) vs wrk (20 connections)", f"{locust_rate:,.0f}",
                 f"{wrk_rate:,.0f}", f"{locust_rate / wrk_rate:.2f}")]
    finally:
        down(state_path)


def proxy_rows() -> list[Row]:
    r = proxy_overhead.measure(5000, 128, 64, 5)
    return [
        ("round trip p99 (ms): through our Toxiproxy server vs direct", f"{r['proxy']['p99_ms']:.3f}",
         f"{r['direct']['p99_ms']:.3f}", f"+{r['added_p99_ms']:.3f} ms"),
        ("bulk MB/s: through our Toxiproxy server vs direct", f"{r['proxy']['mb_per_s']:,.0f}",
         f"{r['direct']['mb_per_s']:,.0f}", f"{r['throughput_ratio']:.2f}"),
    ]


def chaos_rows(repeats: int = 10) -> list[Row]:
    rows, skipped = chaos_timings.measure(repeats)
    out = [(f"fault inject / heal ms, median (max) of {r['repeats']}: {r['fault']} "
            f"({chaos_timings.ACTIONS[r['fault']]})",
            f"{r['inject_ms_median']:.1f} ({r['inject_ms_max']:.1f}) / {r['heal_ms_median']:.1f} ({r['heal_ms_max']:.1f})",
            "target < 100", f"{max(r['inject_ms_max'], r['heal_ms_max']) / chaos_timings.TARGET_MS:.2f}")
           for r in rows]
    if skipped:
        out.append(("fault inject / heal ms: container pause", "—", f"skipped: {skipped}", "—"))
    return out


def analysis_rows(samples: int) -> list[Row]:
    work = Path(tempfile.mkdtemp(prefix="bench-analysis-"))
    run_dir = work / "run"
    analysis_speed.generate(run_dir, samples)
    thresholds = work / "thresholds.yaml"
    thresholds.write_text(analysis_speed.THRESHOLDS)
    py = sys.executable
    pandas_s, _, _ = analysis_speed.measure([py, "-c", analysis_speed.PANDAS_SCRIPT, str(run_dir / "samples")])
    report_s, report_mib, _ = analysis_speed.measure(
        [py, "-m", "analysis", "report", str(run_dir), "-q", "-t", str(thresholds), "--out", str(work / "report")])
    shutil.rmtree(work, ignore_errors=True)
    return [(f"{samples:,} samples → report (s) vs pandas alone read + group", f"{report_s:.1f}",
             f"{pandas_s:.1f}", f"{report_s / pandas_s:.2f}")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each load measurement")
    parser.add_argument("--samples", type=int, default=1_000_000, help="samples for the analysis comparison")
    args = parser.parse_args()
    rows: list[Row] = []
    for title, step in (("Kafka publish", lambda: kafka_rows(args.seconds)),
                        ("generator cost", lambda: generator_rows(args.seconds)),
                        ("HTTP stamping", lambda: stamping_rows(args.seconds)),
                        ("proxy overhead", proxy_rows),
                        ("chaos inject and heal", chaos_rows),
                        ("analysis speed", lambda: analysis_rows(args.samples))):
        console.print(f"[dim]• {title}[/dim]")
        try:
            rows += step()
        except Exception as exc:  # one failed comparison must not hide the others
            rows.append((title, "failed", repr(exc)[:80], "—"))
    table = Table(title="bridgestorm benchmarks: ours vs an independent peer, measured side by side in this run")
    for col in ("measure", "ours", "peer", "ratio"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    (ROOT / "reports").mkdir(exist_ok=True)
    (ROOT / "reports" / "benchmarks.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
