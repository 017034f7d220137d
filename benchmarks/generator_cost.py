"""Generator cost: CPU µs per HTTP request and per acknowledged Kafka publish, one Locust process vs plain asyncio.

Why: the load generator shares this 2-core machine with the system under
test, so every CPU microsecond it spends per request is taken from what it
measures. Issue 10's goal: a Locust process of ours costs at most 1.5× a
plain client doing the same fixed-rate work (plain aiohttp for HTTP, plain
aiokafka ``send_and_wait`` for Kafka).

How: the same arrival rate (``--rate``, for ``--seconds``) is offered
(a) by a headless Locust process on our real code path — the open model
(``--rate``, harness/arrivals.py) with ``RunMixin`` / ``KafkaUser``
(harness/users.py), the run's raw samples and ledger, ``--no-report
--no-sampler`` so only the generator runs — with
benchmarks/arrival_locustfile.py (GET) and benchmarks/publish_locustfile.py
(heartbeat events, acks=all); and (b) by a plain asyncio script in its own
process that starts one request (one ``send_and_wait``) per arrival. The
parent polls each generator's CPU (psutil user + system, its children too)
from outside; the cost is that CPU over the steady middle of the run
(start-up, spawning and shutdown left out) divided by the requests that
completed in that window. The whole process's CPU over all its requests is
printed too (it includes Python's and Locust's start-up). The Locust Kafka
process also runs the bus's result observer (harness/kafka.py), as every
run does: a cost per second, not per publish, so it weighs more at low rates.

The targets are the cheapest real ones, each in a process of its own, so
the generators' CPU is not confused with the target's and little of the two
cores is taken from them: the trivial aiohttp server of
benchmarks/arrival_accuracy.py (answers at once), and the embedded stack's
broker alone (stack/broker.py, Tansu; no nodes consuming). Locust and plain
runs alternate in pairs (A/B, then B/A) because the machine is noisy; the
ratios are printed, never asserted.

    .venv/bin/python benchmarks/generator_cost.py [--rate 200] [--seconds 10] [--pairs 3] [--users 100]
                                                  [--only http|kafka]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import psutil
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from arrival_accuracy import http_target  # noqa: E402  (the trivial HTTP server, in a process of its own)
from kafka_publish import ensure_topic  # noqa: E402
from rundir.read import read_folder  # noqa: E402
from stack.processes import free_port  # noqa: E402

LOCUST = str(Path(sys.executable).with_name("locust"))
LOCUSTFILES = {"http": ROOT / "benchmarks" / "arrival_locustfile.py",
               "kafka": ROOT / "benchmarks" / "publish_locustfile.py"}
PLAIN = ROOT / "benchmarks" / "plain_generators.py"
HEAD_S = 3.0  # after the first completion: spawning (Locust ramps its users up over a second or two), connections
TAIL_S = 1.0  # before the last completion: the stop
POLL_S = 0.1
GOAL = 1.5
console = Console(width=None if sys.stdout.isatty() else 120)


# ---------------------------------------------------------------- measuring a generator from outside

def cpu_seconds(p: psutil.Process) -> float:
    """User + system CPU of a process and its living children."""
    total = sum(p.cpu_times()[:2])
    for c in p.children(recursive=True):
        try:
            total += sum(c.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


def watch(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[list[tuple[float, float]], str]:
    """Run ``cmd`` to its end; the (wall time, CPU seconds) it had every POLL_S, and its stdout."""
    out = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.DEVNULL)
    p = psutil.Process(proc.pid)
    trace: list[tuple[float, float]] = [(time.time(), 0.0)]
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"did not end within {timeout:.0f} s: {' '.join(cmd)}")
        try:
            trace.append((time.time(), cpu_seconds(p)))
        except psutil.NoSuchProcess:
            break
        time.sleep(POLL_S)
    if proc.wait() != 0:
        raise RuntimeError(f"exited with {proc.returncode}: {' '.join(cmd)}")
    out.seek(0)
    return trace, out.read()


def cost(trace: list[tuple[float, float]], completions: np.ndarray) -> dict[str, float]:
    """CPU µs per completed request over the steady window, the rate achieved there, and the whole process's µs."""
    completions = np.sort(completions)
    t0, t1 = completions[0] + HEAD_S, completions[-1] - TAIL_S
    times, cpus = np.array([t for t, _ in trace]), np.array([c for _, c in trace])
    cpu = float(np.interp(t1, times, cpus) - np.interp(t0, times, cpus))
    count = int(((completions >= t0) & (completions < t1)).sum())
    return {"us_per_request": cpu / count * 1e6, "achieved_per_s": count / (t1 - t0), "requests": len(completions),
            "whole_us_per_request": cpus[-1] / len(completions) * 1e6}


def run_locust(kind: str, target: str, rate: float, seconds: float, users: int) -> dict[str, float]:
    run_dir = Path(tempfile.mkdtemp(prefix=f"bench-gencost-{kind}-"))
    env = dict(os.environ)
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    env.pop("BRIDGESTORM_STATE", None)
    env["TARGET_URL" if kind == "http" else "KAFKA_BOOTSTRAP_SERVERS"] = target
    cmd = [LOCUST, "-f", str(LOCUSTFILES[kind]), "--headless", "--stack", "external",
           "--stack-state", str(run_dir / "none.json"), "-u", str(users), "-r", str(users), "-t", f"{seconds:g}s",
           "--rate", f"{rate:g}", "--run-dir", str(run_dir), "--no-report", "--no-sampler", "--only-summary"]
    try:
        trace, _ = watch(cmd, env, seconds + 120)
        s = read_folder(run_dir, "samples").to_pandas()
        answered = s[s["type"] != "dropped"]
        m = cost(trace, (answered["ts_start"] + answered["latency_ms"] / 1000.0).to_numpy())
        m["errors"] = int((~answered["ok"]).sum())
        m["dropped"] = int((s["type"] == "dropped").sum())
        return m
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def run_plain(kind: str, target: str, rate: float, seconds: float, users: int) -> dict[str, float]:
    cmd = [sys.executable, str(PLAIN), kind, target, f"{rate:g}", f"{seconds:g}", str(users)]
    trace, stdout = watch(cmd, dict(os.environ), seconds + 120)
    result = next(json.loads(line[7:]) for line in stdout.splitlines() if line.startswith("RESULT "))
    m = cost(trace, np.array(result["completions"]))
    m["errors"], m["dropped"] = result["errors"], 0
    return m


def compare(kind: str, target: str, rate: float, seconds: float, users: int, pairs: int,
            progress=lambda line: None) -> dict[str, list[dict[str, float]]]:
    """``pairs`` Locust and plain runs of one kind, alternating which goes first."""
    runs: dict[str, list[dict[str, float]]] = {"locust": [], "plain": []}
    for i in range(pairs):
        for variant in ("locust", "plain") if i % 2 == 0 else ("plain", "locust"):
            m = (run_locust if variant == "locust" else run_plain)(kind, target, rate, seconds, users)
            runs[variant].append(m)
            progress(f"  {kind} pair {i + 1}: {variant:6} {m['us_per_request']:7.0f} µs/request, "
                     f"{m['achieved_per_s']:.0f}/s achieved, {m['errors']} errors, {m['dropped']} dropped")
            time.sleep(0.5)
    return runs


@contextmanager
def kafka_target() -> Iterator[str]:
    """The embedded stack's broker alone, with the benchmark's topic and the result topics the observer reads."""
    from stack.broker import start_broker_process
    from stack.processes import stop_process

    stack_dir = Path(tempfile.mkdtemp(prefix="bench-gencost-broker-"))
    (stack_dir / "logs").mkdir()
    broker = start_broker_process(stack_dir, free_port())
    try:
        ensure_topic(broker.address)
        yield broker.address
    finally:
        stop_process(broker)
        shutil.rmtree(stack_dir, ignore_errors=True)


KINDS = {"http": ("HTTP GET", "plain aiohttp", http_target),
         "kafka": ("acknowledged publish", "plain aiokafka", kafka_target)}  # kind: (work, peer, target)


def summary(runs: dict[str, list[dict[str, float]]]) -> dict[str, float]:
    """Median and min µs/request of each variant, the median ratio and the per-pair ratios' range."""
    ratios = [lo["us_per_request"] / pl["us_per_request"] for lo, pl in zip(runs["locust"], runs["plain"])]
    out = {"ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)}
    for variant, ms in runs.items():
        out[f"{variant}_median"] = statistics.median(m["us_per_request"] for m in ms)
        out[f"{variant}_min"] = min(m["us_per_request"] for m in ms)
        out[f"{variant}_whole"] = statistics.median(m["whole_us_per_request"] for m in ms)
        out[f"{variant}_achieved"] = statistics.median(m["achieved_per_s"] for m in ms)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="arrivals per second offered by each generator")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    parser.add_argument("--pairs", type=int, default=3, help="Locust and plain runs per kind, alternated")
    parser.add_argument("--users", type=int, default=100, help="Locust users (the plain HTTP client's connections)")
    parser.add_argument("--only", choices=["http", "kafka"], help="measure one kind only")
    args = parser.parse_args()
    if args.rate <= 0 or args.seconds <= HEAD_S + TAIL_S + 1:
        parser.error(f"--rate must be > 0 and --seconds > {HEAD_S + TAIL_S + 1:g}")

    results: dict[str, dict[str, float]] = {}
    for kind, (_, peer, target) in KINDS.items():
        if args.only and kind != args.only:
            continue
        console.print(f"[dim]• {kind}: Locust vs {peer}, {args.rate:g}/s for {args.seconds:g} s, "
                      f"{args.pairs} pairs[/dim]")
        with target() as address:
            results[kind] = summary(compare(kind, address, args.rate, args.seconds, args.users, args.pairs,
                                            progress=console.print))

    table = Table(title=f"Generator CPU per request at {args.rate:g}/s: one Locust process vs a plain client "
                        f"(median of {args.pairs} pairs; goal ≤ {GOAL:g}×)")
    for col in ("work", "Locust µs/req (min)", "plain µs/req (min)", "Locust / plain: median of pairs (range)", "achieved /s L / p",
                "whole process µs/req L / p"):
        table.add_column(col)
    for kind, r in results.items():
        work, peer, _ = KINDS[kind]
        table.add_row(f"{work}: Locust vs {peer}", f"{r['locust_median']:.0f} ({r['locust_min']:.0f})",
                      f"{r['plain_median']:.0f} ({r['plain_min']:.0f})",
                      f"{r['ratio']:.2f} ({r['ratio_min']:.2f} .. {r['ratio_max']:.2f})"
                      + ("" if r["ratio"] <= GOAL else "  over the goal"),
                      f"{r['locust_achieved']:.0f} / {r['plain_achieved']:.0f}",
                      f"{r['locust_whole']:.0f} / {r['plain_whole']:.0f}")
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
