"""Injected messages accounted for: the `unaccounted` check on run directories written by the real writers.

The run (rungen.py) gets one more fault, an `inject` of four catalogue messages into the workflow topic,
which two groups read; `injected/` says what each group did with each message.
"""
from __future__ import annotations

from pathlib import Path

import rungen

from analysis.analyse import analyse
from analysis.report import build_report
from analysis.thresholds import parse_text
from rundir.journal import FaultJournal, FaultRecord
from rundir.write import write_injected

CHECKS = "- unaccounted == 0\n- unaccounted(malformed) == 0\n- unaccounted(huge) == 0\n"
MESSAGES = [("malformed:not-json", 0, 10, None), ("not-object:array", 1, 11, None),
            ("huge:payload", 2, 12, "6f0c1b2e-7a55-4c8e-9d3f-0a1b2c3d4e5f"),
            ("unicode:nul", 0, 13, "0d2f9a7c-1b3e-4f5a-8c6d-7e8f9a0b1c2d")]
GROUPS = ("bridge-reducer", "bridge-database-adapter")


def inject_run(path: Path, fates: dict[tuple[str, str], str] | None = None, with_fates: bool = True) -> Path:
    """A chaos run with the inject fault; every message dead-lettered by both groups unless `fates` says else."""
    rungen.make_chaos_run(path)
    messages = [{"label": label, "partition": p, "offset": o, "event_id": e} for label, p, o, e in MESSAGES]
    FaultJournal(path).write(FaultRecord(**rungen.journal_entry(
        fault_id="f2", name="poison", action="inject", target="workflow-events.v1", target_kind="topic",
        parameters={"classes": "all"}, started_at=rungen.T0 + 40, healed_at=rungen.T0 + 40.2,
        observed={"topic": "workflow-events.v1", "sent": 4, "messages": messages})))
    if with_fates:
        write_injected(path, [
            {"fault_id": "f2", "label": label, "topic": "workflow-events.v1", "partition": p, "offset": o,
             "event_id": e, "consumer": g, "fate": (fates or {}).get((label, g), "dead-lettered")}
            for label, p, o, e in MESSAGES for g in GROUPS])
    return path


def statuses(a) -> list[tuple[str, float | None]]:
    return [(r.status, r.measured) for r in a.results]


def test_every_message_dead_lettered_or_applied_passes(tmp_path: Path) -> None:
    a = analyse(inject_run(tmp_path / "run", {("unicode:nul", g): "applied" for g in GROUPS}), parse_text(CHECKS))
    assert statuses(a) == [("pass", 0.0)] * 3
    assert a.results[0].detail == "8 message fates, each dead-lettered or applied"
    by_class = {(r["class"], r["consumer"]): (r["messages"], r["dead-lettered"], r["applied"])
                for _, r in a.injected.iterrows()}
    assert by_class[("unicode", "bridge-reducer")] == (1, 0, 1)
    assert by_class[("malformed", "bridge-database-adapter")] == (1, 1, 0)


def test_a_message_one_group_never_took_fails_and_says_where(tmp_path: Path) -> None:
    run = inject_run(tmp_path / "run", {("huge:payload", "bridge-reducer"): "unaccounted"})
    a = analyse(run, parse_text(CHECKS))
    assert statuses(a) == [("fail", 1.0), ("pass", 0.0), ("fail", 1.0)]
    assert a.results[0].detail == "huge at bridge-reducer: 1 unaccounted"
    (tmp_path / "checks.yaml").write_text(CHECKS)
    verdict = build_report(run, thresholds=tmp_path / "checks.yaml", out_dir=tmp_path / "out")
    assert verdict.status == "fail"
    html = (tmp_path / "out" / "index.html").read_text()
    assert "<h3>Injected messages</h3>" in html and "huge at bridge-reducer: 1 unaccounted" in html


def test_garbage_applied_as_an_event_fails(tmp_path: Path) -> None:
    a = analyse(inject_run(tmp_path / "run", {("malformed:not-json", "bridge-database-adapter"): "applied"}),
                parse_text(CHECKS))
    assert statuses(a) == [("fail", 1.0), ("fail", 1.0), ("pass", 0.0)]
    assert a.results[1].detail == "malformed at bridge-database-adapter: 1 applied though invalid"


def test_no_fates_from_the_adapter_is_no_data_never_a_pass(tmp_path: Path) -> None:
    a = analyse(inject_run(tmp_path / "run", with_fates=False), parse_text("- unaccounted == 0\n"))
    ((status, measured),) = statuses(a)
    assert (status, measured) == ("no data", None)
    assert "the adapter did not say what became of them" in a.results[0].detail


def test_a_run_without_topic_faults_has_nothing_to_account_for(tmp_path: Path) -> None:
    a = analyse(rungen.make_chaos_run(tmp_path / "run"), parse_text("- unaccounted == 0\n"))
    assert statuses(a) == [("no data", None)]
    assert a.results[0].detail == "no topic fault of this run published messages"


def test_an_unknown_class_is_named(tmp_path: Path) -> None:
    a = analyse(inject_run(tmp_path / "run"), parse_text("- unaccounted(oversized) == 0\n"))
    assert statuses(a) == [("no data", None)]
    assert a.results[0].detail == ("no injected message of class 'oversized' "
                                   "(injected: huge, malformed, not-object, unicode)")
