"""Start from the web UI's form, for every locustfile, and a scenario chosen in the form: over real HTTP.

Each case starts Locust's web UI (no --autostart) against the test stack, posts the form as the
browser does (``POST /swarm``, the form's field names), lets the form's run time end the load, and
waits for the report the Stop at its end writes in the background (``/bridgestorm/report/status``).
Then the run directory holds samples, the truth and a report, under the scenario's name.
"""
from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from webui_support import WebUI

FORM = {"user_count": "2", "spawn_rate": "2", "run_time": "5s", "host": ""}
CASES = [  # (locustfiles, the form's own fields, the scenario the run is named after)
    ("bridge.py", {}, "bridge"),
    ("workflows.py", {"rate": "4"}, "workflows"),
    ("stamping.py", {"rate": "8"}, "stamping"),
    ("introspection.py", {}, "introspection"),
    ("events.py", {"user_count": "1"}, "events"),
    ("bridge.py", {"scenario": "demo"}, "demo"),  # its conf: 3 users, 10/s for 6 s
    ("introspection.py,shapes/burst.py", {"scenario": "introspection-burst"}, "introspection-burst"),
]


def _get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=10) as resp:
        return json.loads(resp.read())


def _post_form(port: int, fields: dict[str, str]) -> dict:
    body = urllib.parse.urlencode(fields).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/swarm", data=body, method="POST",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _wait(what: str, check, timeout: float, ui: WebUI):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ui.check_alive(f"waiting for {what}")
        try:
            got = check()
        except OSError:
            got = None
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("locustfiles,fields,scenario", CASES, ids=[f"{c[0]}:{c[2]}" for c in CASES])
def test_the_form_starts_a_run_and_its_end_writes_the_report(locustfiles, fields, scenario, stack_state_path,
                                                             tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with WebUI(locustfiles, stack_state_path, run_dir, "--drain", "5") as ui:
        _wait("the web UI", lambda: _get(ui.port, "bridgestorm/report/status"), 60, ui)
        answer = _post_form(ui.port, FORM | fields)
        assert answer["success"], answer
        status = _wait("the report", lambda: (s := _get(ui.port, "bridgestorm/report/status"))["state"] in (
            "done", "failed") and s, 150, ui)
        assert status["state"] == "done", status
        assert [s["step"].split(":")[0] for s in status["steps"]] == [
            "waiting for the last samples", "draining", "analysing the run and writing the report"]
    out = ui.output
    info = json.loads((run_dir / "run.json").read_text())
    assert info["scenario"] == scenario, out[-3000:]
    assert info["started_at"] and info["ended_at"] > info["started_at"]
    analysis = json.loads((run_dir / "analysis.json").read_text())
    assert analysis["verdict"] == status["verdict"]
    assert sum(r["count"] for r in analysis["names"]) > 0, out[-3000:]
    if scenario == "demo":  # the conf's users, not the form's
        assert info["arguments"]["users"] == 3, info["arguments"]
