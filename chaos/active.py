"""Faults injected and not yet healed, kept in a file beside the stack state.

Why: a run can die (SIGKILL, a crashed Locust worker) between inject and
heal. Every inject is recorded here first and removed after its heal, so
`python -m chaos heal` knows exactly what to undo, and still writes the
fault's journal line.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Iterator

from stack.state import state_path

ACTIVE_ENV = "BRIDGESTORM_CHAOS_ACTIVE"


def active_path(explicit: str | os.PathLike[str] | None = None, stack_state: str | None = None) -> Path:
    """The argument, `$BRIDGESTORM_CHAOS_ACTIVE`, or `chaos-active.json` beside the stack state file."""
    if explicit:
        return Path(explicit)
    if os.environ.get(ACTIVE_ENV):
        return Path(os.environ[ACTIVE_ENV])
    return state_path(stack_state).resolve().parent / "chaos-active.json"


class ActiveFaults:
    """{fault_id: entry}; entry = record fields + kind, heal token, journal dir, state path, proxy URL."""

    def __init__(self, path: str | os.PathLike[str] | None = None, stack_state: str | None = None):
        self.path = active_path(path, stack_state)

    @contextlib.contextmanager
    def _update(self) -> Iterator[dict]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                data = json.loads(self.path.read_text()) if self.path.exists() else {}
                yield data
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(json.dumps(data, indent=2))
                os.replace(tmp, self.path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def add(self, fault_id: str, entry: dict) -> None:
        with self._update() as data:
            data[fault_id] = entry

    def remove(self, fault_id: str) -> None:
        with self._update() as data:
            data.pop(fault_id, None)

    def all(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        return json.loads(self.path.read_text())
