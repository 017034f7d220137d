"""Generated run directories with known answers, written through rundir.write's own writers.

The "chaos run" (make_chaos_run), 60 s from T0:

- ``POST /stamp`` (http): 10 requests a second at T0 + s + i/10, latency 10 + i ms
  (i = 0..9), all ok, except:
  - the fault window, seconds 20-24 (broker-kill started T0+20, healed T0+25):
    every request fails with latency 1000 ms;
  - second 25 (k=0 after the heal): even i ok, odd i fail;
  - second 26 (k=1): all ok but latency 40 + i ms (p95 48.55 > 1.5 x 19);
  - second 27 on: normal again -> recovery time 2 s, first success 0.010 s.
- ``workflow→completed`` (e2e): 2 a second from second 40 to 59, service time
  100 and 300 ms, intended start 50 ms before the actual start.
- ledger/truth: 100 workflows (wf-000..wf-099, tenant-a below 50, tenant-b
  from 50) and 10 stamps; wf-007 lost, wf-020 stored twice, wf-030 stored under
  tenant-b (leak), wf-090 not acknowledged but stored (recovered), wf-091 not
  acknowledged and not stored, wf-010 sent twice (second send acked), wf-999
  stored but never sent (unexpected).
- resources: orchestrator flat at 100 MiB and 5 % CPU, reducer 100 -> 130 MiB
  linearly and 10 + 2 * (second % 10) % CPU (mean 19 %, max 28 %).
- lag: consumer db-adapter, lag_ms = 5 * (second % 10).
- backlog (lag_messages, the sampler's rows at T0 + s + 0.5, ``backlog_rows``):
  before the fault bridge-reducer 2 on even and 8 on odd seconds,
  bridge-database-adapter 1, outbox 0 (total 3 or 9: level max(2 x p95 9,
  floor 10) = 18); seconds 20-24 the broker does not answer (no group rows),
  the outbox grows 50 a second; from the heal reducer 400, 200, 60 then 3,
  db-adapter 100, 50, 20 then 2, outbox 200, 80, 10 then 0 (total 700, 330,
  90, then 5): back at second 28, drain time 3.5 s. The outbox is the
  system's own backlog (source ``system``, the others ``group``): at its
  level (10) from second 27 on, replay time 2.5 s.
- steady state: outside the fault and its recovery (seconds 20-26),
  ``POST /stamp`` p95 is 19 ms (over all samples: 1000 ms).

``write_experiments`` adds experiments.jsonl: one record per status
(``experiment_records``), the first with the broker-kill fault.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rundir.journal import ExperimentJournal, ExperimentRecord, FaultJournal, FaultRecord
from rundir.write import (write_lag, write_ledger, write_observations, write_resources, write_run_info,
                          write_samples, write_truth)

T0 = 1_800_000_000.0
MIB = 2**20
OBSERVATIONS = {"startup_confidence": 0.93, "cache_hit_ratio": 0.5}  # what the system reported


def stamp_samples() -> dict[str, np.ndarray]:
    sec = np.repeat(np.arange(60), 10)
    i = np.tile(np.arange(10), 60)
    ts = T0 + sec + i / 10
    lat = 10.0 + i
    ok = np.ones(600, bool)
    fault = (sec >= 20) & (sec < 25)
    lat[fault] = 1000.0
    ok[fault] = False
    ok[(sec == 25) & (i % 2 == 1)] = False
    slow = sec == 26
    lat[slow] = 40.0 + i[slow]
    n = len(ts)
    return {
        "ts_intended": np.full(n, np.nan),
        "ts_start": ts,
        "type": np.array(["http"] * n, dtype=object),
        "name": np.array(["POST /stamp"] * n, dtype=object),
        "latency_ms": lat,
        "ok": ok,
        "bytes": np.full(n, 128, dtype=np.int64),
        "error": np.where(ok, None, "ConnectionError"),
        "key": np.array([f"s-{k}" for k in range(n)], dtype=object),
        "process": np.array(["host:1"] * n, dtype=object),
    }


def e2e_samples() -> dict[str, np.ndarray]:
    sec = np.repeat(np.arange(40, 60), 2)
    j = np.tile(np.arange(2), 20)
    ts = T0 + sec + 0.25 + j * 0.5
    n = len(ts)
    return {
        "ts_intended": ts - 0.050,
        "ts_start": ts,
        "type": np.array(["e2e"] * n, dtype=object),
        "name": np.array(["workflow→completed"] * n, dtype=object),
        "latency_ms": np.where(j == 0, 100.0, 300.0),
        "ok": np.ones(n, bool),
        "bytes": np.zeros(n, dtype=np.int64),
        "error": np.array([None] * n, dtype=object),
        "key": np.array([f"wf-{k:03d}" for k in range(n)], dtype=object),
        "process": np.array(["host:2"] * n, dtype=object),
    }


def _cols(d: dict[str, np.ndarray]) -> dict[str, list]:
    return {k: [None if isinstance(x, float) and np.isnan(x) else x for x in v.tolist()] for k, v in d.items()}


def ledger_rows() -> list[dict]:
    rows = []
    for k in range(100):
        ns = "tenant-a" if k < 50 else "tenant-b"
        acked = k not in (90, 91)
        if k == 10:
            rows.append(dict(kind="workflow", item_id=f"wf-{k:03d}", namespace=ns, ts_sent=T0 + 1, acked=False,
                             process="host:1"))
        rows.append(dict(kind="workflow", item_id=f"wf-{k:03d}", namespace=ns, ts_sent=T0 + 1 + k * 0.1,
                         acked=acked, process="host:1"))
    for k in range(10):
        rows.append(dict(kind="stamp", item_id=f"st-{k}", namespace="tenant-a", ts_sent=T0 + 2, acked=True,
                         process="host:2"))
    return rows


def truth_rows() -> list[dict]:
    rows = []
    for k in range(100):
        if k in (7, 91):
            continue
        ns = "tenant-a" if k < 50 else "tenant-b"
        if k == 30:
            ns = "tenant-b"
        rows.append(dict(kind="workflow", item_id=f"wf-{k:03d}", namespace=ns, count=2 if k == 20 else 1,
                         source="workflow_executions"))
    rows.append(dict(kind="workflow", item_id="wf-999", namespace="tenant-a", count=1, source="workflow_executions"))
    for k in range(10):
        rows.append(dict(kind="stamp", item_id=f"st-{k}", namespace="tenant-a", count=1, source="metadata_stamps"))
    return rows


def resource_rows() -> dict[str, list]:
    ts = T0 + np.arange(60, dtype=float)
    return {
        "ts": np.concatenate([ts, ts]).tolist(),
        "part": ["orchestrator"] * 60 + ["reducer"] * 60,
        "rss_bytes": [100 * MIB] * 60 + [int(100 * MIB + 30 * MIB * s / 59) for s in range(60)],
        "cpu_percent": [5.0] * 60 + [10.0 + 2 * (s % 10) for s in range(60)],
    }


def lag_rows() -> dict[str, list]:
    secs = np.arange(60)
    return {"ts": (T0 + secs + 0.5).tolist(), "consumer": ["db-adapter"] * 60, "lag_ms": (5.0 * (secs % 10)).tolist(),
            "lag_messages": [None] * 60}


BACKLOG_AFTER_HEAL = {"bridge-reducer": [400, 200, 60], "bridge-database-adapter": [100, 50, 20], "outbox": [200, 80, 10]}
BACKLOG_SETTLED = {"bridge-reducer": 3, "bridge-database-adapter": 2, "outbox": 0}


def backlog_rows(stuck: bool = False, silent_until: int = 25) -> dict[str, list]:
    """The chaos run's backlog (module docstring). ``stuck``: the reducer stays at 400 after the heal;
    ``silent_until``: the broker answers again only from that second (the outbox is 0 before), and the
    after-heal sequence starts there. A group's ``committed`` moves on every second (the stuck reducer's not
    after the heal)."""
    rows: dict[str, list] = {"ts": [], "consumer": [], "lag_ms": [], "lag_messages": [], "source": [], "committed": []}

    def add(sec: int, consumer: str, n: int) -> None:
        rows["ts"].append(T0 + sec + 0.5)
        rows["consumer"].append(consumer)
        rows["lag_ms"].append(None)
        rows["lag_messages"].append(n)
        group = consumer != "outbox"
        rows["source"].append("group" if group else "system")
        # a group's committed offsets move on every second, but a stuck reducer's after the heal
        stuck_here = stuck and consumer == "bridge-reducer" and sec >= silent_until
        rows["committed"].append(None if not group else 10 * (silent_until if stuck_here else sec))

    for sec in range(60):
        if sec < 20:
            add(sec, "bridge-reducer", 2 if sec % 2 == 0 else 8)
            add(sec, "bridge-database-adapter", 1)
            add(sec, "outbox", 0)
        elif sec < 25:
            add(sec, "outbox", 50 * (sec - 19))
        elif sec < silent_until:
            add(sec, "outbox", 0)
        else:
            k = sec - silent_until
            for consumer, values in BACKLOG_AFTER_HEAL.items():
                n = values[k] if k < len(values) else BACKLOG_SETTLED[consumer]
                add(sec, consumer, 400 if stuck and consumer == "bridge-reducer" else n)
    return rows


def journal_entry(**over) -> dict:
    entry = {
        "fault_id": "f1", "name": "broker-kill", "action": "kill", "target": "broker", "target_kind": "process",
        "parameters": {"signal": "SIGKILL"}, "started_at": T0 + 20, "healed_at": T0 + 25, "outcome": "healed",
        "observed": {"down_after_s": 0.01, "answered_after_s": 0.8}, "error": None,
    }
    entry.update(over)
    return entry


def run_info(**over) -> dict:
    info = {
        "run_id": "test-chaos-run", "scenario": "test", "started_at": T0, "ended_at": T0 + 60,
        "arguments": {"users": 10, "spawn_rate": 10, "run_time": "60s"},
        "versions": {"bridgestorm": "0.1.0", "python": "3.11"},
        "stack": {"mode": "embedded", "broker": "127.0.0.1:9092",
                  "database": "postgresql://bridge:hunter2@127.0.0.1:5432/bridge"},
    }
    info.update(over)
    return info


def make_chaos_run(path: Path, with_journal: bool = True, backlog: dict[str, list] | None = None) -> Path:
    """The known-answer run described in this module's docstring (``backlog``: other lag_messages rows)."""
    path.mkdir(parents=True, exist_ok=True)
    # the writer masks passwords itself; write the raw password to prove the report masks it again
    (path / "run.json").write_text(json.dumps(run_info()))
    stamps = _cols(stamp_samples())
    half = {k: v[:300] for k, v in stamps.items()}
    rest = {k: v[300:] for k, v in stamps.items()}
    write_samples(path, half)  # two files, as from two processes
    write_samples(path, rest)
    write_samples(path, _cols(e2e_samples()))
    write_ledger(path, ledger_rows())
    write_truth(path, truth_rows())
    write_resources(path, resource_rows())
    write_lag(path, lag_rows())
    write_lag(path, backlog if backlog is not None else backlog_rows())
    write_observations(path, OBSERVATIONS)
    if with_journal:
        FaultJournal(path).write(FaultRecord(**journal_entry()))
    return path


def experiment_records() -> list[ExperimentRecord]:
    """One experiment record per status, as the chaos runner writes them."""
    ok = [{"name": "broker-answers", "ok": True, "value": True}, {"name": "stamp-health", "ok": True, "value": 200}]
    return [
        ExperimentRecord(title="Broker kill", file="chaos/experiments/broker-kill.yaml", status="completed",
                         started_at=T0 + 15, ended_at=T0 + 30, steady_state_before=ok, steady_state_after=ok,
                         fault_ids=["f1"]),
        ExperimentRecord(title="Registry crash", status="deviated", started_at=T0 + 31, ended_at=T0 + 40,
                         steady_state_before=ok,
                         steady_state_after=[ok[0], {"name": "stamp-health", "ok": False, "value": 503}],
                         deviated=True),
        ExperimentRecord(title="Database partition", status="aborted", started_at=T0 + 41, ended_at=T0 + 41.5,
                         steady_state_before=[{"name": "postgres-answers", "ok": False, "value": False}],
                         error="steady state not met before the method"),
        ExperimentRecord(title="Random monkey", status="interrupted", started_at=T0 + 42, ended_at=T0 + 50,
                         steady_state_before=ok),
    ]


def write_experiments(path: Path) -> Path:
    journal = ExperimentJournal(path)
    for record in experiment_records():
        journal.write(record)
    return path


def make_steady_run(path: Path, latency_ms: float = 10.0, rate: int = 10, seconds: int = 30,
                    name: str = "POST /stamp") -> Path:
    """A plain run: ``rate`` ok requests a second of constant latency (for comparisons)."""
    path.mkdir(parents=True, exist_ok=True)
    write_run_info(path, run_info(run_id=path.name, started_at=T0, ended_at=T0 + seconds))
    n = rate * seconds
    ts = T0 + np.arange(n) / rate
    write_samples(path, {
        "ts_intended": [None] * n, "ts_start": ts.tolist(), "type": ["http"] * n, "name": [name] * n,
        "latency_ms": [latency_ms] * n, "ok": [True] * n, "bytes": [1] * n, "error": [None] * n,
        "key": [None] * n, "process": ["host:1"] * n,
    })
    return path
