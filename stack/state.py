"""The stack's state file: what `python -m stack up` started, and how to start it again.

Everything that stops, restarts or injects faults into a part of the stack
(`stack down`, `stack status`, the chaos module's process and container
targets) reads this file, and refuses to touch anything that is not in it.
A process is identified by pid *and* its start time, so a recycled pid is
never mistaken for ours.

The file is JSON, written atomically under an exclusive lock, because the
chaos module rewrites a part's pid when it restarts it while other tools
read the file.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import psutil

DEFAULT_STATE_PATH = Path(".bridgestorm") / "stack.json"
STATE_ENV = "BRIDGESTORM_STATE"

# Docker label put on every container bridgestorm starts; chaos refuses others.
MANAGED_LABEL = "bridgestorm.managed"


def state_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Where the state file lives: the argument, `$BRIDGESTORM_STATE`, or `./.bridgestorm/stack.json`."""
    if explicit:
        return Path(explicit)
    if os.environ.get(STATE_ENV):
        return Path(os.environ[STATE_ENV])
    return DEFAULT_STATE_PATH


@dataclass
class LaunchSpec:
    """Enough to start a process again exactly as the stack first did."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "."
    log: str | None = None


@dataclass
class Part:
    """One running part of the stack: the broker, PostgreSQL, the proxy server or a node."""

    name: str
    kind: str  # "process" or "container"
    address: str  # what clients use: "127.0.0.1:9092", "http://127.0.0.1:8001", a postgres URL
    health: str  # "http://.../health" or "tcp://host:port"
    pid: int | None = None
    create_time: float | None = None
    container_id: str | None = None
    launch: LaunchSpec | None = None
    extra: dict = field(default_factory=dict)

    def process(self) -> psutil.Process | None:
        """The live process of this part, or None when it is gone or the pid was reused."""
        if self.pid is None:
            return None
        try:
            proc = psutil.Process(self.pid)
            if self.create_time is not None and abs(proc.create_time() - self.create_time) > 0.5:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.Error:
            return None

    @staticmethod
    def from_dict(data: dict) -> "Part":
        launch = data.get("launch")
        return Part(**{**data, "launch": LaunchSpec(**launch) if launch else None})


@dataclass
class StackState:
    """The whole state file."""

    run_dir: str  # working directory of the stack (data, logs)
    broker_runtime: str = "process"
    started_at: float = 0.0
    parts: dict[str, Part] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # what a client needs to reach the stack

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> "StackState":
        data = json.loads(text)
        parts = {name: Part.from_dict(p) for name, p in data.pop("parts", {}).items()}
        return StackState(**data, parts=parts)


class StateFile:
    """Reads and updates the state file under an exclusive lock."""

    def __init__(self, path: str | os.PathLike[str] | None = None):
        self.path = state_path(path).resolve()
        self._lock_path = self.path.with_suffix(".lock")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def exists(self) -> bool:
        return self.path.exists()

    def read(self) -> StackState:
        if not self.path.exists():
            raise FileNotFoundError(f"no stack state at {self.path} (start one with `python -m stack up`)")
        return StackState.from_json(self.path.read_text())

    def write(self, state: StackState) -> None:
        with self._locked():
            self._write_unlocked(state)

    def _write_unlocked(self, state: StackState) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(state.to_json())
        os.replace(tmp, self.path)

    @contextlib.contextmanager
    def update(self) -> Iterator[StackState]:
        """Read, let the caller change, and write back, all under the lock."""
        with self._locked():
            state = StackState.from_json(self.path.read_text())
            yield state
            self._write_unlocked(state)

    def remove(self) -> None:
        with self._locked():
            self.path.unlink(missing_ok=True)
