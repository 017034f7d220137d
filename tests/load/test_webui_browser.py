"""The web UI in a real browser (Debian's chromium, headless): start a run, inject a fault from the
Chaos controls, see it in the Chaos tab, see live thresholds, save a screenshot."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stack.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
LOCUST = str(Path(sys.executable).with_name("locust"))

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def _wait_http(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"the web UI did not listen on {port}")


@pytest.mark.browser
def test_chaos_and_thresholds_tabs(stack_state_path, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    port = free_port()
    run_dir = tmp_path / "run"
    cmd = [LOCUST, "-f", str(ROOT / "locustfiles" / "stamping.py"), "--web-host", "127.0.0.1", "--web-port",
           str(port), "--stack", "external", "--stack-state", stack_state_path, "--run-dir", str(run_dir),
           "-t", "40s", "--autostart", "-u", "1", "-r", "1", "--autoquit", "0", "--drain", "2"]
    # --autostart with -t bounds the run even if the test fails half way
    proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, BRIDGESTORM_STATE=stack_state_path),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    shot = run_dir / "webui-chaos.png"
    try:
        _wait_http(port)
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                page = browser.new_page(viewport={"width": 1366, "height": 900})
                page.goto(f"http://127.0.0.1:{port}/", wait_until="load")
                page.wait_for_selector("#bridgestorm-chaos-controls")
                page.wait_for_function("document.querySelectorAll('#bridgestorm-fault option').length > 0")
                page.select_option("#bridgestorm-fault", "broker-latency:broker-latency")
                page.click("#bridgestorm-inject")
                page.wait_for_function(
                    "document.getElementById('bridgestorm-chaos-msg').textContent.includes('injecting')")
                page.get_by_role("tab", name="Chaos").click()
                # the fault appears in the tab (live, from the active-fault file)
                page.get_by_text("broker-latency").first.wait_for(timeout=20_000)
                page.get_by_text("active").first.wait_for(timeout=20_000)
                page.screenshot(path=str(shot), full_page=True)
                page.click("#bridgestorm-heal")
                page.get_by_text("healed", exact=True).first.wait_for(timeout=20_000)
                page.get_by_role("tab", name="Thresholds").click()
                page.get_by_text("p95(POST /stamp) < 50ms").wait_for(timeout=20_000)
                page.screenshot(path=str(run_dir / "webui-thresholds.png"), full_page=True)
            finally:
                browser.close()
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert shot.is_file() and shot.stat().st_size > 10_000, out[-3000:]
    journal = (run_dir / "chaos.jsonl").read_text()
    assert '"broker-latency"' in journal and '"healed"' in journal
