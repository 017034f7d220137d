"""Threshold parsing (good and bad files, with line numbers), evaluation against known answers, and the
registry: every metric measures the known-answer run, and a measure that raises makes the verdict unknown."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import rungen

from analysis import thresholds
from rundir.journal import FaultJournal, FaultRecord
from analysis.__main__ import main
from analysis.analyse import Analysis, analyse
from analysis.report import build_report
from analysis.thresholds import (ALLOWED_UNITS, METRICS, SHIPPED, MetricSpec, Threshold, ThresholdError, evaluate,
                                 load_thresholds, parse_expression, parse_text)


@pytest.mark.parametrize(("text", "metric", "argument", "op", "limit", "unit"), [
    ("p95(workflow→completed) < 400ms", "p95", "workflow→completed", "<", 400.0, "ms"),
    ("p99(GET /stamp/{hash}) <= 0.25s", "p99", "GET /stamp/{hash}", "<=", 250.0, "s"),
    ("p99.9(kafka) < 1s", "p99.9", "kafka", "<", 1000.0, "s"),
    ("throughput(POST /stamp) > 1000/s", "throughput", "POST /stamp", ">", 1000.0, "/s"),
    ("throughput(POST /stamp) > 600/min", "throughput", "POST /stamp", ">", 10.0, "/min"),
    ("lost == 0", "lost", None, "==", 0.0, ""),
    ("duplicated < 0.1%", "duplicated", None, "<", 0.1, "%"),
    ("lost(workflow) == 0", "lost", "workflow", "==", 0.0, ""),
    ("recovery(broker-kill) < 2s", "recovery", "broker-kill", "<", 2.0, "s"),
    ("recovery(broker-kill) < 1500ms", "recovery", "broker-kill", "<", 1.5, "ms"),
    ("errors(POST /workflows)<1%", "errors", "POST /workflows", "<", 1.0, "%"),
    ("burst_recovery < 5s", "burst_recovery", None, "<", 5.0, "s"),
])
def test_parse_good_expressions(text: str, metric: str, argument: str | None, op: str, limit: float,
                                unit: str) -> None:
    t = parse_expression(text)
    assert (t.metric, t.argument, t.op, t.limit, t.unit) == (metric, argument, op, pytest.approx(limit), unit)


BAD = [
    ("- p95(workflow→completed) 400ms\n", 1, "no comparison operator"),
    ("- lost = 0\n", 1, "'=' is not an operator; use '=='"),
    ("- lots == 0\n", 1, "unknown metric 'lots' (did you mean 'lost'?)"),
    ("- lost == 0\n- p95(x) < 400\n", 2, "p95 needs a unit: 'ms' or 's'"),
    ("- lost == 0\n\n- throughput(x) > 10ms\n", 3, "throughput takes '/s' or '/min' or no unit, not 'ms'"),
    ("- lost == 0 things\n", 1, "lost takes no unit or '%', not 'things'"),
    ("- p95(x) < fast\n", 1, "the limit 'fast' is not a number"),
    ("- p95() < 4ms\n", 1, "empty argument in p95()"),
    ("- burst_recovery(x) < 4s\n", 1, "burst_recovery takes no argument"),
    ("- p95(x) <\n", 1, "no limit after the operator"),
    ("- lost: 0\n", 1, "found 'key: value'"),
    ("- 5\n", 1, "expected a threshold such as"),
    ("- [p95(x) < 4ms]\n", 1, "expected one threshold per line as text"),
    ("p95(x) < 4ms\n", 1, "expected a list of thresholds"),
    ("- lost == 0\n- 'unclosed\n", 2, "not valid YAML"),
    ("", 1, "empty"),
    ("thresholds: []\n", 1, "the thresholds list is empty"),
    ("description: x\nthreshold:\n  - lost == 0\n", 2, "unknown key 'threshold'"),
]


@pytest.mark.parametrize(("text", "line", "message"), BAD)
def test_errors_name_file_line_and_what(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ThresholdError) as err:
        load_thresholds(path)
    assert err.value.line == line, str(err.value)
    assert str(err.value).startswith(f"{path}:{line}: ")
    assert message in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ThresholdError, match="no such threshold file"):
        load_thresholds(tmp_path / "nope.yaml")


def test_mapping_form_and_comments() -> None:
    ts = parse_text("description: d\nthresholds:\n  # a comment\n  - lost == 0   # trailing\n  - p95 < 3ms\n",
                    "f.yaml")
    assert [(t.text, t.line) for t in ts] == [("lost == 0", 4), ("p95 < 3ms", 5)]


@pytest.mark.parametrize("path", sorted(SHIPPED.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_sets_parse(path: Path) -> None:
    assert load_thresholds(path)


def test_shipped_sets_cover_the_catalog() -> None:
    names = {p.stem for p in SHIPPED.glob("*.yaml")}
    assert {"flagship", "workflow", "stamping", "cross-service", "resilience", "database-adapter", "registration",
            "introspection-burst", "sustained", "burst-recovery", "async-flow"} <= names


def verdicts(a: Analysis, text: str) -> list[tuple[str, float | None]]:
    return [(r.status, r.measured) for r in evaluate(parse_text(text), a)]


def test_evaluation_known_values(chaos_analysis: Analysis) -> None:
    got = verdicts(chaos_analysis, """
- lost == 0
- lost(stamp) == 0
- duplicated < 1%
- leaked == 0
- recovery(broker-kill) < 2s
- recovery(broker-kill) <= 2s
- first_success(broker-kill) < 50ms
- fault_errors(kill) == 100%
- count(POST /stamp) == 600
- errors(POST /stamp) == 55
- p50(POST /stamp) == 15ms
- p95(workflow→completed) < 0.4s
- service_p50(workflow→completed) == 200ms
- lag_max < 46ms
- memory_growth(orchestrator) < 1%
- memory_growth < 10%
""")
    assert got == [
        ("fail", 1.0), ("pass", 0.0), ("pass", pytest.approx(100 / 110)), ("fail", 1.0),
        ("fail", 2.0), ("pass", 2.0), ("pass", pytest.approx(0.01, abs=1e-6)), ("pass", 100.0),
        ("pass", 600.0), ("pass", 55.0), ("pass", 15.0), ("pass", pytest.approx(350.0, abs=1e-3)),
        ("pass", 200.0), ("pass", 45.0), ("pass", 0.0), ("fail", pytest.approx(24.855, abs=1e-3)),
    ]


def test_sampler_metrics_fail_and_pass(chaos_analysis: Analysis) -> None:
    """CPU and memory of the resources/ rows: orchestrator 5 % flat, reducer 10..28 % (mean 19) and +24.9 % RSS."""
    got = verdicts(chaos_analysis, """
- cpu_mean(orchestrator) < 10%
- cpu_mean(reducer) < 10%
- cpu_mean < 20%
- cpu_max(orchestrator) < 25%
- cpu_max(reducer) < 25%
- cpu_max <= 28%
- memory_growth(orchestrator) < 10%
- memory_growth(reducer) < 10%
- memory_growth(reducer) < 25%
""")
    assert got == [
        ("pass", 5.0), ("fail", 19.0), ("pass", 19.0),
        ("pass", 5.0), ("fail", 28.0), ("pass", 28.0),
        ("pass", 0.0), ("fail", pytest.approx(24.855, abs=1e-3)), ("pass", pytest.approx(24.855, abs=1e-3)),
    ]


def test_sampler_metrics_without_samples_are_no_data(chaos_analysis: Analysis, tmp_path: Path) -> None:
    steady = analyse(rungen.make_steady_run(tmp_path / "steady"), parse_text(
        "- cpu_mean < 50%\n- cpu_max(reducer) < 50%\n- memory_growth < 10%\n- drain_time < 10s\n"))
    assert [(r.status, r.detail) for r in steady.results] == [
        ("no data", "no resources/ samples"), ("no data", "no resources/ samples"),
        ("no data", "no resources/ samples"), ("no data", "no faults in chaos.jsonl")]
    (r,) = evaluate(parse_text("- cpu_max(broker) < 50%\n"), chaos_analysis)
    assert (r.status, r.detail) == ("no data", "no part named 'broker' (parts: orchestrator, reducer)")


def test_absent_data_fails_as_no_data(chaos_analysis: Analysis) -> None:
    results = evaluate(parse_text("- p95(NODE_INTROSPECTION) < 50ms\n- recovery(broker-pause) < 2s\n"
                                  "- lost(nothing) == 0\n- burst_recovery < 5s\n"), chaos_analysis)
    assert [r.status for r in results] == ["no data"] * 4
    assert "no samples named 'NODE_INTROSPECTION'" in results[0].detail
    assert "no fault named 'broker-pause'" in results[1].detail


# --------------------------------------------------------------------------
# the registry

# what a metric's argument selects in the known-answer run, by measure function
ARGUMENTS = {
    thresholds.measure_samples: "POST /stamp",
    thresholds.measure_loss: "workflow",
    thresholds.measure_fault: "broker-kill",
    thresholds.measure_fault_phase: "broker-kill",
    thresholds.measure_degradation: "POST /stamp",
    thresholds.measure_memory_growth: "reducer",
    thresholds.measure_lag: "db-adapter",
    thresholds.measure_drain: "broker-kill",
    thresholds.measure_cpu: "reducer",
    thresholds.measure_steady: "POST /stamp",
    thresholds.measure_stalled: "bridge-reducer",
    thresholds.measure_max_lag: "bridge-reducer",
    thresholds.measure_injected: "malformed",
    thresholds.measure_observed: "startup_confidence",
}
# nothing of these in the known run: see test_burst_recovery_measured, and tests/analysis/test_injected.py
ABSENT_IN_CHAOS_RUN = {"burst_recovery": "no burst found", "unaccounted": "no topic fault of this run published messages"}


def examples(metric: str) -> list[str]:
    """Thresholds on ``metric`` in its dimension's first unit: over everything, and over a selection if it takes one."""
    spec = METRICS[metric]
    limit = f"1{ALLOWED_UNITS[spec.dimension][0]}"
    texts = [] if metric in thresholds.NEEDS_ARGUMENT else [f"{metric} < {limit}"]
    if spec.argument:
        texts.append(f"{metric}({ARGUMENTS[spec.measure]}) < {limit}")
    return texts


@pytest.mark.parametrize("metric", list(METRICS))
def test_every_metric_measures_the_known_run(chaos_analysis: Analysis, metric: str) -> None:
    assert callable(METRICS[metric].measure)
    for r in evaluate([parse_expression(text) for text in examples(metric)], chaos_analysis):
        if metric in ABSENT_IN_CHAOS_RUN:
            assert (r.status, r.measured) == ("no data", None)
            assert ABSENT_IN_CHAOS_RUN[metric] in r.detail
            continue
        assert r.status in ("pass", "fail"), (r.threshold.text, r.status, r.detail)
        assert isinstance(r.measured, float) and not math.isnan(r.measured)
        assert r.detail or metric == "count", r.threshold.text


def test_observed_reads_what_the_system_reported(chaos_analysis: Analysis, tmp_path: Path) -> None:
    results = evaluate(parse_text("- observed(startup_confidence) >= 0.7\n- observed(cache_hit_ratio) > 0.5\n"
                                  "- observed(no_such_name) > 0\n"), chaos_analysis)
    assert [(r.status, r.measured) for r in results] == [("pass", 0.93), ("fail", 0.5), ("no data", None)]
    assert "did not report 'no_such_name' (reported: cache_hit_ratio, startup_confidence)" in results[2].detail
    steady = analyse(rungen.make_steady_run(tmp_path / "steady"), parse_text("- observed(startup_confidence) > 0\n"))
    assert [(r.status, r.detail) for r in steady.results] == [
        ("no data", "the system reported nothing about this run (SystemAdapter.observe)")]
    with pytest.raises(ThresholdError, match="observed needs an argument"):
        parse_text("- observed > 1\n", "t.yaml")


def test_burst_recovery_measured(tmp_path: Path) -> None:
    run_dir = rungen.make_chaos_run(tmp_path / "burst", with_journal=False)
    FaultJournal(run_dir).write(FaultRecord(**rungen.journal_entry(fault_id="b1", name="burst", action="burst",
                                                                   target="load")))
    (r,) = analyse(run_dir, parse_text("- burst_recovery < 5s\n")).results
    assert (r.status, r.measured, r.detail) == ("pass", 2.0, "1 burst(s), journal")


def raise_key_error(t: Threshold, a: Analysis) -> tuple[float | None, str]:
    """A broken measure: it reads a column the faults table does not have (a real KeyError on real data)."""
    return float(a.faults["no_such_column"].max()), ""


@pytest.fixture
def broken_metric(monkeypatch: pytest.MonkeyPatch) -> None:
    """A metric ``broken`` (a count, no argument) whose measure raises, for this test only."""
    monkeypatch.setitem(METRICS, "broken", MetricSpec("count", "", "always raises", raise_key_error))


@pytest.mark.parametrize("metric", [m for m in METRICS if m not in ABSENT_IN_CHAOS_RUN])
def test_every_metric_can_fail_and_can_pass(chaos_analysis: Analysis, metric: str) -> None:
    """A check that cannot fail (or cannot pass) is a defect: at its measured value, '<' fails and '<=' passes."""
    for text in examples(metric):
        probe = parse_expression(text)
        (r,) = evaluate([probe], chaos_analysis)
        assert r.measured is not None and math.isfinite(r.measured), (text, r.detail)
        below = dataclasses.replace(probe, op="<", limit=r.measured)
        at = dataclasses.replace(probe, op="<=", limit=r.measured)
        assert [x.status for x in evaluate([below, at], chaos_analysis)] == ["fail", "pass"], (text, r.measured)


def test_the_new_kinds_on_the_known_run(chaos_analysis: Analysis) -> None:
    """Steady-state latency leaves the fault and its recovery out; the replay reads the system's own backlog."""
    got = verdicts(chaos_analysis, """
- steady_p95(POST /stamp) < 20ms
- steady_p95(POST /stamp) < 19ms
- p95(POST /stamp) < 20ms
- replay_time(broker-kill) < 3s
- replay_time(broker-kill) < 2s
- drain_time(broker-kill) < 4s
""")
    assert got == [("pass", 19.0), ("fail", 19.0), ("fail", 1000.0),
                   ("pass", 2.5), ("fail", 2.5), ("pass", 3.5)]


def test_a_raising_measure_is_an_error_row_and_the_rest_still_count(chaos_analysis: Analysis,
                                                                     broken_metric: None) -> None:
    results = evaluate(parse_text("- lost(stamp) == 0\n- broken == 0\n- lost == 0\n"), chaos_analysis)
    assert [(r.status, r.measured) for r in results] == [("pass", 0.0), ("error", None), ("fail", 1.0)]
    assert results[1].detail == "error: KeyError: 'no_such_column'"


@pytest.mark.parametrize(("text", "verdict"), [
    ("- lost(stamp) == 0\n", "pass"),
    ("- lost(stamp) == 0\n- broken == 0\n", "unknown"),  # nothing failed, but one was never measured
    ("- lost == 0\n- broken == 0\n", "fail"),  # a failure is a failure whatever else broke
    ("- lost(nothing) == 0\n- broken == 0\n", "fail"),  # so is no data
])
def test_verdict_with_errors(chaos_run: Path, broken_metric: None, text: str, verdict: str) -> None:
    assert analyse(chaos_run, parse_text(text)).verdict == verdict


def test_unknown_exits_3(chaos_run: Path, tmp_path: Path, broken_metric: None,
                         capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("- lost(stamp) == 0\n- broken == 0\n")
    assert main(["check", str(chaos_run), "-t", str(path), "-q"]) == 3
    out = capsys.readouterr().out
    assert "verdict: UNKNOWN" in out and "error: KeyError: 'no_such_column'" in out
    v = build_report(chaos_run, thresholds=path, out_dir=tmp_path / "out")
    assert (v.status, v.exit_code, v.passed) == ("unknown", 3, False)
    assert [r["status"] for r in v.results] == ["pass", "error"]
    assert json.loads((tmp_path / "out" / "analysis.json").read_text())["verdict"] == "unknown"
    html = (tmp_path / "out" / "index.html").read_text()
    assert 'class="banner unknown"' in html and "UNKNOWN — none failed, but 1 of 2 thresholds could not be measured" in html
    assert '<span class="status error">error</span>' in html
