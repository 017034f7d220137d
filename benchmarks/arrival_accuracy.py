"""Fixed-rate accuracy of the open model: one Locust process at 500, 1,000 and 2,000 arrivals/s.

    .venv/bin/python benchmarks/arrival_accuracy.py [--seconds 10] [--rates 500,1000,2000]

Against a trivial HTTP server in a process of its own (it answers at once),
so the numbers are the generator's: achieved / offered (arrivals started
over arrivals due), dropped arrivals, and p50 / p99 of how late a request
started after its intended start. Each rate is one headless Locust run of
benchmarks/arrival_locustfile.py with 100 users.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rundir.read import read_folder  # noqa: E402
from stack.processes import free_port, tcp_answers, wait_until  # noqa: E402

LOCUST = str(Path(sys.executable).with_name("locust"))


def serve(port: int) -> None:
    from aiohttp import web

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


@contextmanager
def http_target() -> Iterator[str]:
    """The trivial server in a process of its own, on a free port: its URL while the block runs."""
    port = free_port()
    server = multiprocessing.Process(target=serve, args=(port,), daemon=True)
    server.start()
    try:
        if not wait_until(lambda: tcp_answers("127.0.0.1", port), 10):
            raise RuntimeError("the trivial server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.join(10)


def measure(rate: int, seconds: float, url: str) -> dict[str, float]:
    run_dir = Path(tempfile.mkdtemp(prefix="bench-arrivals-"))
    env = dict(os.environ, TARGET_URL=url)
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    cmd = [LOCUST, "-f", str(ROOT / "benchmarks" / "arrival_locustfile.py"), "--headless", "--stack", "external",
           "--stack-state", str(run_dir / "none.json"), "-u", "100", "-r", "100", "-t", f"{seconds:g}s",
           "--rate", str(rate), "--run-dir", str(run_dir), "--no-report", "--only-summary"]
    subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=seconds + 120, check=False)
    s = read_folder(run_dir, "samples").to_pandas()
    s = s[s["ts_intended"].notna()]
    # whole seconds after the ramp-up and before the stop: arrivals due there, and what became of them
    t0 = s["ts_intended"].min()
    window = s[(s["ts_intended"] >= t0 + 2) & (s["ts_intended"] < t0 + seconds - 1)]
    span = seconds - 3
    started = window[window["type"] != "dropped"]
    late_ms = (started["ts_start"] - started["ts_intended"]) * 1000.0
    return {"offered": len(window) / span, "achieved": len(started) / span,
            "dropped": float((window["type"] == "dropped").sum()),
            "late_p50": float(np.percentile(late_ms, 50)) if len(late_ms) else float("nan"),
            "late_p99": float(np.percentile(late_ms, 99)) if len(late_ms) else float("nan")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rates", default="500,1000,2000")
    args = ap.parse_args()
    with http_target() as url:
        print(f"{'rate /s':>8} {'offered /s':>11} {'achieved /s':>12} {'achieved/offered':>17} {'dropped':>8} "
              f"{'late p50 ms':>12} {'late p99 ms':>12}")
        for rate in (int(r) for r in args.rates.split(",")):
            m = measure(rate, args.seconds, url)
            print(f"{rate:>8} {m['offered']:>11.0f} {m['achieved']:>12.0f} {m['achieved'] / rate:>17.3f} "
                  f"{m['dropped']:>8.0f} {m['late_p50']:>12.2f} {m['late_p99']:>12.2f}", flush=True)
            time.sleep(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
