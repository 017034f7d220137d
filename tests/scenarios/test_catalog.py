"""Every catalog scenario runs, in a short form, through Locust's own command line to a report.

A short run on a shared CI machine cannot promise the seeds' latencies, so
those floors are printed, not asserted, and the exit code may be 1 for them.
What must hold in any case, by name: every correctness threshold of the
scenario's own set passes (loss, duplicates, leaks, unexpected items,
recovery and drain times), and the run directory is complete. Raw events
that simulated nodes publish straight to the broker (kind `event`,
heartbeats) are acknowledged by the embedded memory-only broker and die with
it when a scenario kills it: no threshold set holds them to zero loss (see
analysis/thresholds/flagship.yaml). The drain waits for every acknowledged
item (up to 20 s here) and ends as soon as they are all stored.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = sorted(p.stem for p in (REPO / "scenarios").glob("*.conf"))
# the thresholds that say whether the system held, whatever the machine's speed
CORRECTNESS = {"lost", "duplicated", "leaked", "unexpected", "offered_ratio", "stalled", "unaccounted",
               "observed"}  # observed: what the system found (a trend the load put there, a cache that learned)
# how fast it came back after a fault: measured in every run (never "no data" or "error"), held to its
# limit by the full-length scenario; a short form prints it. Seen on this 2-core machine: replay 0.3-1.8 s,
# drain 2.7-8 s, recovery 1-3 s or "never": a short form leaves 13-18 s after the heal, and a workflow's p95
# can stay above 1.5 x the baseline for longer than that while the outbox replays
TIMED = {"recovery", "drain_time", "replay_time"}
# long enough for the scenario's first fault where it has one (the flagship: and for its recovery to show)
SHORT_RUN = {"flagship": "36s", "resilience": "28s", "registration": "20s", "burst-recovery": "20s",
             "introspection-burst": "8s", "poison-pill": "26s", "integration-patterns": "34s"}


def test_catalog_covers_the_seeds_table():
    assert set(SCENARIOS) >= {"flagship", "workflow", "stamping", "cross-service", "cross-service-without",
                              "resilience", "registration", "introspection-burst", "sustained", "burst-recovery",
                              "async-flow", "database-adapter", "integration-patterns"}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_short_form(scenario, tmp_path):
    run_dir = tmp_path / scenario
    cmd = [sys.executable, "-m", "locust", "--config", f"scenarios/{scenario}.conf",
           "-t", SHORT_RUN.get(scenario, "8s"), "--run-dir", str(run_dir), "--drain", "20"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    output = proc.stdout + proc.stderr
    # the run's own error lines first (Locust's summary fills the tail), then the tail
    tail = "\n".join(line for line in output.splitlines() if "ERROR" in line or "bridgestorm:" in line)[-2000:]
    tail += "\n...\n" + output[-3000:]
    # 3 only as the verdict "unknown" of a latency floor the load generator could not keep up with (a busy
    # CI machine: analysis/generator.py); checked below, once the analysis is read
    assert proc.returncode in (0, 1, 3), tail
    for part in ("run.json", "samples", "ledger", "truth", "analysis.json", "index.html"):
        assert (run_dir / part).exists(), f"{part} missing\n{tail}"
    analysis = json.loads((run_dir / "analysis.json").read_text())
    assert analysis["loss"]["totals"]["sent"] > 0, tail
    assert json.loads((run_dir / "run.json").read_text())["scenario"] == scenario, tail
    rows = analysis["thresholds"]
    assert rows, "the scenario has no threshold set"
    if proc.returncode == 3:
        unknown = [f"{r['text']}: {r['status']}" for r in rows if r["status"] not in ("pass", "fail")]
        assert analysis["verdict"] == "unknown" and all(": generator-limited" in u for u in unknown), (unknown, tail)
    for r in rows:  # the latency floors and the timed checks, for the log
        if r["metric"] not in CORRECTNESS:
            print(f"{scenario}: {r['text']}: {r['measured_display']} ({r['status']})")
    unmeasured = [f"{r['text']}: {r['status']}: {r['detail']}" for r in rows
                  if r["metric"] in TIMED and r["status"] not in ("pass", "fail")]
    assert not unmeasured, unmeasured
    # what the drain and the chaos runner said, to tell a slow bridge from a fault that was never healed
    notes = [line for line in (proc.stdout + proc.stderr).splitlines() if "drain:" in line or "chaos:" in line]
    failed = [f"{r['text']}: {r['measured_display']} ({r['status']}: {r['detail']})" for r in rows
              if r["metric"] in CORRECTNESS and r["status"] != "pass"]
    assert not failed, (failed, analysis["loss"]["by_kind"], notes)
    if scenario == "flagship":
        check_flagship_report_in_chromium(run_dir / "index.html", analysis, tmp_path / "flagship.png")


CHROMIUM = "/usr/bin/chromium"


def check_flagship_report_in_chromium(html: Path, analysis: dict, screenshot: Path) -> None:
    """The flagship's own report, opened in a real browser, shows the kill, its recovery and zero loss.

    A short run on a busy CI machine may end before the bridge is back to its
    baseline p95, so the recovery cell must show what analysis.json says: a
    time, or "not recovered".
    """
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    problems: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.goto(html.as_uri(), wait_until="load")
            assert page.locator("#verdict").is_visible()
            kill = page.locator("#faults tbody tr", has_text="broker-kill")
            assert kill.count() == 1, page.locator("#recovery").inner_text()
            cells = kill.locator("td").all_inner_texts()
            fault = next(f for f in analysis["faults"] if f["name"] == "broker-kill")
            recovery = cells[8].strip()
            if fault["recovered"]:
                assert recovery.endswith(" s") and float(recovery[:-2]) == fault["recovery_s"], cells
            else:
                assert recovery == "not recovered", cells
            for kind in ("workflow", "stamp", "introspection"):
                row = page.locator("#loss table").first.locator("tbody tr").filter(
                    has=page.locator("td:first-child", has_text=kind))
                cells = row.first.locator("td").all_inner_texts()
                assert cells[0] == kind and int(cells[1].replace(",", "")) > 0 and cells[4] == "0", cells
            images = page.locator("img")
            assert images.count() >= 2  # latency and throughput over time, fault windows shaded
            for i in range(images.count()):
                img = images.nth(i)
                img.scroll_into_view_if_needed()
                assert img.is_visible() and img.evaluate("e => e.complete && e.naturalWidth > 300")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert problems == []
