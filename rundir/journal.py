"""The run's journals: ``chaos.jsonl`` (one JSON object per fault or burst) and ``experiments.jsonl``
(one per chaos experiment), in the run directory.

One writer and one reader for everyone: the chaos runner and ``chaos heal``
write faults, the load shapes write bursts, the runner writes each
experiment's record when it ends, the web UI shows the lines live and the
analysis reads them back. A line is appended under an exclusive lock so
several writers never interleave; the reader takes the lock shared, so it
never sees half a line. Secrets (a URL with a password) are masked on the
way in.

The fields are the contract (docs/run-directory.md). A fault: fault_id,
name, action, target, target_kind, parameters, started_at, healed_at (UNIX
seconds), outcome (healed | failed | not-healed), observed {down_after_s,
answered_after_s, inject_ms, heal_ms, ...} and error. An experiment: title,
file, status, started_at, ended_at, steady_state_before and
steady_state_after ({name, ok, value} per probe), deviated, fault_ids and
error.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any

from rundir.masking import mask_secrets
from rundir.schema import EXPERIMENTS, JOURNAL, RunDirError

REQUIRED = ("fault_id", "name", "started_at")
FIELDS = ("fault_id", "name", "action", "target", "target_kind", "parameters",
          "started_at", "healed_at", "outcome", "observed", "error")
BURST = "burst"  # the action of a load shape's burst line: analysed as a burst, not as a fault

EXPERIMENT_REQUIRED = ("title", "status", "started_at")
STATUSES = ("completed", "deviated", "failed", "aborted", "interrupted")


def _json_line(entry: dict[str, Any]) -> str:
    return json.dumps(mask_secrets(entry), ensure_ascii=False, default=str)


@dataclass
class FaultRecord:
    """One chaos.jsonl line."""

    fault_id: str
    name: str
    action: str
    target: str
    target_kind: str
    parameters: dict[str, Any]
    started_at: float | None = None
    healed_at: float | None = None
    outcome: str = "not-healed"
    observed: dict[str, Any] = field(default_factory=lambda: {"down_after_s": None, "answered_after_s": None})
    error: str | None = None

    def to_json(self) -> str:
        return _json_line(asdict(self))


@dataclass(kw_only=True)
class ExperimentRecord:
    """One experiments.jsonl line: how one chaos experiment went, as Chaos Toolkit's journal keeps it.

    A steady state is a list of {name, ok, value}, one per probe; it is
    empty when the experiment has no hypothesis or the check did not run
    (aborted before it, interrupted before the check after).
    """

    title: str
    file: str | None = None
    status: str  # completed | deviated | failed | aborted | interrupted
    started_at: float
    ended_at: float | None = None
    steady_state_before: list[dict[str, Any]] = field(default_factory=list)
    steady_state_after: list[dict[str, Any]] = field(default_factory=list)
    deviated: bool = False  # the steady state was checked after the method and did not hold
    fault_ids: list[str] = field(default_factory=list)  # its faults' lines in chaos.jsonl
    error: str | None = None

    def to_json(self) -> str:
        return _json_line(asdict(self))


EXPERIMENT_FIELDS = tuple(f.name for f in fields(ExperimentRecord))


@contextlib.contextmanager
def _locked(fh: IO[str], mode: int) -> Iterator[None]:
    fcntl.flock(fh, mode)
    try:
        yield
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)


class JsonLines:
    """A JSON-lines file of the run directory: appended under an exclusive lock, read under a shared one."""

    file_name = ""
    required: tuple[str, ...] = ()
    times: tuple[str, ...] = ()  # fields that hold UNIX seconds or null

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.path = Path(run_dir) / self.file_name

    def append(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh, _locked(fh, fcntl.LOCK_EX):
            fh.write(line + "\n")
            fh.flush()

    def entries(self) -> list[tuple[int, dict[str, Any]]]:
        """(line number, entry) for every line; RunDirError names the line of a damaged one."""
        if not self.path.is_file():
            return []
        try:
            with open(self.path, encoding="utf-8") as fh, _locked(fh, fcntl.LOCK_SH):
                lines = fh.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise RunDirError(f"{self.path}: unreadable ({exc})") from exc
        out = []
        for lineno, line in enumerate(lines, 1):
            if line.strip():
                out.append((lineno, self._check(lineno, line)))
        return out

    def read(self) -> list[dict[str, Any]]:
        return [entry for _, entry in self.entries()]

    def _check(self, lineno: int, line: str) -> dict[str, Any]:
        where = f"{self.path}:{lineno}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RunDirError(f"{where}: damaged JSON line ({exc.msg})") from exc
        if not isinstance(entry, dict):
            raise RunDirError(f"{where}: expected a JSON object")
        missing = [k for k in self.required if k not in entry]
        if missing:
            raise RunDirError(f"{where}: missing field(s) {missing}")
        for k in self.times:
            v = entry.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise RunDirError(f"{where}: {k!r} must be UNIX seconds or null, found {v!r}")
        self.check(where, entry)
        return entry

    def check(self, where: str, entry: dict[str, Any]) -> None:
        """What else one kind of line must satisfy; raise RunDirError naming `where`."""


class FaultJournal(JsonLines):
    """``FaultJournal(run_dir).write(record)``; ``read()`` gives the lines of chaos.jsonl back as dicts."""

    file_name = JOURNAL
    required = REQUIRED
    times = ("started_at", "healed_at")  # null start: a fault that was never injected

    def write(self, record: FaultRecord) -> None:
        self.append(record.to_json())


class ExperimentJournal(JsonLines):
    """``ExperimentJournal(run_dir).write(record)``; ``read()`` gives the lines of experiments.jsonl back."""

    file_name = EXPERIMENTS
    required = EXPERIMENT_REQUIRED
    times = ("started_at", "ended_at")

    def write(self, record: ExperimentRecord) -> None:
        self.append(record.to_json())

    def check(self, where: str, entry: dict[str, Any]) -> None:
        if entry["started_at"] is None:
            raise RunDirError(f"{where}: 'started_at' must be UNIX seconds, found null")
        if entry["status"] not in STATUSES:
            raise RunDirError(f"{where}: 'status' must be one of {', '.join(STATUSES)}, found {entry['status']!r}")
        for k in ("steady_state_before", "steady_state_after"):
            probes = entry.get(k, [])
            if not isinstance(probes, list) or not all(
                    isinstance(p, dict) and isinstance(p.get("name"), str) and isinstance(p.get("ok"), bool)
                    for p in probes):
                raise RunDirError(f"{where}: {k!r} must be a list of {{name, ok, value}}, found {probes!r}")
        fault_ids = entry.get("fault_ids", [])
        if not isinstance(fault_ids, list) or not all(isinstance(f, str) for f in fault_ids):
            raise RunDirError(f"{where}: 'fault_ids' must be a list of strings, found {fault_ids!r}")
        if not isinstance(entry.get("deviated", False), bool):
            raise RunDirError(f"{where}: 'deviated' must be true or false, found {entry['deviated']!r}")
