"""A Locust web UI process for tests (no --autostart), and a headless chromium page on it."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from stack.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
LOCUST = str(Path(sys.executable).with_name("locust"))
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


class WebUI:
    """``with WebUI(files, stack_state_path, run_dir, *args) as ui:`` ... ``ui.port``; ``ui.output`` after it."""

    def __init__(self, locustfiles: str, stack_state_path: str, run_dir: Path, *args: str) -> None:
        self.port = free_port()
        files = ",".join(str(ROOT / "locustfiles" / f) for f in locustfiles.split(","))
        self.cmd = [LOCUST, "-f", files, "--web-host", "127.0.0.1", "--web-port", str(self.port), "--stack",
                    "external", "--stack-state", stack_state_path, "--run-dir", str(run_dir), *args]
        self.env = dict(os.environ, BRIDGESTORM_STATE=stack_state_path)
        self.proc: subprocess.Popen | None = None
        self.output = ""

    def __enter__(self) -> "WebUI":
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.check_alive("starting")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return self
            except OSError:
                time.sleep(0.2)
        self.__exit__()
        raise AssertionError(f"the web UI did not listen on {self.port}")

    def check_alive(self, doing: str) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"locust exited with {self.proc.returncode} while {doing}: "
                                 f"{self.proc.stdout.read()[-3000:]}")

    def __exit__(self, *exc: object) -> None:
        """Quit as Ctrl-C would (SIGTERM): Locust stops, writes what is pending, and exits."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            self.output, _ = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            self.output, _ = proc.communicate()


@contextlib.contextmanager
def chromium_page(url: str, problems: list[str]) -> Iterator[object]:
    """A page of Debian's chromium on ``url``; console errors and page errors of every page go to ``problems``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = browser.new_context(viewport={"width": 1366, "height": 900})
            context.on("page", lambda page: watch(page, problems))
            page = context.new_page()
            page.goto(url, wait_until="load")
            yield page
        finally:
            browser.close()


def watch(page, problems: list[str]) -> None:
    page.on("console", lambda m: problems.append(f"{page.url}: console {m.type}: {m.text}")
            if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"{page.url}: page error: {e}"))
