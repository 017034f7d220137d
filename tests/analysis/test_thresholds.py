"""Threshold parsing (good and bad files, with line numbers) and evaluation against known answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.analyse import Analysis
from analysis.thresholds import SHIPPED, ThresholdError, evaluate, load_thresholds, parse_expression, parse_text


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


def test_absent_data_fails_as_no_data(chaos_analysis: Analysis) -> None:
    results = evaluate(parse_text("- p95(NODE_INTROSPECTION) < 50ms\n- recovery(broker-pause) < 2s\n"
                                  "- lost(nothing) == 0\n- burst_recovery < 5s\n"), chaos_analysis)
    assert [r.status for r in results] == ["no data"] * 4
    assert "no samples named 'NODE_INTROSPECTION'" in results[0].detail
    assert "no fault named 'broker-pause'" in results[1].detail
