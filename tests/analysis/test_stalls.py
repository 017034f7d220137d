"""Consumer stalls and the largest lag, on run directories written by the real writers (rungen.py).

The chaos run has a broker kill from second 20 to 25; the fault window runs to 35 (the grace).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import rungen

from analysis import stalls
from analysis.analyse import analyse
from analysis.report import build_report
from analysis.thresholds import evaluate, parse_text

T0 = rungen.T0
CHECKS = "- stalled == 0\n- max_lag(bridge-reducer) < 500\n- max_lag(bridge-reducer) < 100\n"


def lag_rows(reducer: list[tuple[int, int]], seconds: int = 60) -> dict[str, list]:
    """Per second: the database adapter keeps pace (lag 1, committed moving); the reducer's (lag, committed)
    are given per second, and a second with neither has no row (the broker did not answer)."""
    rows: dict[str, list] = {"ts": [], "consumer": [], "lag_ms": [], "lag_messages": [], "source": [], "committed": []}

    def add(sec: int, consumer: str, lag: int, committed: int) -> None:
        for column, value in zip(rows, (T0 + sec + 0.5, consumer, None, lag, "group", committed)):
            rows[column].append(value)

    for sec in range(seconds):
        add(sec, "bridge-database-adapter", 1, 10 * sec)
        if sec < len(reducer) and reducer[sec] is not None:
            add(sec, "bridge-reducer", *reducer[sec])
    return rows


def moving(seconds: int = 60) -> list:
    return [(3, 10 * s) for s in range(seconds)]


def test_a_consumer_that_keeps_pace_has_no_stall(tmp_path: Path) -> None:
    a = analyse(rungen.make_chaos_run(tmp_path / "run", backlog=lag_rows(moving())), parse_text(CHECKS))
    assert a.stalls.empty
    assert [(r.status, r.measured) for r in a.results] == [("pass", 0.0), ("pass", 3.0), ("pass", 3.0)]
    assert a.results[0].detail == "no stall in 2 groups"


def test_a_consumer_stuck_after_the_heal_is_a_stall_that_fails(tmp_path: Path) -> None:
    reducer = moving(25) + [(400, 250)] * 35  # from the heal on: lag 400, committed never moves again
    a = analyse(rungen.make_chaos_run(tmp_path / "run", backlog=lag_rows(reducer)), parse_text(CHECKS))
    (stall,) = a.stalls.itertuples()
    # last progress at second 25 (committed 250); the fault window ends at 35
    assert stall.consumer == "bridge-reducer" and stall.start_ts == T0 + 25.5 and stall.end_ts == T0 + 59.5
    assert stall.length_s == 34 and stall.excused_s == 9.5 and stall.ongoing and stall.counted
    assert stall.max_lag == 400 and stall.faults == "broker-kill"
    assert [(r.status, r.measured) for r in a.results] == [("fail", 1.0), ("pass", 400.0), ("fail", 400.0)]
    assert a.results[0].detail == "bridge-reducer at +26 s for 34 s (still at the end), lag up to 400"
    (tmp_path / "stalled.yaml").write_text("- stalled == 0\n")
    verdict = build_report(tmp_path / "run", thresholds=tmp_path / "stalled.yaml", out_dir=tmp_path / "out")
    html = (tmp_path / "out" / "index.html").read_text()
    assert verdict.status == "fail" and "<h3>Consumer stalls</h3>" in html
    assert "<td>bridge-reducer</td><td class=\"n\">+26 s</td><td class=\"n\">34 s (at the end)</td>" in html


def test_a_consumer_that_waits_out_a_fault_and_resumes_is_excused(tmp_path: Path) -> None:
    # stuck from second 18 (before the kill) to 33, inside the window from 20 to 35 but for 2 s
    reducer = moving(18) + [(50, 170)] * 16 + [(3, 180 + 10 * s) for s in range(26)]
    a = analyse(rungen.make_chaos_run(tmp_path / "run", backlog=lag_rows(reducer)), parse_text("- stalled == 0\n"))
    (stall,) = a.stalls.itertuples()
    assert stall.length_s == 16 and stall.excused_s == 13.5 and not stall.counted and not stall.ongoing
    assert (a.results[0].status, a.results[0].measured) == ("pass", 0.0)
    assert a.results[0].detail == "no stall in 2 groups (1 while a fault was on)"


def test_a_short_pause_in_progress_is_no_stall() -> None:
    rows = lag_rows(moving(30) + [(5, 290)] * 9 + [(5, 300 + s) for s in range(21)])
    assert stalls.find_stalls(pd.DataFrame(rows)).empty  # 9 samples: 8 s without progress, under 10 s


def test_without_committed_positions_stalled_has_no_data(tmp_path: Path) -> None:
    rows = {k: v for k, v in rungen.backlog_rows().items() if k != "committed"}  # as a run before the column
    a = analyse(rungen.make_chaos_run(tmp_path / "run", backlog=rows),
                parse_text("- stalled == 0\n- stalled(bridge-reducer) == 0\n"))
    assert [r.status for r in a.results] == ["no data", "no data"]
    assert a.results[0].detail.startswith("no committed positions in lag/")


def test_an_unknown_group_has_no_data(tmp_path: Path) -> None:
    a = analyse(rungen.make_chaos_run(tmp_path / "run", backlog=lag_rows(moving())),
                parse_text("- stalled(bridge-registry) == 0\n- max_lag(bridge-registry) < 10\n"))
    assert [r.status for r in a.results] == ["no data", "no data"]
    assert "sampled: bridge-database-adapter, bridge-reducer" in a.results[0].detail


def test_a_stall_finder_that_raised_makes_the_row_unknown_not_a_crash(tmp_path: Path) -> None:
    a = analyse(rungen.make_chaos_run(tmp_path / "run", backlog=lag_rows(moving())))
    a.stalls, a.stalls_error = None, "ValueError: bad rows"
    (r,) = evaluate(parse_text("- stalled == 0\n"), a)
    assert r.status == "error" and "bad rows" in r.detail
