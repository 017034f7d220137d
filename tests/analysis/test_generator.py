"""Generator-limited: a number the load generator set is never blamed on the system, and a broken system is not excused.

Each run directory is written through the real writers: 40 s of an open-model
load at 20 arrivals/s, 10 ms service time, one fault from second 10 to 20,
with Locust's CPU in resources/. Only where the arrivals could start and the
generator's process was or was not behind changes between the runs.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rungen

from analysis.analyse import analyse
from analysis.generator import CPU_PERCENT, LATE_P95_MS, limited_reason
from analysis.report import build_report
from rundir.journal import FaultJournal, FaultRecord
from rundir.write import write_resources, write_run_info, write_samples

T0 = rungen.T0
RATE = 20
SECONDS = 40


def make_run(path: Path, *, late_s: float = 0.0, user_wait_s: float = 0.0, cpu: float = 40.0,
             cpu_outside: float = 30.0, with_ready: bool = True) -> Path:
    """Arrivals due in the fault (seconds 10-20) wait ``user_wait_s`` for a free user (the system's doing)
    and then ``late_s`` for the generator (its own); Locust uses ``cpu`` % of a core during the fault."""
    path.mkdir(parents=True, exist_ok=True)
    write_run_info(path, rungen.run_info(run_id=path.name, started_at=T0, ended_at=T0 + SECONDS))
    n = RATE * SECONDS
    intended = T0 + np.arange(n) / RATE
    in_fault = (intended >= T0 + 10) & (intended < T0 + 20)
    ready = intended + np.where(in_fault, user_wait_s, 0.0)
    start = ready + 0.001 + np.where(in_fault, late_s, 0.0)
    cols = {
        "ts_intended": intended.tolist(), "ts_start": start.tolist(), "type": ["http"] * n,
        "name": ["GET /stamp/{hash}"] * n, "latency_ms": [10.0] * n, "ok": [True] * n, "bytes": [1] * n,
        "error": [None] * n, "key": [None] * n, "process": ["host:1"] * n,
    }
    if with_ready:
        cols["ts_ready"] = ready.tolist()
    write_samples(path, cols)
    secs = T0 + np.arange(SECONDS, dtype=float) + 0.5
    write_resources(path, {
        "ts": secs.tolist(), "part": ["locust"] * SECONDS, "rss_bytes": [80 * 2**20] * SECONDS,
        "cpu_percent": [cpu if 10 <= s < 20 else cpu_outside for s in range(SECONDS)],
    })
    FaultJournal(path).write(FaultRecord(**rungen.journal_entry(started_at=T0 + 10, healed_at=T0 + 20)))
    return path


THRESHOLDS = "- during_p95(broker-kill) < 50ms\n- p95(GET /stamp/{hash}) < 50ms\n"


def verdict_of(run: Path, tmp_path: Path):
    path = tmp_path / f"{run.name}.yaml"
    path.write_text(THRESHOLDS)
    return analyse(run, thresholds=path)


def test_a_late_generator_is_named_and_its_numbers_are_not_a_fail(tmp_path: Path) -> None:
    a = verdict_of(make_run(tmp_path / "late", late_s=0.2), tmp_path)
    fault = a.faults.iloc[0]
    assert fault["during_generator"].startswith("generator-limited: requests went out 201 ms after they could")
    assert fault["before_generator"] == "" and fault["after_generator"] == ""
    assert [r.status for r in a.results] == ["generator-limited", "generator-limited"]
    assert "broker-kill during: generator-limited" in a.results[0].detail
    assert a.verdict == "unknown"  # neither the system's pass nor its fail


def test_a_busy_generator_process_is_named(tmp_path: Path) -> None:
    a = verdict_of(make_run(tmp_path / "busy", late_s=0.1, cpu=97.0), tmp_path)
    assert "Locust at 97 % of a core" in a.faults.iloc[0]["during_generator"]
    assert a.results[0].status == "generator-limited"


def test_a_stuck_system_is_not_excused(tmp_path: Path) -> None:
    """Arrivals that waited for a free user (every user stuck on the system) are the system's latency."""
    a = verdict_of(make_run(tmp_path / "stuck", user_wait_s=0.3), tmp_path)
    assert a.faults.iloc[0]["during_generator"] == ""
    assert a.faults.iloc[0]["during_p95"] == pytest.approx(311.0)
    assert [r.status for r in a.results] == ["fail", "fail"]
    assert a.verdict == "fail"


def test_a_generator_that_kept_up_passes_and_fails_on_the_system_alone(tmp_path: Path) -> None:
    a = verdict_of(make_run(tmp_path / "fine"), tmp_path)
    assert a.generator_overall.limited == "" and a.generator_overall.late_p95_ms == pytest.approx(1.0, abs=0.01)
    assert a.generator_overall.cpu_percent == pytest.approx(32.5)  # 40 % in the fault, 30 % outside
    assert [r.status for r in a.results] == ["pass", "pass"] and a.verdict == "pass"


def test_a_real_fail_elsewhere_still_fails_the_run(tmp_path: Path) -> None:
    run = make_run(tmp_path / "late-and-slow", late_s=0.2)
    path = tmp_path / "t.yaml"
    path.write_text("- during_p95(broker-kill) < 50ms\n- p95(GET /stamp/{hash}) < 5ms\n")
    a = analyse(run, thresholds=path)
    assert [r.status for r in a.results] == ["generator-limited", "generator-limited"]
    path.write_text("- during_p95(broker-kill) < 50ms\n- service_p95(GET /stamp/{hash}) < 5ms\n")
    a = analyse(run, thresholds=path)
    assert [r.status for r in a.results] == ["generator-limited", "fail"]  # late starts leave service time alone
    assert a.verdict == "fail"
    a = analyse(make_run(tmp_path / "busy-and-slow", late_s=0.2, cpu=99.0), thresholds=path)
    assert [r.status for r in a.results][1] == "fail"  # 99 % in the fault, 31.7 % over the run: it kept up
    a = analyse(make_run(tmp_path / "busy-throughout", cpu=99.0, cpu_outside=95.0), thresholds=path)
    assert [r.status for r in a.results] == ["pass", "generator-limited"]
    assert "Locust at 96 % of a core" in a.results[1].detail


def test_without_ready_times_or_a_sampler_nothing_is_claimed(tmp_path: Path) -> None:
    a = verdict_of(make_run(tmp_path / "old", late_s=0.2, with_ready=False), tmp_path)
    assert a.faults.iloc[0]["during_generator"] == "" and math.isnan(a.generator_overall.late_p95_ms)
    assert [r.status for r in a.results] == ["fail", "fail"]


def test_the_report_says_generator_limited(tmp_path: Path) -> None:
    run = make_run(tmp_path / "late", late_s=0.2)
    path = tmp_path / "t.yaml"
    path.write_text(THRESHOLDS)
    v = build_report(run, thresholds=path, out_dir=tmp_path / "out")
    assert (v.status, v.exit_code) == ("unknown", 3)
    html = (tmp_path / "out" / "index.html").read_text()
    assert '<span class="status generator-limited">generator-limited</span>' in html
    assert "2 of 2 missed their limit where the load generator was the bottleneck" in html
    assert 'id="generator" class="bad"' in html


@pytest.mark.parametrize("late, cpu, limited", [
    (LATE_P95_MS - 0.1, CPU_PERCENT - 0.1, False), (LATE_P95_MS, 0.0, True), (0.0, CPU_PERCENT, True),
    (math.nan, math.nan, False),
])
def test_the_levels(late: float, cpu: float, limited: bool) -> None:
    assert bool(limited_reason(late, cpu)) is limited
