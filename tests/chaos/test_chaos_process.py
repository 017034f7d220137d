"""The local-process target against a real Tansu broker registered like the stack does it."""
from __future__ import annotations

import subprocess
import sys

import psutil
import pytest

from chaos.probes import kafka_answers, wait_for
from chaos.runner import run_experiment
from chaos.experiment import parse
from chaos.targets import ChaosRefused, TargetError
from chaos.targets.process import ProcessTarget


def test_kill_and_restart_from_launch_spec(stack):
    address = stack.add_broker()
    target = ProcessTarget("broker", stack.state_path)
    old = stack.part("broker")

    target.kill()
    assert not psutil.pid_exists(old.pid) or psutil.Process(old.pid).status() == psutil.STATUS_ZOMBIE
    assert not target.answers()
    with pytest.raises(TargetError):
        target.pause()  # nothing running to pause

    pid = target.start()
    new = stack.part("broker")
    assert new.pid == pid != old.pid
    assert new.create_time == pytest.approx(psutil.Process(pid).create_time())
    assert wait_for(lambda: kafka_answers(address), 15) is not None

    restarted = target.restart()
    assert restarted != pid and stack.part("broker").pid == restarted
    assert wait_for(target.answers, 15) is not None


def test_pause_and_resume(stack):
    """How fast (the 100 ms target) is `benchmarks/chaos_timings.py`'s figure, not an assertion."""
    address = stack.add_broker()
    target = ProcessTarget("broker", stack.state_path)
    target.pause()
    assert not kafka_answers(address, timeout=0.5), "a stopped broker does not answer"
    assert not target.answers()
    target.resume()
    assert wait_for(lambda: kafka_answers(address), 5) is not None


def test_refuses_processes_the_stack_did_not_start(stack):
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(ChaosRefused, match="not a process the stack started"):
            ProcessTarget.by_pid(stranger.pid, stack.state_path)
        with pytest.raises(ChaosRefused, match="no part named 'ghost'"):
            ProcessTarget("ghost", stack.state_path)
        # a recorded pid whose start time does not match is someone else's now
        from stack.state import LaunchSpec, Part
        with stack.state_file.update() as state:
            state.parts["impostor"] = Part(name="impostor", kind="process", address="", health="tcp://127.0.0.1:1",
                                           pid=stranger.pid, create_time=1.0, launch=LaunchSpec(argv=["true"]))
        with pytest.raises(ChaosRefused, match="belongs to another process"):
            ProcessTarget("impostor", stack.state_path).kill()
        assert stranger.poll() is None, "the stranger was not touched"
    finally:
        stranger.kill()
        stranger.wait()


def test_experiment_journal_shows_timings(stack, tmp_path):
    stack.add_broker()
    exp = parse("""
title: kill, pause, restart
steady-state-hypothesis:
  within: 15
  probes:
    - {name: broker, type: kafka, target: broker}
timeline:
  - {at: 0.2, duration: 1.0, fault: kill, target: broker}
  - {at: 1.6, duration: 0.5, fault: pause, target: broker}
  - {at: 2.4, duration: 0, fault: restart, target: broker}
""")
    result = run_experiment(exp, tmp_path / "run", state_path=stack.state_path, log=lambda m: None)
    assert result.status == "completed", result
    from rundir.journal import FaultJournal
    lines = FaultJournal(tmp_path / "run").read()
    assert [l["action"] for l in lines] == ["kill", "pause", "restart"]
    for line in lines:
        assert line["outcome"] == "healed" and line["error"] is None
        assert line["target"] == "broker" and line["target_kind"] == "process"
        assert line["healed_at"] >= line["started_at"] > 0
        assert line["observed"]["down_after_s"] is not None and line["observed"]["answered_after_s"] is not None
    kill = lines[0]
    assert kill["parameters"] == {"signal": "SIGKILL"}
    assert 0.9 <= kill["healed_at"] - kill["started_at"] <= 1.3
    assert kill["observed"]["inject_ms"] < 100 and kill["observed"]["heal_ms"] < 100
    assert lines[1]["observed"]["inject_ms"] < 100 and lines[1]["observed"]["heal_ms"] < 100
