"""Analysis speed: N generated samples (default 10 million) to a finished report.

Targets (issue 5): under 60 s, under 4 GiB peak memory, and within 3x the
time pandas alone needs to read and group the same samples.

Both sides run as fresh processes (``python -m analysis report`` and a
pandas-only script), timed from the outside and measured for peak RSS with
wait4, so interpreter start and imports count on both sides. The pandas side
reads the same columns the analysis reads and computes per-name count, mean
and p50/p90/p95/p99/p99.9, and per (name, second) p50/p95/p99.

    python benchmarks/analysis_speed.py [--samples 10000000] [--dir /tmp/bridgestorm-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rundir.journal import FaultJournal, FaultRecord  # noqa: E402
from rundir.write import write_lag, write_ledger, write_resources, write_run_info, write_samples, write_truth  # noqa: E402

T0 = 1_800_000_000.0
RATE = 10_000  # samples per second -> 10M samples = 1000 s of load
FILES = 10  # as from 10 Locust processes
NAMES = [  # (type, name, share, median latency ms, has intended start)
    ("kafka", "NODE_INTROSPECTION", 0.30, 3.0, True),
    ("kafka", "NODE_HEARTBEAT", 0.10, 2.0, True),
    ("http", "POST /stamp", 0.20, 6.0, False),
    ("http", "GET /stamp/{hash}", 0.15, 2.0, False),
    ("http", "POST /workflows", 0.08, 20.0, False),
    ("e2e", "introspection→registered", 0.07, 40.0, False),
    ("e2e", "workflow→completed", 0.06, 150.0, False),
    ("e2e", "stamp→logged", 0.04, 30.0, False),
]
PANDAS_SCRIPT = """
import sys, pandas as pd, numpy as np
cols = ["ts_intended", "ts_start", "type", "name", "latency_ms", "ok", "bytes", "error", "process"]
df = pd.read_parquet(sys.argv[1], columns=cols)
g = df.groupby("name", observed=True)["latency_ms"]
per_name = g.agg(["count", "mean"]).join(g.quantile([0.5, 0.9, 0.95, 0.99, 0.999]).unstack())
df["sec"] = np.floor(df["ts_start"] - df["ts_start"].min()).astype("int64")
per_sec = df.groupby(["name", "sec"], observed=True)["latency_ms"].quantile([0.5, 0.95, 0.99]).unstack()
print(len(per_name), len(per_sec))
"""
THRESHOLDS = """\
- p95(workflow→completed) < 400ms
- p99(introspection→registered) < 250ms
- throughput(POST /stamp) > 1000/s
- errors(http) < 1%
- lost == 0
- duplicated < 0.1%
- recovery(broker-kill) < 2s
- degradation < 50%
"""


def generate(run_dir: Path, n: int, seed: int = 1) -> None:
    """A run directory with n samples, a ledger/truth of n/10 items, two faults, lag and resources."""
    rng = np.random.default_rng(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    seconds = n / RATE
    shares = np.array([x[2] for x in NAMES])
    per_file = n // FILES
    for f in range(FILES):
        m = per_file if f < FILES - 1 else n - per_file * (FILES - 1)
        idx = rng.choice(len(NAMES), m, p=shares / shares.sum())
        ts = T0 + np.sort(rng.uniform(0, seconds, m))
        median = np.array([x[3] for x in NAMES])[idx]
        lat = median * rng.lognormal(0, 0.5, m)
        ok = rng.random(m) > 0.002
        # the broker kill at 40 %..41 % of the run: kafka and e2e fail
        kill = (ts >= T0 + 0.4 * seconds) & (ts < T0 + 0.4 * seconds + 5) & np.isin(idx, [0, 1, 5, 6, 7])
        ok &= ~kill
        intended = np.where(np.array([x[4] for x in NAMES])[idx], ts - rng.exponential(0.001, m), np.nan)
        names = pa.DictionaryArray.from_arrays(pa.array(idx.astype("int32")), pa.array([x[1] for x in NAMES]))
        types = pa.DictionaryArray.from_arrays(pa.array(idx.astype("int32")), pa.array([x[0] for x in NAMES]))
        keys = pc.binary_join_element_wise("evt-", pc.cast(pa.array(np.arange(m) + f * per_file), pa.string()), "")
        table = pa.table({
            "ts_intended": pa.array(intended, from_pandas=True),
            "ts_start": ts,
            "type": types.cast(pa.string()),
            "name": names.cast(pa.string()),
            "latency_ms": lat,
            "ok": ok,
            "bytes": rng.integers(100, 2000, m),
            "error": pa.array(np.where(ok, None, "KafkaConnectionError"), pa.string()),
            "key": keys,
            "process": pa.array([f"bench:{1000 + f}"] * m),
        })
        write_samples(run_dir, table)
    items = n // 10
    ids = pc.binary_join_element_wise("wf-", pc.cast(pa.array(np.arange(items)), pa.string()), "")
    ns = pa.array(np.where(np.arange(items) % 2 == 0, "tenant-a", "tenant-b"))
    write_ledger(run_dir, pa.table({"kind": pa.array(["workflow"] * items), "item_id": ids, "namespace": ns,
                                           "ts_sent": T0 + np.linspace(0, seconds, items), "acked": np.ones(items, bool),
                                           "process": pa.array(["bench:1000"] * items)}))
    write_truth(run_dir, pa.table({"kind": pa.array(["workflow"] * items), "item_id": ids, "namespace": ns,
                                          "count": np.ones(items, "int64"),
                                          "source": pa.array(["workflow_executions"] * items)}))
    secs = np.arange(int(seconds))
    write_lag(run_dir, {"ts": (T0 + secs).tolist(), "consumer": ["db-adapter"] * len(secs),
                               "lag_ms": rng.uniform(5, 50, len(secs)).tolist(), "lag_messages": [None] * len(secs)})
    write_resources(run_dir, {"ts": (T0 + secs).tolist(), "part": ["reducer"] * len(secs),
                                     "rss_bytes": [200 * 2**20] * len(secs), "cpu_percent": [30.0] * len(secs)})
    for i, (name, at) in enumerate((("broker-kill", 0.4), ("broker-latency", 0.7))):
        FaultJournal(run_dir).write(FaultRecord(
            fault_id=f"f{i}", name=name, action=name.split("-")[1], target="broker", target_kind="process",
            parameters={}, started_at=T0 + at * seconds, healed_at=T0 + at * seconds + 5, outcome="healed",
            observed={}))
    write_run_info(run_dir, {"run_id": run_dir.name, "scenario": "benchmark", "started_at": T0,
                                    "ended_at": T0 + seconds, "arguments": {"samples": n},
                                    "stack": {"database": "postgresql://bench:secret@127.0.0.1/bench"}})
    (run_dir / ".generated").write_text(str(n))


def measure(cmd: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MiB, exit code) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    return wall, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=10_000_000)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/bridgestorm-bench"))
    args = ap.parse_args()
    run_dir = args.dir / f"run-{args.samples}"
    marker = run_dir / ".generated"
    if not (marker.is_file() and marker.read_text() == str(args.samples)):
        print(f"generating {args.samples:,} samples into {run_dir} ...", flush=True)
        t = time.perf_counter()
        generate(run_dir, args.samples)
        print(f"  generated in {time.perf_counter() - t:.1f} s (not counted)", flush=True)
    out = args.dir / "report"
    thresholds = args.dir / "thresholds.yaml"
    thresholds.write_text(THRESHOLDS)

    py = sys.executable
    pandas_s, pandas_mib, rc1 = measure([py, "-c", PANDAS_SCRIPT, str(run_dir / "samples")])
    report_s, report_mib, rc2 = measure([py, "-m", "analysis", "report", str(run_dir), "-q", "-t", str(thresholds),
                                         "--out", str(out)])
    if rc1 != 0 or rc2 not in (0, 1):  # 1 = a threshold failed, which is a finished report
        print(f"a step failed: pandas exit {rc1}, report exit {rc2}")
        return 2
    summary = json.loads((out / "analysis.json").read_text())
    assert summary["counts"]["samples"] == args.samples
    ratio = report_s / pandas_s
    rows = [
        ("pandas alone: read + group", f"{pandas_s:.1f} s", f"{pandas_mib:,.0f} MiB", "", ""),
        ("analysis report (finished)", f"{report_s:.1f} s", f"{report_mib:,.0f} MiB", "< 60 s, < 4096 MiB",
         "ok" if report_s < 60 and report_mib < 4096 else "MISSED"),
        ("ratio report / pandas", f"{ratio:.2f}x", "", "< 3x", "ok" if ratio < 3 else "MISSED"),
    ]
    print(f"\n{args.samples:,} samples, {os.cpu_count()} cores; report: {out / 'index.html'}")
    widths = [max(len(r[i]) for r in rows + [("step", "time", "peak memory", "target", "")]) for i in range(5)]
    for r in [("step", "time", "peak memory", "target", ""), *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    ok = report_s < 60 and report_mib < 4096 and ratio < 3
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
