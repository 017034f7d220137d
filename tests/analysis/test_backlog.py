"""Drain time on run directories written by the real writers (rungen.py): drained, never, silent broker, no data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import rungen

from analysis import backlog
from analysis.analyse import Analysis, analyse
from analysis.report import build_report
from analysis.thresholds import evaluate, parse_text
from rundir.journal import FaultJournal, FaultRecord

DRAIN_CHECK = "- drain_time(broker-kill) < 10s\n"


def drain_of(a: Analysis) -> dict:
    return a.faults.iloc[0][backlog.DRAIN_COLUMNS].to_dict()


def test_the_backlog_per_second_counts_only_complete_seconds(chaos_analysis: Analysis) -> None:
    series = backlog.backlog_series(chaos_analysis.run.lag, chaos_analysis.metrics.t0).set_index("sec")
    assert series.loc[0, "total"] == 3 and series.loc[1, "total"] == 9
    # the broker did not answer: the outbox alone is no total, not a small backlog
    assert not series.loc[20:24, "complete"].any() and series.loc[20, "total"] == 50
    assert series.loc[25:29, "total"].tolist() == [700, 330, 90, 5, 5] and series.loc[25:, "complete"].all()
    assert series.loc[0:19, "complete"].all()


def test_a_backlog_that_drains_after_the_heal(chaos_analysis: Analysis) -> None:
    drain = drain_of(chaos_analysis)
    assert drain == {"drain_s": 3.5, "drain_level": 18.0, "drain_outcome": "drained", "drain_note": ""}
    (r,) = evaluate(parse_text(DRAIN_CHECK), chaos_analysis)
    assert (r.status, r.measured, r.detail) == ("pass", 3.5, "1 fault(s)")


def test_a_broker_silent_after_the_heal_is_not_a_drained_backlog(tmp_path: Path) -> None:
    """Seconds 25-27 have only the outbox (0): counted as empty, the drain would be 0.5 s; it is 6.5 s."""
    run = rungen.make_chaos_run(tmp_path / "silent", backlog=rungen.backlog_rows(silent_until=28))
    a = analyse(run, parse_text(DRAIN_CHECK))
    assert drain_of(a)["drain_s"] == 6.5
    assert (a.results[0].status, a.results[0].measured) == ("pass", 6.5)


def test_a_backlog_that_never_drains_fails(tmp_path: Path) -> None:
    run = rungen.make_chaos_run(tmp_path / "stuck", backlog=rungen.backlog_rows(stuck=True))
    a = analyse(run, parse_text(DRAIN_CHECK + "- drain_time < 3600s\n"))
    drain = drain_of(a)
    assert (drain["drain_s"], drain["drain_outcome"]) == (math.inf, "not drained")
    assert drain["drain_note"] == "not back to 18 messages for 3 samples before the end of the samples"
    assert [(r.status, r.measured) for r in a.results] == [("fail", math.inf), ("fail", math.inf)]
    assert "not drained (not back to 18 messages" in a.results[0].detail
    (tmp_path / "drain.yaml").write_text(DRAIN_CHECK)
    v = build_report(run, thresholds=tmp_path / "drain.yaml", out_dir=tmp_path / "out")
    assert (v.status, v.results[0]["measured_display"]) == ("fail", "never")
    summary = json.loads((tmp_path / "out" / "analysis.json").read_text())
    assert (summary["faults"][0]["drain_s"], summary["faults"][0]["drain_outcome"]) == (None, "not drained")
    assert v.report_path is not None and ">never</td>" in v.report_path.read_text()


def test_no_lag_samples_is_no_data(tmp_path: Path) -> None:
    run = rungen.make_chaos_run(tmp_path / "no-sampler", backlog={"ts": [], "consumer": [], "lag_ms": [],
                                                                   "lag_messages": []})
    a = analyse(run, parse_text(DRAIN_CHECK))
    drain = drain_of(a)
    assert math.isnan(drain["drain_s"]) and drain["drain_outcome"] == "no data"
    (r,) = a.results
    assert (r.status, r.measured) == ("no data", None)
    assert r.detail.startswith("broker-kill: no lag samples")


def test_the_level_has_a_floor_and_ignores_an_earlier_fault(tmp_path: Path) -> None:
    """A second fault right after the first: its level comes from the seconds after the first heal, not before."""
    run = rungen.make_chaos_run(tmp_path / "two")
    FaultJournal(run).write(FaultRecord(**rungen.journal_entry(fault_id="f2", name="registry-kill",
                                                               started_at=rungen.T0 + 40, healed_at=rungen.T0 + 45)))
    a = analyse(run, parse_text("- drain_time < 10s\n"))
    first, second = (a.faults.iloc[i][backlog.DRAIN_COLUMNS].to_dict() for i in range(2))
    assert (first["drain_s"], first["drain_level"]) == (3.5, 18.0)
    # before the second fault the backlog is 5: the floor decides; it never rose, so it drained at once
    assert (second["drain_s"], second["drain_level"], second["drain_outcome"]) == (0.5, 10.0, "drained")
    assert (a.results[0].status, a.results[0].measured) == ("pass", 3.5)


@pytest.mark.parametrize("text", ["drain_time(broker-kill) < 10s", "drain_time(kill) <= 3500ms"])
def test_drain_time_parses(text: str) -> None:
    (t,) = parse_text(f"- {text}\n")
    assert (t.metric, t.limit) == ("drain_time", pytest.approx(10.0 if "10s" in text else 3.5))
