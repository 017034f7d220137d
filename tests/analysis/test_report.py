"""build_report, the CLI and compare: files written, verdicts, exit codes, masking, baseline deltas."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import rungen

from analysis.__main__ import main
from analysis.compare import compare, load_summary
from analysis.report import build_report


@pytest.fixture(scope="module")
def reported(chaos_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("report")
    thresholds = out / "t.yaml"
    thresholds.write_text("- p95(workflow→completed) < 400ms\n- lost == 0\n- recovery(broker-kill) <= 2s\n")
    v = build_report(chaos_run, thresholds=thresholds, out_dir=out)
    return out, v


def test_files_and_verdict(reported: tuple[Path, object]) -> None:
    out, v = reported
    assert v.status == "fail" and v.exit_code == 1
    assert [r["status"] for r in v.results] == ["pass", "fail", "pass"]
    assert (out / "index.html").is_file() and (out / "analysis.json").is_file()
    summary = json.loads((out / "analysis.json").read_text())
    assert summary["verdict"] == "fail"
    assert summary["loss"]["totals"]["lost"] == 1
    assert summary["faults"][0]["recovery_s"] == 2.0
    assert (summary["faults"][0]["drain_s"], summary["faults"][0]["drain_outcome"]) == (3.5, "drained")


def test_html_is_self_contained_and_complete(reported: tuple[Path, object]) -> None:
    out, _ = reported
    html = (out / "index.html").read_text()
    assert html.count('src="data:image/png;base64,') == 6  # latency, throughput, memory, CPU, lag (ms, messages)
    assert "http://" not in html and "https://" not in html  # nothing fetched from anywhere
    for section in ('id="verdict"', 'id="thresholds"', 'id="latency"', 'id="throughput"', 'id="names"',
                    'id="loss"', 'id="recovery"', 'id="environment"'):
        assert section in html
    assert "FAIL — 1 of 3 thresholds not met" in html
    assert "Leaks across namespaces" in html and "broker-kill" in html


def test_passwords_masked_everywhere(reported: tuple[Path, object]) -> None:
    out, _ = reported
    for name in ("index.html", "analysis.json"):
        text = (out / name).read_text()
        assert "hunter2" not in text
        assert "bridge:***@127.0.0.1" in text


def test_baseline_deltas_are_marked(chaos_run: Path, tmp_path: Path) -> None:
    base = rungen.make_steady_run(tmp_path / "base", latency_ms=10.0)
    thresholds = tmp_path / "t.yaml"
    thresholds.write_text("- p95(POST /stamp) < 100ms\n")
    v = build_report(chaos_run, thresholds=thresholds, baseline=base, out_dir=tmp_path / "out")
    worse = {(d.item, d.metric) for d in v.deltas if d.direction == "worse"}
    assert ("POST /stamp (http)", "p95") in worse and ("POST /stamp (http)", "error_rate") in worse
    # the baseline is checked against the same thresholds, so their values compare too
    (t,) = [d for d in v.deltas if d.section == "thresholds"]
    assert (t.base, t.run, t.direction) == (10.0, 1000.0, "worse")
    html = (tmp_path / "out" / "index.html").read_text()
    assert 'id="baseline"' in html and 'class="worse"' in html


def test_compare_directions(tmp_path: Path) -> None:
    slow = load_summary(rungen.make_steady_run(tmp_path / "slow", latency_ms=20.0, rate=10))
    fast = load_summary(rungen.make_steady_run(tmp_path / "fast", latency_ms=10.0, rate=20))
    deltas = {(d.metric): d for d in compare(slow, fast) if d.section == "names"}
    assert deltas["p95"].direction == "better" and deltas["p95"].change_pct == pytest.approx(-50.0)
    assert deltas["throughput"].direction == "better"
    assert deltas["error_rate"].direction == "same"
    back = {(d.metric): d for d in compare(fast, slow) if d.section == "names"}
    assert back["p95"].direction == "worse"


def test_cli_report_check_compare(chaos_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(chaos_run, run_dir)
    good = tmp_path / "good.yaml"
    good.write_text("- p95(workflow→completed) < 400ms\n- leaked <= 1\n")
    assert main(["report", str(run_dir), "-t", str(good), "-q"]) == 0
    out = capsys.readouterr().out
    assert "verdict: PASS" in out and "index.html" in out
    assert main(["check", str(run_dir), "-t", "resilience", "-q"]) == 1  # a shipped set, by name
    assert "verdict: FAIL" in capsys.readouterr().out
    assert main(["check", str(run_dir), "-q"]) == 2  # scenario "test" has no shipped set
    base = rungen.make_steady_run(tmp_path / "base")
    assert main(["compare", str(base), str(run_dir), "-q"]) == 0
    assert main(["compare", str(base), str(run_dir), "-q", "--fail-on-worse"]) == 1
    assert "worse" in capsys.readouterr().out


def test_cli_bad_input_exits_2_naming_the_file(chaos_run: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- lost == 0\n- p95(x) < 5 parsecs\n")
    assert main(["check", str(chaos_run), "-t", str(bad), "-q"]) == 2
    assert f"{bad}:2:" in capsys.readouterr().err.replace("\n", "")
    assert main(["report", str(tmp_path / "absent"), "-q"]) == 2


def test_thresholds_from_run_json(chaos_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(chaos_run, run_dir)
    (run_dir / "mine.yaml").write_text("- lost(stamp) == 0\n")
    info = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps(info | {"thresholds": "mine.yaml"}))
    v = build_report(run_dir)
    assert v.status == "pass" and v.results[0]["text"] == "lost(stamp) == 0"
    assert (run_dir / "index.html").is_file()


def test_verdict_prints_like_the_cli(reported: tuple[Path, object]) -> None:
    from rich.console import Console

    _, v = reported
    console = Console(record=True, width=200)
    v.print(console)
    text = console.export_text()
    assert "recovery(broker-kill) <= 2s" in text and "verdict: FAIL" in text and "index.html" in text


def test_each_experiment_has_its_section_entry(chaos_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(chaos_run, run_dir)
    rungen.write_experiments(run_dir)
    v = build_report(run_dir, out_dir=tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "analysis.json").read_text())
    assert [e["title"] for e in summary["experiments"]] == [r.title for r in rungen.experiment_records()]
    html = (tmp_path / "out" / "index.html").read_text()
    section = html[html.index('<section id="experiments">'):html.index('<section id="recovery">')]
    for title, status, style in [("Broker kill", "completed", "pass"), ("Registry crash", "deviated", "fail"),
                                 ("Database partition", "aborted", "fail"), ("Random monkey", "interrupted", "error")]:
        assert f'{title} <span class="status {style}">{status}</span>' in section
    assert "chaos/experiments/broker-kill.yaml" in section
    assert "Deviated: the steady state did not hold after the method." in section
    assert "steady state not met before the method" in section
    # per probe, before and after, with the value
    assert '<td>stamp-health</td><td><span class="status pass">ok</span> <code>200</code></td>' \
           '<td><span class="status fail">not met</span> <code>503</code></td>' in section
    assert '<td>postgres-answers</td><td><span class="status fail">not met</span> <code>False</code></td>' \
           '<td><span class="muted">not checked</span></td>' in section
    assert v.analysis is not None and len(v.analysis.run.experiments) == 4


def test_a_run_without_experiments_has_no_experiment_section(reported: tuple[Path, object]) -> None:
    out, _ = reported
    assert 'id="experiments"' not in (out / "index.html").read_text()
    assert json.loads((out / "analysis.json").read_text())["experiments"] == []


def test_cli_a_broken_analysis_exits_3_in_one_line_and_debug_adds_the_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = rungen.make_steady_run(tmp_path / "run", seconds=5)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = blocker / "report"  # a directory cannot be made inside a file: writing the report fails
    assert main(["report", str(run_dir), "--out", str(out), "-q"]) == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "the analysis failed" in err and "a-file" in err
    assert main(["--debug", "report", str(run_dir), "--out", str(out), "-q"]) == 3
    assert "Traceback" in capsys.readouterr().err
