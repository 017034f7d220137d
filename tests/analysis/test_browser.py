"""The report in a real browser (Debian's chromium, headless): renders, charts visible, no console errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import rungen

from analysis.report import build_report

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


@pytest.mark.browser
def test_report_renders_in_chromium(chaos_run: Path, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    playwright = pytest.importorskip("playwright.sync_api")

    run_dir = tmp_path / "run"
    shutil.copytree(chaos_run, run_dir)
    base = rungen.make_steady_run(tmp_path / "base")
    build_report(run_dir, thresholds=None, baseline=base)
    html = run_dir / "index.html"

    problems: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 768})  # a laptop screen
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            page.goto(html.as_uri(), wait_until="load")

            assert page.locator("#verdict").is_visible()
            assert "NO THRESHOLDS" in page.locator("#verdict").inner_text()
            images = page.locator("img")
            assert images.count() == 6  # latency, throughput, memory, CPU, lag (ms), lag (messages)
            for i in range(images.count()):
                img = images.nth(i)
                img.scroll_into_view_if_needed()
                assert img.is_visible()
                natural = img.evaluate("e => [e.complete, e.naturalWidth, e.naturalHeight]")
                assert natural[0] and natural[1] > 300 and natural[2] > 100, natural
                box = img.bounding_box()
                assert box and box["width"] > 600  # scaled to the page, readable
            # nothing wider than the screen but the scrollable tables
            overflow = page.evaluate("document.documentElement.scrollWidth")
            assert overflow <= 1366
            assert page.locator("#baseline .worse").count() > 0
            assert page.locator("#names .worse").count() > 0  # deltas marked in the per-name table
            # every table fits a laptop screen without scrolling sideways
            wide = page.evaluate("[...document.querySelectorAll('.wrap')]"
                                 ".filter(e => e.scrollWidth > e.clientWidth).map(e => e.parentElement.id)")
            assert wide == []
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 50_000
            page.emulate_media(media="print")
            pdf = tmp_path / "report.pdf"
            page.pdf(path=str(pdf), format="A4", print_background=True)
            assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 50_000
        finally:
            browser.close()
    assert problems == []
