"""Bad input fails fast: exit 2, one line per problem naming the option or file:line, before anything starts.

"Before anything starts" is held by what is absent afterwards, never by a
clock: no run directory (an embedded stack keeps its state and data inside
it) and no process whose command line names it. Each run asks for
``--stack embedded``, so a check that came too late would leave both behind.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import pytest

from harness.preflight import NUMBERS, flag

ROOT = Path(__file__).resolve().parents[2]
LOCUST = str(Path(sys.executable).with_name("locust"))
BAD_EXPERIMENT = """title: a typo
timeline:
  - fault: kill
    target: broker
    at: 1
    durraton: 3
"""
LATE_EXPERIMENT = """title: late
timeline:
  - {fault: kill, target: broker, at: 30, duration: 2}
"""


def refused(tmp_path: Path, *args: str, config: Path | None = None, env: dict | None = None) -> str:
    """Run Locust as a user does; assert it refused with exit 2 and left nothing behind; return its stderr."""
    run_dir = tmp_path / "run"
    cmd = [LOCUST, *(["--config", str(config)] if config else
                     ["-f", "locustfiles/stamping.py", "--headless", "-t", "5s", "--stack", "embedded"]),
           "--run-dir", str(run_dir), *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, **(env or {})))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert not run_dir.exists(), "the run directory was written before the check"
    assert not [p.pid for p in psutil.process_iter(["cmdline"]) if str(run_dir) in " ".join(p.info["cmdline"] or [])]
    return proc.stderr


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def one_line(stderr: str, *parts: str) -> str:
    """The single error line holding every part (the option's name, file:line, ...)."""
    lines = [line for line in error_lines(stderr) if all(p in line for p in parts)]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("value", ["0", "-5", "nan"])
def test_rate_zero_negative_or_not_a_number(tmp_path, value):
    line = one_line(refused(tmp_path, f"--rate={value}"), "--rate")
    assert "> 0" in line


def test_rate_malformed_is_locusts_one_line(tmp_path):
    err = refused(tmp_path, "--rate", "fast")
    lines = [line for line in err.splitlines() if "--rate" in line]
    assert lines == ["locust: error: argument --rate: invalid float value: 'fast'"], err


@pytest.mark.parametrize("dest", sorted(NUMBERS))
def test_each_numeric_option_out_of_range(tmp_path, dest):
    bad = "0" if dest in ("max_lateness", "burst") else "-1"
    one_line(refused(tmp_path, f"{flag(dest)}={bad}"), flag(dest), "must be")


def test_scenario_name_that_is_not_a_file_name(tmp_path):
    one_line(refused(tmp_path, "--scenario", "../elsewhere"), "--scenario")


def test_run_dir_that_is_a_file(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    proc = subprocess.run([LOCUST, "-f", "locustfiles/stamping.py", "--headless", "-t", "5s", "--stack", "embedded",
                           "--run-dir", str(afile)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    one_line(proc.stderr, "--run-dir", str(afile))
    assert afile.is_file() and afile.read_text() == ""


def test_chaos_experiment_file_mistakes_name_file_line_and_field(tmp_path):
    exp = tmp_path / "bad.yaml"
    exp.write_text(BAD_EXPERIMENT)
    err = refused(tmp_path, "--chaos", str(exp))
    one_line(err, f"{exp}:6: timeline.0.durraton: unknown field")
    one_line(err, f"{exp}:3: timeline.0.duration: required field is missing")


def test_chaos_that_is_neither_file_nor_shipped(tmp_path):
    line = one_line(refused(tmp_path, "--chaos", "broker-kil"), "--chaos", "broker-kil")
    assert "broker-kill" in line  # the shipped names are listed


def test_chaos_whose_first_fault_comes_after_the_run_time(tmp_path):
    exp = tmp_path / "late.yaml"
    exp.write_text(LATE_EXPERIMENT)
    one_line(refused(tmp_path, "--chaos", str(exp)), "--chaos", "30 s", "--run-time")


def test_thresholds_set_that_does_not_exist(tmp_path):
    line = one_line(refused(tmp_path, "--thresholds", "flagshp"), "--thresholds", "flagshp")
    assert "flagship" in line


def test_threshold_file_mistake_names_file_and_line(tmp_path):
    bad = tmp_path / "bad-thresholds.yaml"
    bad.write_text("- lost == 0\n- p95(POST /stamp) < 400 parsecs\n")
    one_line(refused(tmp_path, "--thresholds", str(bad)), f"{bad}:2:")


def test_thresholds_with_no_report(tmp_path):
    one_line(refused(tmp_path, "--thresholds", "stamping", "--no-report"), "--thresholds", "--no-report")


def test_external_stack_that_does_not_answer(tmp_path):
    with socket.socket() as s:  # a port nothing listens on once this socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    err = refused(tmp_path, "--stack", "external", env={"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
                                                         "BRIDGESTORM_STATE": str(tmp_path / "none.json")})
    one_line(err, "--stack external", "KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{port}", "does not answer")


def test_external_stack_that_is_not_there(tmp_path):
    env = {"BRIDGESTORM_STATE": str(tmp_path / "none.json"), "KAFKA_BOOTSTRAP_SERVERS": ""}
    one_line(refused(tmp_path, "--stack", "external", env=env), "--stack external", "no stack found")


def test_every_problem_at_once(tmp_path):
    exp = tmp_path / "bad.yaml"
    exp.write_text(BAD_EXPERIMENT)
    err = refused(tmp_path, "--rate", "-1", "--drain", "-2", "--chaos", str(exp), "--thresholds", "nope")
    assert len(error_lines(err)) == 5, err
    for part in ("--rate", "--drain", f"{exp}:6:", f"{exp}:3:", "--thresholds"):
        one_line(err, part)


def test_a_scenario_conf_with_bad_values(tmp_path):
    exp = tmp_path / "bad.yaml"
    exp.write_text(BAD_EXPERIMENT)
    conf = tmp_path / "bad.conf"
    conf.write_text(f"scenario = bad\nlocustfile = locustfiles/stamping.py\nheadless = true\nrun-time = 5s\n"
                    f"stack = embedded\nchaos = {exp}\nrate = 0\nthresholds = nope\n")
    err = refused(tmp_path, config=conf)
    for part in ("--rate", f"{exp}:6:", "--thresholds"):
        one_line(err, part)


def test_forked_workers_do_not_outlive_a_refused_run(tmp_path):
    """--processes forks workers before Locust's init: a refused run stops them (refused() looks for them)."""
    one_line(refused(tmp_path, "--processes", "2", "--rate", "-1"), "--rate")


def test_a_scenario_that_does_not_exist(tmp_path):
    proc = subprocess.run([LOCUST, "--config", "scenarios/flagshp.conf"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "scenarios/flagshp.conf" in proc.stderr, proc.stderr


def test_chaos_cli_refuses_a_bad_experiment_before_injecting(tmp_path):
    exp = tmp_path / "bad.yaml"
    exp.write_text(BAD_EXPERIMENT)
    run_dir = tmp_path / "chaos-run"
    proc = subprocess.run([sys.executable, "-m", "chaos", "run", str(exp), "--run-dir", str(run_dir)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    one_line(proc.stderr, f"{exp}:6: timeline.0.durraton: unknown field")
    assert not run_dir.exists()


def test_chaos_cli_refuses_a_missing_state_file(tmp_path):
    run_dir = tmp_path / "chaos-run"
    proc = subprocess.run([sys.executable, "-m", "chaos", "run", "chaos/experiments/broker-kill.yaml", "--run-dir",
                           str(run_dir), "--state", str(tmp_path / "none.json")], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    one_line(proc.stderr, "--state", "none.json")
    assert not run_dir.exists()


def test_proxy_server_refuses_a_public_address_in_one_line():
    proc = subprocess.run([sys.executable, "-m", "chaos", "proxy-server", "--listen", "0.0.0.0:8474"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "loopback" in proc.stderr, proc.stderr


def test_analysis_cli_reports_every_bad_input_at_once(tmp_path):
    bad = tmp_path / "bad-thresholds.yaml"
    bad.write_text("- lost == 0\n- p95(POST /stamp) < 400 parsecs\n")
    proc = subprocess.run([sys.executable, "-m", "analysis", "report", str(tmp_path / "no-run"), "-t", str(bad)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    one_line(proc.stderr, "no-run", "no such run directory")
    one_line(proc.stderr, f"{bad}:2:")
    assert not (tmp_path / "no-run").exists()


def test_help_lists_the_toolkit_options_with_defaults():
    proc = subprocess.run([LOCUST, "-f", "locustfiles/stamping.py", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    heading, _, rest = proc.stdout.partition("\nbridgestorm")
    assert rest, proc.stdout[-2000:]
    for option in ("--stack", "--chaos", "--thresholds", "--run-dir", "--rate", "--drain", "--debug"):
        assert option in rest, option
    text = " ".join(rest.split())  # argparse wraps the help text
    assert "counts as lost; default: 10.0)" in text  # --drain
    assert "default: 1.0)" in text  # --max-lateness
    assert "exit codes: 0 pass, 1 a threshold failed, 2 bad usage or input" in text


# ---------------------------------------------------------------- against the session's stack


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, form: dict[str, str]) -> dict:
    data = urllib.parse.urlencode(form).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as r:
        return json.loads(r.read())


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def test_web_ui_form_with_a_bad_chaos_file_is_refused_before_users_spawn(stack_state_path, tmp_path):
    exp = tmp_path / "bad.yaml"
    exp.write_text(BAD_EXPERIMENT)
    port = _free_port()
    run_dir = tmp_path / "web"
    proc = subprocess.Popen([LOCUST, "-f", "locustfiles/stamping.py", "--stack", "external", "--stack-state",
                             stack_state_path, "--run-dir", str(run_dir), "--web-host", "127.0.0.1", "--web-port",
                             str(port)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # until the web UI answers (or Locust exited)
            try:
                _get(f"{base}/stats/requests")
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.1)
        answer = _post(f"{base}/swarm", {"user_count": "1", "spawn_rate": "1", "chaos": str(exp), "rate": "-3"})
        assert answer["success"] is False, answer
        assert f"{exp}:6: timeline.0.durraton: unknown field" in answer["message"]
        assert "--rate" in answer["message"]
        stats = _get(f"{base}/stats/requests")
        assert stats["state"] == "ready" and stats["user_count"] == 0, stats
        assert not (run_dir / "chaos.jsonl").exists() and not (run_dir / "samples").exists()
    finally:
        proc.terminate()
        proc.communicate(timeout=60)


def test_a_chaos_experiment_that_cannot_run_is_never_exit_0(run_locust, tmp_path):
    exp = tmp_path / "nothing-to-kill.yaml"  # valid, but its target is no part of the stack
    exp.write_text("title: no such part\ntimeline:\n  - {fault: kill, target: nosuchpart, at: 0, duration: 1}\n")
    passing = tmp_path / "pass.yaml"
    passing.write_text("- errors(POST /stamp) < 50%\n")
    run = run_locust("stamping.py", "-u", "1", "-r", "1", "-t", "4s", "--chaos", str(exp), "--thresholds",
                     str(passing), name="chaos-broken")
    assert run.returncode == 3, run.output[-3000:]
    assert "did not run as planned" in run.output
    assert json.loads((run.run_dir / "analysis.json").read_text())["verdict"] == "pass"  # the load itself passed


@pytest.mark.parametrize("conf", sorted((ROOT / "scenarios").glob("*.conf")), ids=lambda p: p.stem)
def test_every_shipped_scenario_passes_its_own_checks(conf):
    """What a scenario names (experiment, threshold set, rate, its first fault within its run time) is valid."""
    from harness import preflight  # not Locust: importing it would monkey-patch this test process with gevent

    values = dict(line.split("=", 1) for line in conf.read_text().splitlines() if "=" in line and
                  not line.lstrip().startswith("#"))
    values = {k.strip(): v.strip() for k, v in values.items()}
    found = preflight.check_scenario(values["scenario"]) + preflight.check_rate(values.get("rate"))
    assert values["run-time"].endswith("s") and values["run-time"][:-1].isdigit(), values["run-time"]
    found += preflight.check_chaos(values.get("chaos", ""), float(values["run-time"][:-1]))
    found += preflight.check_thresholds(values.get("thresholds", ""), values["scenario"])
    assert found == []


def test_a_stack_part_that_dies_during_the_run_makes_it_exit_3(tmp_path):
    """The run broke: an embedded stack's process gone at the end of the load is exit 3, whatever the verdict."""
    run_dir = tmp_path / "died"
    passing = tmp_path / "pass.yaml"
    passing.write_text("- errors(POST /stamp) < 50%\n")
    proc = subprocess.Popen([LOCUST, "-f", "locustfiles/stamping.py", "--headless", "-u", "1", "-r", "1", "-t", "6s",
                             "--stack", "embedded", "--run-dir", str(run_dir), "--thresholds", str(passing),
                             "--drain", "5"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(1200):  # until the load has started (run.json has its start), or Locust ended
            info = run_dir / "run.json"
            if info.is_file() and json.loads(info.read_text()).get("started_at"):  # written atomically
                break
            assert proc.poll() is None
            time.sleep(0.1)
        state = json.loads((run_dir / "stack" / "stack.json").read_text())
        psutil.Process(state["parts"]["intelligence"]["pid"]).kill()  # a node the stamping load never calls
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 3, out[-3000:]
    assert "the stack died during the run: intelligence not running" in out
