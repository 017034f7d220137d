"""The experiment's own record (experiments.jsonl): written when a run ends, whatever its status, and shown
in the report. Against a real Tansu broker, a real proxy server and a real client process."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import psutil

from chaos.probes import wait_for
from chaos.runner import run_experiment, start_experiment
from rundir.journal import ExperimentJournal, FaultJournal
from rundir.write import write_run_info, write_samples
from stack.processes import free_port
from stack.state import LaunchSpec

# connects once and exits when the connection closes: a client that does not reconnect
ONE_CONNECTION_CLIENT = """
import socket, sys
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])))
print("connected", flush=True)
while sock.recv(1024):
    pass
"""


def nobody_listens(tmp_path: Path) -> Path:
    """An experiment whose steady state cannot hold: nobody listens on the port its probe asks."""
    path = tmp_path / "nobody.yaml"
    path.write_text(f"""title: nobody listens
steady-state-hypothesis:
  probes:
    - {{name: nobody-answers, type: tcp, address: "127.0.0.1:{free_port()}"}}
method:
  - {{fault: kill, target: broker}}
""")
    return path


def run(exp: Path, run_dir: Path, stack, **kwargs):
    return run_experiment(exp, run_dir, state_path=stack.state_path, log=lambda m: None, **kwargs)


def test_completed_experiment_records_the_steady_state_before_and_after(stack, tmp_path):
    stack.add_broker()
    exp = tmp_path / "pause.yaml"
    exp.write_text("""title: broker pause
steady-state-hypothesis:
  within: 15
  probes:
    - {name: broker-answers, type: kafka, target: broker}
    - {name: broker-process, type: process, target: broker}
method:
  - {name: broker-pause, fault: pause, target: broker, duration: 0.3}
""")
    run_dir = tmp_path / "run"
    result = run(exp, run_dir, stack)
    assert result.status == "completed", result

    (record,) = ExperimentJournal(run_dir).read()
    assert record["title"] == "broker pause" and record["file"] == str(exp)
    assert record["status"] == "completed" and record["deviated"] is False and record["error"] is None
    assert record["started_at"] < record["ended_at"]
    expected = [{"name": "broker-answers", "ok": True, "value": True},
                {"name": "broker-process", "ok": True, "value": True}]
    assert record["steady_state_before"] == expected and record["steady_state_after"] == expected
    (fault,) = FaultJournal(run_dir).read()
    assert record["fault_ids"] == [fault["fault_id"]]
    assert record["started_at"] <= fault["started_at"] < fault["healed_at"] <= record["ended_at"]


def test_steady_state_not_met_before_aborts_and_is_recorded(stack, tmp_path):
    stack.add_broker()
    run_dir = tmp_path / "run"
    assert run(nobody_listens(tmp_path), run_dir, stack).status == "aborted"
    assert stack.part("broker").process() is not None, "nothing was injected"
    assert FaultJournal(run_dir).read() == []

    (record,) = ExperimentJournal(run_dir).read()
    assert record["status"] == "aborted" and record["error"] == "steady state not met before the method"
    assert record["steady_state_before"] == [{"name": "nobody-answers", "ok": False, "value": False}]
    assert record["steady_state_after"] == [] and record["fault_ids"] == [] and record["deviated"] is False


def test_a_target_that_is_not_ours_aborts_before_the_steady_state(stack, tmp_path):
    run_dir = tmp_path / "run"
    exp = tmp_path / "ghost.yaml"
    exp.write_text("title: ghost\nmethod:\n  - {fault: kill, target: ghost}\n")
    result = run(exp, run_dir, stack)
    assert result.status == "aborted"
    (record,) = ExperimentJournal(run_dir).read()
    assert record["status"] == "aborted" and "not a part of the running stack" in record["error"]


def test_steady_state_not_met_after_is_recorded_as_deviated(stack, toxiproxy, echo, tmp_path):
    proxy = toxiproxy.create_proxy("echo", "127.0.0.1:0", f"127.0.0.1:{echo.port}")
    host, port = proxy["listen"].rsplit(":", 1)
    log = tmp_path / "client.log"
    spec = LaunchSpec(argv=[sys.executable, "-c", ONE_CONNECTION_CLIENT, host, port], log=str(log))
    stack.add_process("client", spec, proxy["listen"], f"tcp://127.0.0.1:{echo.port}")
    assert wait_for(lambda: log.exists() and "connected" in log.read_text(), 10) is not None, "no connection"
    exp = tmp_path / "down.yaml"
    exp.write_text("""title: the client survives the link going down
steady-state-hypothesis:
  within: 1
  probes:
    - {name: client-running, type: process, target: client}
method:
  - {name: echo-down, fault: down, target: echo, target_kind: proxy, duration: 0.5}
""")
    run_dir = tmp_path / "run"
    result = run(exp, run_dir, stack, toxiproxy_url=toxiproxy.url)
    assert result.status == "deviated", result
    assert toxiproxy.proxy("echo")["enabled"] is True, "the link itself was healed"

    (record,) = ExperimentJournal(run_dir).read()
    assert record["status"] == "deviated" and record["deviated"] is True
    assert record["steady_state_before"] == [{"name": "client-running", "ok": True, "value": True}]
    assert record["steady_state_after"] == [{"name": "client-running", "ok": False, "value": False}]
    (fault,) = FaultJournal(run_dir).read()
    assert fault["outcome"] == "healed" and record["fault_ids"] == [fault["fault_id"]]


def test_a_stopped_background_experiment_records_interrupted(stack, tmp_path):
    stack.add_broker()
    exp = tmp_path / "long.yaml"
    exp.write_text("""title: long pause
steady-state-hypothesis:
  probes:
    - {name: broker-answers, type: kafka, target: broker}
timeline:
  - {name: broker-pause, at: 0, duration: 60, fault: pause, target: broker}
""")
    run_dir = tmp_path / "run"
    handle = start_experiment(str(exp), run_dir, state_path=stack.state_path, log=lambda m: None)
    assert wait_for(lambda: stack.part("broker").process().status() == psutil.STATUS_STOPPED, 10) is not None
    assert handle.running
    result = handle.stop()
    assert result.status == "interrupted" and not handle.running

    (record,) = ExperimentJournal(run_dir).read()
    assert record["status"] == "interrupted" and record["file"] == str(exp)
    assert record["steady_state_before"] == [{"name": "broker-answers", "ok": True, "value": True}]
    assert record["steady_state_after"] == [], "not checked after an interrupt"
    assert len(record["fault_ids"]) == 1 and FaultJournal(run_dir).read()[0]["outcome"] == "healed"


def load_run_dir(path: Path, seconds: int = 5) -> Path:
    """A run directory as a load run leaves it (run.json, samples), for the chaos to add its journals to."""
    now = time.time()
    write_run_info(path, {"run_id": path.name, "scenario": "chaos-record", "started_at": now, "ended_at": now + seconds})
    n = 10 * seconds
    write_samples(path, {"ts_intended": [None] * n, "ts_start": [now + i / 10 for i in range(n)],
                         "type": ["http"] * n, "name": ["GET /"] * n, "latency_ms": [5.0] * n, "ok": [True] * n,
                         "bytes": [1] * n, "error": [None] * n, "key": [None] * n, "process": ["host:1"] * n})
    return path


def test_the_report_shows_each_experiment(stack, tmp_path):
    """The records real experiments wrote into a load run's directory: the report has a section for them."""
    from analysis.report import build_report

    stack.add_broker()
    run_dir = load_run_dir(tmp_path / "run")
    exp = tmp_path / "pause.yaml"
    exp.write_text("""title: broker pause under load
steady-state-hypothesis:
  probes:
    - {name: broker-answers, type: kafka, target: broker}
method:
  - {name: broker-pause, fault: pause, target: broker, duration: 0.2}
""")
    assert run(exp, run_dir, stack).status == "completed"
    assert run(nobody_listens(tmp_path), run_dir, stack).status == "aborted"

    verdict = build_report(run_dir)
    summary = verdict.analysis.summary()
    assert [e["status"] for e in summary["experiments"]] == ["completed", "aborted"]
    html = verdict.report_path.read_text()
    assert 'id="experiments"' in html
    assert "broker pause under load" in html and "nobody listens" in html
    assert '<span class="status pass">completed</span>' in html
    assert '<span class="status fail">aborted</span>' in html
    assert "broker-answers" in html and "nobody-answers" in html and "not checked" in html
