"""A local process of the stack: signals, pause and resume, restart from its launch spec.

Only processes listed in the stack's state file are touched, and only while
their pid *and* start time match the record (a recycled pid belongs to
someone else). A restart starts the process exactly as the stack did (its
`LaunchSpec`) and writes the new pid and start time back to the state file.
"""
from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil

from chaos.probes import health_answers
from chaos.targets import ChaosRefused, FaultType, TargetContext, TargetError, TargetKind
from stack.broker_gate import BrokerGate
from stack.processes import launch
from stack.state import Part, StateFile


def parse_signal(sig: str | int) -> signal.Signals:
    """'SIGKILL', 'KILL', 'kill' or 9 -> signal.SIGKILL."""
    if isinstance(sig, int):
        return signal.Signals(sig)
    name = sig.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return signal.Signals[name]
    except KeyError:
        raise ValueError(f"unknown signal {sig!r}") from None


def check_signal(value: object) -> str | None:
    """The experiment check of a `signal` parameter (containers take the same names)."""
    try:
        parse_signal(value)  # type: ignore[arg-type]
    except (ValueError, TypeError, AttributeError):
        return f"unknown signal {value!r}"
    return None


class ProcessTarget:
    """`ProcessTarget("broker").kill()`; `ProcessTarget.by_pid(1234)` refuses pids the stack did not start."""

    kind = "process"

    def __init__(self, name: str, state_path: str | None = None):
        self.name = name
        self.state_file = StateFile(state_path)
        self.part()  # refuse at once what is not ours

    @classmethod
    def by_pid(cls, pid: int, state_path: str | None = None) -> "ProcessTarget":
        state = _read(StateFile(state_path))
        for part in state.parts.values():
            if part.kind == "process" and part.pid == pid and part.process() is not None:
                return cls(part.name, state_path)
        raise ChaosRefused(f"pid {pid} is not a process the stack started (not in {StateFile(state_path).path}); "
                           "bridgestorm only touches its own processes")

    def part(self) -> Part:
        state = _read(self.state_file)
        part = state.parts.get(self.name)
        if part is None:
            raise ChaosRefused(f"no part named {self.name!r} in the stack state {self.state_file.path} "
                               f"(parts: {', '.join(sorted(state.parts)) or 'none'})")
        if part.kind != "process":
            raise ChaosRefused(f"part {self.name!r} is a {part.kind}, not a process")
        return part

    def process(self) -> psutil.Process:
        """The live process of the part; refuses a pid that now belongs to another process."""
        part = self.part()
        proc = part.process()
        if proc is None:
            if part.pid is not None and psutil.pid_exists(part.pid):
                raise ChaosRefused(f"pid {part.pid} of {self.name!r} now belongs to another process "
                                   "(start time differs); not touching it")
            raise TargetError(f"process {self.name!r} (pid {part.pid}) is not running")
        return proc

    @property
    def pid(self) -> int | None:
        return self.part().pid

    # -- faults
    def signal(self, sig: str | int) -> None:
        self.process().send_signal(parse_signal(sig))

    def kill(self, sig: str | int = "SIGKILL", wait_s: float = 5.0) -> None:
        """Send the signal (SIGKILL by default) and wait until the process is gone."""
        proc = self.process()
        sig = parse_signal(sig)
        if sig not in (signal.SIGSTOP, signal.SIGCONT):
            proc.send_signal(signal.SIGCONT) if proc.status() == psutil.STATUS_STOPPED else None
        proc.send_signal(sig)
        try:
            proc.wait(wait_s)
        except psutil.TimeoutExpired:
            pass

    def terminate(self, wait_s: float = 10.0) -> None:
        self.kill("SIGTERM", wait_s)

    def pause(self, wait_s: float = 2.0) -> None:
        """SIGSTOP, and wait (bounded) until every thread has stopped.

        The signal is delivered asynchronously: until it is, the process runs on, and a
        probe right after the pause would see it answer (seen under load). A kill waits
        for the exit the same way.
        """
        proc = self.process()
        proc.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + wait_s
        while not all_threads_stopped(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.002)

    def resume(self) -> None:
        proc = self.part().process()
        if proc is not None:
            proc.send_signal(signal.SIGCONT)

    def start(self) -> int:
        """Start the part from its launch spec if it is not running; returns its pid.

        The stack's broker opens with its topics in place (`stack.broker_gate`).
        """
        part = self.part()
        if part.process() is not None:
            return part.pid  # type: ignore[return-value]
        if part.launch is None:
            raise TargetError(f"part {self.name!r} has no launch spec; cannot start it again")
        gate = BrokerGate.of(self.state_file.read(), part)
        spec, user = part.launch, part.extra.get("run_as")
        proc = gate.reopen(lambda: launch(spec, user=user)) if gate else launch(spec, user=user)
        with self.state_file.update() as state:
            state.parts[self.name].pid = proc.pid
            state.parts[self.name].create_time = proc.create_time()
        return proc.pid

    def restart(self, wait_s: float = 10.0) -> int:
        """Stop (SIGTERM, SIGKILL after `wait_s`) and start again from the launch spec."""
        part = self.part()
        if part.process() is not None:
            proc = self.process()
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(wait_s)
            except psutil.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return self.start()

    # -- observation
    def answers(self) -> bool:
        """Running (not stopped) and its health check answers."""
        part = self.part()
        proc = part.process()
        try:
            if proc is None or proc.status() in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE):
                return False
        except psutil.Error:
            return False
        return health_answers(part.health)

    def is_injected(self) -> bool:
        """Paused or gone: what `chaos heal` looks for."""
        proc = self.part().process()
        try:
            return proc is None or proc.status() == psutil.STATUS_STOPPED
        except psutil.Error:
            return True


def all_threads_stopped(pid: int) -> bool:
    """Every thread of ``pid`` is in state T (stopped) or t (traced): the main thread's state alone is not enough."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        states = [(task / "stat").read_text().rsplit(")", 1)[1].split()[0] for task in tasks]
    except (OSError, IndexError):
        return False
    return bool(states) and all(s in ("T", "t") for s in states)


def _read(state_file: StateFile):
    try:
        return state_file.read()
    except FileNotFoundError as exc:
        raise ChaosRefused(f"{exc}; bridgestorm only touches processes the stack started") from None



# ----------------------------------------------------------------- the kind

def build(name: str, context: TargetContext) -> ProcessTarget:
    return ProcessTarget(name, context.state_path)


def sweep(context: TargetContext) -> list[str]:
    """Stack processes left stopped get SIGCONT."""
    state_file = StateFile(context.state_path)
    if not state_file.exists():
        return []
    done = []
    for part in state_file.read().parts.values():
        proc = part.process() if part.kind == "process" else None
        try:
            if proc is not None and proc.status() == psutil.STATUS_STOPPED:
                proc.send_signal(signal.SIGCONT)
                done.append(f"resumed process {part.name} (pid {part.pid})")
        except psutil.Error:
            pass
    return done


KIND = TargetKind(
    name="process",
    summary="a local process of the stack, by part name (python -m stack up, --stack embedded)",
    faults=(
        FaultType("process", "kill", "send a signal (SIGKILL by default) and wait until the process is gone",
                  {"signal": "SIGKILL"}, "restart from its launch spec",
                  inject=lambda t, p, f: t.kill(p["signal"]), heal=lambda t, p, tok: t.start(),
                  checks={"signal": check_signal}),
        FaultType("process", "terminate", "SIGTERM (graceful stop)", {}, "restart from its launch spec",
                  inject=lambda t, p, f: t.terminate(), heal=lambda t, p, tok: t.start()),
        FaultType("process", "pause", "SIGSTOP", {}, "SIGCONT",
                  inject=lambda t, p, f: t.pause(), heal=lambda t, p, tok: t.resume()),
        FaultType("process", "restart", "SIGTERM, then start again from its launch spec", {}, None,
                  inject=lambda t, p, f: {"pid": t.restart()}),
    ),
    build=build,
    sweep=sweep,
)
