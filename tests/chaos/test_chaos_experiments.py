"""Experiment files, the `python -m chaos` CLI, healing after interrupted runs, and Chaos Toolkit interop."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import sys
from pathlib import Path

import psutil
import pytest

from chaos.experiment import ExperimentError, load, parse
from rundir.journal import FaultJournal
from chaos.probes import kafka_answers, wait_for

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "chaos" / "experiments").glob("*.yaml"))


def chaos_cli(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), **kwargs.pop("env", {})}
    return subprocess.Popen([sys.executable, "-m", "chaos", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_experiments_are_valid(path):
    exp = load(path)
    plan = exp.plan()
    assert plan.faults and plan.end <= exp.max_duration


def test_shipped_set_is_complete():
    names = {p.stem for p in SHIPPED}
    assert {"broker-kill", "broker-kill-process", "broker-kill-container", "broker-pause", "broker-restart-loop",
            "broker-latency", "connection-resets", "database-partition", "registry-crash", "random-monkey"} <= names
    latency = load(REPO / "chaos/experiments/broker-latency.yaml").timeline[0]
    assert latency.parameters == {"latency": 200, "jitter": 50, "stream": "downstream"}


def test_bad_file_names_file_line_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("""title: broken
steady-state-hypothesis:
  probes:
    - name: p
      type: smoke
timeline:
  - at: 1
    duration: 2
    fault: latency
    target: broker
    target_kind: proxy
  - at: -1
    duraton: 2
    fault: kill
    target: broker
""")
    with pytest.raises(ExperimentError) as err:
        load(bad)
    text = str(err.value)
    assert f"{bad}:5: steady-state-hypothesis.probes.0.type:" in text
    assert f"{bad}:12: timeline.1.at: Input should be greater than or equal to 0" in text
    assert f"{bad}:13: timeline.1.duraton: unknown field" in text
    assert f"{bad}:12: timeline.1.duration: required field is missing" in text


@pytest.mark.parametrize("text,expected", [
    ("title: x\ntimeline:\n  - {at: 1, duration: 1, fault: explode, target: broker, target_kind: process}\n",
     "<e>:3: timeline.0.fault: unknown fault 'explode' for target_kind process"),
    ("title: x\ntimeline:\n  - at: 1\n    duration: 1\n    fault: latency\n    target: b\n    target_kind: proxy\n"
     "    parameters:\n      latency: fast\n",
     "<e>:9: timeline.0.parameters.latency: must be a whole number >= 0, got 'fast'"),
    ("title: x\nmethod:\n  - {fault: kill, target: broker, parameters: {signal: SIGNOPE}}\n",
     "<e>:3: method.0.parameters.signal: unknown signal 'SIGNOPE'"),
    ("title: x\n", "<e>:1: give exactly one of `method`, `timeline` or `random`"),
    ("title: x\ntimeline: [\n", "<e>:3: YAML syntax"),
    ("title: x\nrandom: {seed: 1, duration: 10, interval: [5, 1], fault_duration: [1, 2],\n"
     "  faults: [{fault: pause, target: broker}]}\n", "<e>:2: random: interval must be [min, max]"),
])
def test_bad_experiments(text, expected):
    with pytest.raises(ExperimentError) as err:
        parse(text, "<e>")
    assert expected in str(err.value)


def test_random_form_is_repeatable():
    text = """title: r
random:
  seed: 7
  duration: 60
  interval: [1, 5]
  fault_duration: [1, 3]
  faults:
    - {fault: pause, target: broker}
    - {fault: latency, target: broker, target_kind: proxy, parameters: {latency: 10}}
"""
    first, second = parse(text).plan(), parse(text).plan()
    assert [(p.at, p.duration, p.name) for p in first.faults] == [(p.at, p.duration, p.name) for p in second.faults]
    assert all(a.at + a.duration <= b.at for a, b in zip(first.faults, first.faults[1:])), "one at a time"
    other = parse(text.replace("seed: 7", "seed: 8")).plan()
    assert [p.at for p in other.faults] != [p.at for p in first.faults]


def test_list_shows_experiments_and_faults():
    proc = chaos_cli("list")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "broker-latency.yaml" in out and "reset_peer" in out and "docker unpause" in out


def _interrupted_run(stack, toxiproxy, echo, tmp_path, how: str):
    stack.add_broker()
    toxiproxy.create_proxy("echo", "127.0.0.1:0", f"127.0.0.1:{echo.port}")
    exp = tmp_path / "long.yaml"
    exp.write_text("""title: long
timeline:
  - {at: 0, duration: 60, fault: latency, target: echo, target_kind: proxy, parameters: {latency: 1000}}
  - {at: 0, duration: 60, fault: down, target: echo, target_kind: proxy}
  - {at: 0, duration: 60, fault: pause, target: broker}
  - {at: 0, duration: 60, fault: kill, target: broker, target_kind: process}
""")
    run_dir = tmp_path / "run"
    proc = chaos_cli("run", str(exp), "--run-dir", str(run_dir), "--state", stack.state_path,
                     "--toxiproxy-url", toxiproxy.url)
    # wait until everything is injected
    assert wait_for(lambda: len(toxiproxy.toxics("echo")) == 1 and stack.part("broker").process() is None, 20) is not None
    if how == "sigint":
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # say where it hung: every thread's stack (chaos/cli.py, SIGUSR1)
            proc.send_signal(signal.SIGUSR1)
            time.sleep(1)
            proc.kill()
            out, _ = proc.communicate()
            pytest.fail(f"Ctrl-C did not end the run within 60 s; its output and threads:\n{out[-8000:]}")
        assert proc.returncode == 3, out  # interrupted: the run did not go as planned
        assert "interrupted: healing" in out
    else:
        proc.kill()
        proc.communicate(timeout=30)
        heal = chaos_cli("heal", "--state", stack.state_path, "--toxiproxy-url", toxiproxy.url)
        out, _ = heal.communicate(timeout=60)
        assert heal.returncode == 0, out
        assert "healed" in out
    # nothing injected is left
    assert toxiproxy.toxics("echo") == []
    assert toxiproxy.proxy("echo")["enabled"] is True
    part = stack.part("broker")
    assert part.process() is not None and part.process().status() != psutil.STATUS_STOPPED
    assert wait_for(lambda: kafka_answers(part.address), 15) is not None
    lines = FaultJournal(run_dir).read()
    assert sorted(l["action"] for l in lines) == ["down", "kill", "latency", "pause"]
    assert all(l["outcome"] == "healed" and l["healed_at"] for l in lines), lines
    from chaos.active import ActiveFaults
    assert ActiveFaults(stack_state=stack.state_path).all() == {}


def test_ctrl_c_heals_everything(stack, toxiproxy, echo, tmp_path):
    _interrupted_run(stack, toxiproxy, echo, tmp_path, "sigint")


def test_heal_after_a_killed_run_leaves_nothing_injected(stack, toxiproxy, echo, tmp_path):
    _interrupted_run(stack, toxiproxy, echo, tmp_path, "sigkill")


def test_chaostoolkit_calls_the_actions(stack, tmp_path):
    address = stack.add_broker()
    experiment = {
        "version": "1.0.0",
        "title": "bridgestorm actions from Chaos Toolkit",
        "description": "pause the broker through chaos.actions, then resume it",
        "steady-state-hypothesis": {
            "title": "broker answers",
            "probes": [{"type": "probe", "name": "broker-answers", "tolerance": True,
                        "provider": {"type": "python", "module": "chaos.actions", "func": "kafka_answers",
                                     "arguments": {"address": address}}}],
        },
        "method": [
            {"type": "action", "name": "pause-broker",
             "provider": {"type": "python", "module": "chaos.actions", "func": "pause_process",
                          "arguments": {"name": "broker", "state": stack.state_path}}},
            {"type": "probe", "name": "broker-silent",
             "provider": {"type": "python", "module": "chaos.actions", "func": "process_answers",
                          "arguments": {"name": "broker", "state": stack.state_path}}},
            {"type": "action", "name": "resume-broker",
             "provider": {"type": "python", "module": "chaos.actions", "func": "resume_process",
                          "arguments": {"name": "broker", "state": stack.state_path}}},
        ],
        "rollbacks": [
            {"type": "action", "name": "resume-broker",
             "provider": {"type": "python", "module": "chaos.actions", "func": "resume_process",
                          "arguments": {"name": "broker", "state": stack.state_path}}},
        ],
    }
    path = tmp_path / "ctk.json"
    path.write_text(json.dumps(experiment))
    journal = tmp_path / "journal.json"
    ctk = Path(sys.executable).parent / "chaos"
    proc = subprocess.run([str(ctk), "--no-version-check", "run", "--journal-path", str(journal),
                           "--rollback-strategy", "always", str(path)],
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(journal.read_text())
    assert result["status"] == "completed", result
    runs = {r["activity"]["name"]: r for r in result["run"]}
    assert runs["pause-broker"]["output"] == {"name": "broker", "paused": True}
    assert runs["broker-silent"]["output"] is False
    assert runs["resume-broker"]["output"] == {"name": "broker", "paused": False}
    assert result["rollbacks"][0]["output"] == {"name": "broker", "paused": False}
    # SIGCONT is delivered asynchronously too: the resumed broker answers soon, not at once
    assert wait_for(lambda: kafka_answers(address), 10) is not None, "the resumed broker answers again"
