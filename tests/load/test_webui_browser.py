"""The web UI in a real browser (Debian's chromium, headless), as a person uses it: no --autostart.

Fill the form and press Start; see users and samples; inject a fault from the Chaos tab and see it in
the journal and on the Live chart; press Stop; open the report from the Report tab and find the fault in
it. Screenshots go to the run directory; the pages log no console error. A form with a bad value is
refused with the reason and nothing starts.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from webui_support import CHROMIUM, WebUI, chromium_page

FAULT = "broker-latency"  # a Toxiproxy link fault: the test stack has the link (a container fault it has not)


def _web_ui(stack_state_path: str, run_dir: Path, thresholds: Path) -> WebUI:
    # -t is the form's run time: the run stops by itself even if the test fails half way
    thresholds.write_text("- lost == 0\n- unexpected == 0\n- p95(POST /stamp) < 10s\n")
    return WebUI("bridge.py", stack_state_path, run_dir, "-t", "90s", "-u", "4", "-r", "4", "--rate", "6",
                 "--drain", "5", "--thresholds", str(thresholds))


def _needs_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api")


def _open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    page.locator(f'#bridgestorm-panel[data-tab="bridgestorm-{name.lower()}"]').wait_for(timeout=10_000)


@pytest.mark.browser
def test_start_inject_stop_and_read_the_report_from_the_web_ui(stack_state_path, tmp_path: Path) -> None:
    _needs_chromium()
    run_dir = tmp_path / "run"
    problems: list[str] = []
    with _web_ui(stack_state_path, run_dir, tmp_path / "checks.yaml") as ui, \
            chromium_page(f"http://127.0.0.1:{ui.port}/", problems) as page:
        page.get_by_label("Number of users").fill("4")
        page.get_by_role("button", name="Start").click()

        # users, and samples on disk
        page.get_by_text("RUNNING").first.wait_for(timeout=20_000)
        page.wait_for_function("() => document.body.innerText.includes('POST /stamp')", timeout=30_000)
        deadline = time.monotonic() + 30
        while not list((run_dir / "samples").glob("*.parquet")) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert list((run_dir / "samples").glob("*.parquet")), "no samples written while running"

        # the Chaos tab: a container fault is disabled with its reason, the link fault goes in
        _open_tab(page, "Chaos")
        page.wait_for_function("document.querySelectorAll('#bridgestorm-fault option').length > 1")
        assert page.locator("#bridgestorm-fault option[disabled]").count() >= 1
        assert "no container" in page.locator("#bridgestorm-reason").inner_text()
        page.select_option("#bridgestorm-fault", f"{FAULT}:{FAULT}")
        page.click("#bridgestorm-inject")
        page.get_by_text(f"injecting {FAULT}").wait_for(timeout=10_000)
        page.locator("tr", has_text=FAULT).filter(has_text="active").first.wait_for(timeout=20_000)
        page.locator(".bs-heal-one", has_text=FAULT).wait_for(timeout=10_000)
        page.screenshot(path=str(run_dir / "webui-chaos.png"), full_page=True)

        # the Live tab: the fault's window on the chart, lines of round trips and lag
        _open_tab(page, "Live")
        page.locator(f'#bridgestorm-live-charts rect.bs-fault[data-fault="{FAULT}"]').first.wait_for(timeout=20_000)
        page.locator('#bridgestorm-live-charts polyline[data-series="e2e"]').wait_for(timeout=20_000)
        assert page.locator("#bridgestorm-live-charts svg").nth(1).locator("polyline").count() >= 1
        page.screenshot(path=str(run_dir / "webui-live.png"), full_page=True)

        _open_tab(page, "Chaos")
        page.locator(".bs-heal-one", has_text=FAULT).click()
        page.get_by_text(f"healed {FAULT}").wait_for(timeout=30_000)

        # Stop: the report is written in the background and opened from the Report tab
        page.get_by_role("button", name="Stop").click()
        _open_tab(page, "Report")
        page.locator("#bridgestorm-report-steps").wait_for(timeout=20_000)
        page.locator("#bridgestorm-report-link").wait_for(timeout=120_000)
        page.screenshot(path=str(run_dir / "webui-report-tab.png"), full_page=True)
        _open_tab(page, "Thresholds")
        page.locator("#bridgestorm-verdict").wait_for(timeout=10_000)
        verdict = page.locator("#bridgestorm-verdict b").inner_text()
        assert verdict in ("Final verdict: PASS", "Final verdict: FAIL"), verdict
        _open_tab(page, "Report")
        with page.context.expect_page() as opened:
            page.locator("#bridgestorm-report-link").click()
        report = opened.value
        report.wait_for_load_state("load")
        report.locator("#faults tbody tr", has_text=FAULT).first.wait_for(timeout=10_000)
        report.screenshot(path=str(run_dir / "webui-report.png"), full_page=True)
        assert report.locator("#verdict").inner_text().split()[0].upper() == verdict.split()[-1]
    assert problems == [], problems
    for shot in ("webui-chaos.png", "webui-live.png", "webui-report-tab.png", "webui-report.png"):
        assert (run_dir / shot).stat().st_size > 10_000, (shot, ui.output[-3000:])
    journal = [json.loads(line) for line in (run_dir / "chaos.jsonl").read_text().splitlines()]
    assert [(j["name"], j["outcome"]) for j in journal] == [(FAULT, "healed")], journal
    analysis = json.loads((run_dir / "analysis.json").read_text())
    assert [f["name"] for f in analysis["faults"]] == [FAULT]
    assert analysis["loss"]["totals"]["sent"] > 0


TIMELINE = """title: web UI timeline
timeline:
  - {name: early-latency, at: 1, duration: 2, fault: latency, target: broker, target_kind: proxy,
     parameters: {latency: 20}}
  - {name: late-latency, at: 600, duration: 2, fault: latency, target: broker, target_kind: proxy,
     parameters: {latency: 20}}
"""


@pytest.mark.browser
def test_the_form_refuses_bad_values_and_starts_the_experiment_it_names(stack_state_path, tmp_path: Path) -> None:
    """Bad values: refused in the page, nothing starts. Then a valid experiment from the form: its planned
    timeline in the Chaos tab, what ran and what is next."""
    _needs_chromium()
    run_dir = tmp_path / "run"
    bad = tmp_path / "bad.yaml"
    bad.write_text("title: bad\ntimeline:\n  - {at: 1, fault: kill, target: broker, signal: SIGKILL}\n")
    good = tmp_path / "timeline.yaml"
    good.write_text(TIMELINE)
    problems: list[str] = []
    with _web_ui(stack_state_path, run_dir, tmp_path / "checks.yaml") as ui, \
            chromium_page(f"http://127.0.0.1:{ui.port}/", problems) as page:
        page.get_by_text("Custom parameters").click()
        for field, value, says in (("scenario", "no-such-scenario", "unknown scenario 'no-such-scenario'"),
                                   ("rate", "-3", "rate"), ("chaos", str(bad), f"{bad}:3")):
            box = page.get_by_label(field, exact=False).first
            previous = box.input_value()
            box.fill(value)
            page.get_by_role("button", name="Start").click()
            page.get_by_text(says).first.wait_for(timeout=10_000)
            box.fill(previous)
        assert page.get_by_role("button", name="Start").is_visible()  # still the form: nothing ran
        assert not (run_dir / "samples").exists()

        page.get_by_label("chaos", exact=False).first.fill(str(good))
        page.get_by_role("button", name="Start").click()
        page.get_by_text("RUNNING").first.wait_for(timeout=20_000)
        _open_tab(page, "Chaos")
        page.locator("#bridgestorm-timeline tr.bs-done", has_text="early-latency").wait_for(timeout=30_000)
        late = page.locator("#bridgestorm-timeline tr.bs-next", has_text="late-latency")
        late.wait_for(timeout=10_000)
        assert "in " in late.inner_text()
        page.screenshot(path=str(run_dir / "webui-timeline.png"), full_page=True)
        page.get_by_role("button", name="Stop").click()
        _open_tab(page, "Report")
        page.locator("#bridgestorm-report-link").wait_for(timeout=120_000)
    assert problems == [], problems
    assert "error: scenario: unknown scenario 'no-such-scenario'" in ui.output
    journal = [json.loads(line) for line in (run_dir / "chaos.jsonl").read_text().splitlines()]
    assert [(j["name"], j["outcome"]) for j in journal] == [("early-latency", "healed")], journal
