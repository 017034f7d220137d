"""Recovery after faults, bursts, sustained degradation and memory growth, with known answers."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import rungen

from rundir.schema import SAMPLES_SCHEMA

from rundir.write import write_run_info, write_samples
from analysis.analyse import Analysis, analyse

T0 = rungen.T0


def test_known_recovery(chaos_analysis: Analysis) -> None:
    f = chaos_analysis.faults.iloc[0]
    assert f["name"] == "broker-kill" and f["duration_s"] == 5.0 and f["start_s"] == 20.0
    assert f["baseline_p95"] == pytest.approx(19.0)  # 200 samples of 10..19 ms before the fault
    assert f["during_error_rate"] == 100.0 and f["during_count"] == 50 and f["during_p95"] == 1000.0
    # k=0 half failed, k=1 all ok but p95 48.55 > 1.5 x 19, k=2.. good for 3 s and more
    assert f["recovery_s"] == 2.0 and bool(f["recovered"])
    assert f["first_success_s"] == pytest.approx(0.010, abs=1e-6)


def _run_with_journal(chaos_run: Path, tmp_path: Path, *entries: dict) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(chaos_run, run_dir)
    (run_dir / "chaos.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    return run_dir


def test_unhealed_fault_never_recovers(chaos_run: Path, tmp_path: Path) -> None:
    run_dir = _run_with_journal(chaos_run, tmp_path, rungen.journal_entry(healed_at=None, outcome="not-healed"))
    f = analyse(run_dir).faults.iloc[0]
    assert not f["recovered"] and math.isnan(f["recovery_s"]) and f["note"] == "never healed"


def test_next_fault_bounds_the_recovery(chaos_run: Path, tmp_path: Path) -> None:
    # a second fault starting 1.5 s after the first heal: no 3 good seconds fit in between
    run_dir = _run_with_journal(
        chaos_run, tmp_path, rungen.journal_entry(),
        rungen.journal_entry(fault_id="f2", name="broker-pause", action="pause", started_at=T0 + 26.5,
                             healed_at=T0 + 27.0))
    faults = analyse(run_dir).faults
    first, second = faults.iloc[0], faults.iloc[1]
    assert not first["recovered"] and "next fault" in first["note"]
    # the second fault's baseline does not reach back into the first fault's window
    assert second["baseline_count"] == 15  # T0+25 .. T0+26.5
    assert second["recovered"]


def test_journal_burst_back_to_baseline(chaos_run: Path, tmp_path: Path) -> None:
    run_dir = _run_with_journal(chaos_run, tmp_path, rungen.journal_entry(
        fault_id="b1", name="burst", action="burst", target="load", started_at=T0 + 20, healed_at=T0 + 25))
    a = analyse(run_dir)
    assert a.faults.empty  # a burst is not a fault
    b = a.bursts.iloc[0]
    assert b["source"] == "journal" and b["back_to_baseline_s"] == 2.0


def test_detected_burst(tmp_path: Path) -> None:
    # 10/s steady at 5 ms, 200 requests in second 10 (at 50 ms), 10/s again at 5 ms from second 11
    rows = {k: [] for k in SAMPLES_SCHEMA.names if k != "ts_ready"}  # a column a writer may leave out
    def add(ts: float, lat: float) -> None:
        for k, v in dict(ts_intended=None, ts_start=ts, type="kafka", name="NODE_INTROSPECTION", latency_ms=lat,
                         ok=True, bytes=1, error=None, key=None, process="p").items():
            rows[k].append(v)
    for s in range(30):
        n, lat = (200, 50.0) if s == 10 else (10, 5.0)
        for i in range(n):
            add(T0 + s + i / n, lat if not (s == 11 and i < 5) else 40.0)
    write_samples(tmp_path, rows)
    write_run_info(tmp_path, rungen.run_info(started_at=T0))
    b = analyse(tmp_path).bursts
    assert len(b) == 1 and b.iloc[0]["source"] == "detected"
    assert (b.iloc[0]["start_s"], b.iloc[0]["end_s"]) == (10.0, 11.0)
    assert b.iloc[0]["back_to_baseline_s"] == 1.0  # second 11 has p95 40 ms > 1.5 x 5 ms


def test_sustained_degradation(chaos_analysis: Analysis) -> None:
    d = chaos_analysis.degradation
    stamp = rungen.stamp_samples()
    e2e = rungen.e2e_samples()
    last = np.concatenate([stamp["latency_ms"][stamp["ts_start"] >= T0 + 50],
                           (e2e["latency_ms"] + 50)[e2e["ts_start"] >= T0 + 50]])
    assert d["window_s"] == 10.0 and d["duration_s"] == 60.0
    assert d["p95_first"] == pytest.approx(19.0)
    assert d["p95_last"] == pytest.approx(np.quantile(last, 0.95), abs=1e-3)
    assert d["latency_degradation_pct"] == pytest.approx((d["p95_last"] / 19.0 - 1) * 100)
    assert d["throughput_first"] == 10.0 and d["throughput_last"] == 12.0
    only_stamp = chaos_analysis.degradation_of("POST /stamp")
    assert only_stamp["latency_degradation_pct"] == pytest.approx(0.0)


def test_memory_growth_flag(chaos_analysis: Analysis) -> None:
    mem = chaos_analysis.memory.set_index("part")
    assert not mem.loc["orchestrator", "flagged"] and mem.loc["orchestrator", "growth_pct"] == 0.0
    assert mem.loc["reducer", "flagged"]
    # 100 -> 130 MiB linearly over 59 s; window means of the first and last 10 samples
    first = np.mean([100 + 30 * s / 59 for s in range(10)])
    last = np.mean([100 + 30 * s / 59 for s in range(50, 60)])
    assert mem.loc["reducer", "growth_pct"] == pytest.approx((last / first - 1) * 100, rel=1e-6)


def test_fault_never_injected_is_reported_not_fatal(chaos_run: Path, tmp_path: Path) -> None:
    run_dir = _run_with_journal(chaos_run, tmp_path, rungen.journal_entry(),
                                rungen.journal_entry(fault_id="f2", started_at=None, healed_at=None,
                                                     outcome="failed", error="no such process"))
    faults = analyse(run_dir).faults
    assert faults.iloc[0]["recovery_s"] == 2.0
    assert not faults.iloc[1]["recovered"] and "never injected" in faults.iloc[1]["note"]


def test_fault_injected_after_the_load_ended_is_left_out(chaos_run: Path, tmp_path: Path) -> None:
    # the run's load ended at T0+60; an experiment still running injected a second fault at T0+62
    # (a scenario's short form stopped before its timeline did): nothing was offered during it
    from analysis.thresholds import evaluate, parse_text
    run_dir = _run_with_journal(chaos_run, tmp_path, rungen.journal_entry(),
                                rungen.journal_entry(fault_id="f2", name="broker-latency", action="latency",
                                                     started_at=T0 + 62, healed_at=T0 + 63))
    a = analyse(run_dir)
    late = a.faults.iloc[1]
    assert bool(late["after_load"]) and "after the load ended" in late["note"]
    ratio, recovery = evaluate(parse_text("- offered_ratio >= 90%\n- recovery < 10s\n"), a)
    assert (ratio.status, recovery.status) == ("pass", "pass"), (ratio, recovery)
    assert recovery.measured == 2.0 and ratio.detail == "1 fault(s)"
    (only_late,) = evaluate(parse_text("- recovery(broker-latency) < 10s\n"), a)
    assert only_late.status != "pass" and "after the load ended" in only_late.detail
