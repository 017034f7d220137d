"""The sampler's own cost: CPU of the Locust process with and without it, side by side.

Why: the sampler runs inside the Locust process that owns the run (on its
asyncio bridge), so what it costs is taken from the load it measures. The
same short run (``locustfiles/bridge.py``, a few users, ``-t``) is made with
and without ``--no-sampler`` on one embedded stack, interleaved in pairs so
machine noise hits both alike; the Locust process's CPU (user + system, in %
of one core) is read from outside over the middle of the load (start-up and
the end left out). The load is paced (``--rate``), so both runs make the
same requests and the CPU per request is compared too. The sampler alone (``Sampler.run`` in this process,
against the same stack, no load) is measured too: its cost without Locust's
noise around it.

    .venv/bin/python benchmarks/sampler_cost.py [--seconds 20] [--pairs 3] [--users 5] [--rate 4]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.bridge.adapter import BridgeAdapter  # noqa: E402
from harness.sampler import Sampler  # noqa: E402
from rundir.read import read_folder  # noqa: E402
from stack.embedded import StackOptions, down, up  # noqa: E402

LOCUST = str(Path(sys.executable).with_name("locust"))
WARM_UP_S = 5.0  # Locust's imports and spawning, left out of the window


def locust_cpu(state_path: str, run_dir: Path, seconds: float, users: int, rate: float,
               sampler: bool) -> tuple[float, int]:
    """(CPU % of one core of the Locust process over the middle of the load, requests it made)."""
    cmd = [LOCUST, "-f", str(ROOT / "locustfiles" / "bridge.py"), "--headless", "--stack", "external",
           "--stack-state", state_path, "--run-dir", str(run_dir), "-u", str(users), "-r", str(users),
           "-t", f"{seconds:g}s", "--rate", f"{rate:g}", "--only-summary", "--no-report",
           *([] if sampler else ["--no-sampler"])]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, BRIDGESTORM_STATE=state_path))
    p = psutil.Process(proc.pid)
    time.sleep(WARM_UP_S)
    t0, c0 = time.monotonic(), sum(p.cpu_times()[:2])
    time.sleep(seconds - 2.0)  # Locust's -t counts from the test start, a second or two after launch
    t1, c1 = time.monotonic(), sum(p.cpu_times()[:2])
    if proc.wait(120) != 0:
        raise RuntimeError(f"locust exited with {proc.returncode}: {' '.join(cmd)}")
    samples = read_folder(run_dir, "samples")
    return (c1 - c0) / (t1 - t0) * 100.0, 0 if samples is None else samples.num_rows


def sampler_alone(state_path: str, env: dict[str, str], seconds: float, out: Path) -> float:
    """CPU % of one core this process spends running the sampler alone for ``seconds``."""
    sampler = Sampler(out, BridgeAdapter(), env, state_path)
    started, cpu = time.monotonic(), time.process_time()
    asyncio.run(sampler.run(seconds=seconds))
    return (time.process_time() - cpu) / (time.monotonic() - started) * 100.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each Locust run (-t)")
    parser.add_argument("--pairs", type=int, default=3, help="runs with and without the sampler, interleaved")
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument("--rate", type=float, default=4.0, help="requests/s per user (Locust's --rate)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-sampler-"))
    state_path = str(work / "stack.json")
    print("starting the embedded stack ...", flush=True)
    state = up(StackOptions(state_path=state_path, heartbeat_interval_s=1.0))
    try:
        alone = sampler_alone(state_path, state.env, args.seconds, work / "alone")
        runs: dict[bool, list[tuple[float, int]]] = {True: [], False: []}
        for i in range(args.pairs):
            for with_sampler in (True, False) if i % 2 == 0 else (False, True):
                cpu, requests = locust_cpu(state_path, work / f"run-{i}-{with_sampler}", args.seconds, args.users,
                                           args.rate, with_sampler)
                runs[with_sampler].append((cpu, requests))
                print(f"  pair {i + 1}: {'with' if with_sampler else 'without':7} sampler: {cpu:5.1f} % of a core, "
                      f"{requests:,} requests", flush=True)
    finally:
        down(state_path)
        shutil.rmtree(work, ignore_errors=True)

    with_cpu = statistics.median(c for c, _ in runs[True])
    without_cpu = statistics.median(c for c, _ in runs[False])
    ratios = [w[0] / wo[0] for w, wo in zip(runs[True], runs[False])]
    differences = [w[0] - wo[0] for w, wo in zip(runs[True], runs[False])]
    print()
    print(f"Locust process CPU, % of one core ({args.users} users at {args.rate:g}/s, {args.seconds:g} s runs, "
          f"median of {args.pairs}):")
    print(f"  with the sampler        {with_cpu:6.2f} %")
    print(f"  without (--no-sampler)  {without_cpu:6.2f} %")
    print(f"  ratio with/without      {with_cpu / without_cpu:6.3f}   (per pair {min(ratios):.3f} .. {max(ratios):.3f})")
    print(f"  difference              {statistics.median(differences):+6.2f} points   "
          f"(per pair {min(differences):+.2f} .. {max(differences):+.2f})")
    print(f"  requests per run        {statistics.median(r for _, r in runs[True]):,.0f} with, "
          f"{statistics.median(r for _, r in runs[False]):,.0f} without")
    print(f"the sampler alone (no load, {args.seconds:g} s, this process): {alone:.2f} % of one core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
