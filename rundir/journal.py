"""The fault journal: ``chaos.jsonl`` in the run directory, one JSON object per fault (or burst).

One writer and one reader for everyone: the chaos runner and ``chaos heal``
write faults, the load shapes write bursts, the web UI shows the lines live
and the analysis reads them back. A line is appended when a fault is over
(healed, failed or given up), under an exclusive lock so several writers
never interleave; the reader takes the lock shared, so it never sees half a
line. Secrets in parameters (a URL with a password) are masked on the way in.

The fields are the contract (docs/run-directory.md): fault_id, name, action,
target, target_kind, parameters, started_at, healed_at (UNIX seconds),
outcome (healed | failed | not-healed), observed {down_after_s,
answered_after_s, inject_ms, heal_ms, ...} and error.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from rundir.masking import mask_secrets
from rundir.schema import JOURNAL, RunDirError

REQUIRED = ("fault_id", "name", "started_at")
FIELDS = ("fault_id", "name", "action", "target", "target_kind", "parameters",
          "started_at", "healed_at", "outcome", "observed", "error")
BURST = "burst"  # the action of a load shape's burst line: analysed as a burst, not as a fault


@dataclass
class FaultRecord:
    """One journal line."""

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
        return json.dumps(mask_secrets(asdict(self)), ensure_ascii=False, default=str)


@contextlib.contextmanager
def _locked(fh: IO[str], mode: int) -> Iterator[None]:
    fcntl.flock(fh, mode)
    try:
        yield
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)


class FaultJournal:
    """``FaultJournal(run_dir).write(record)``; ``read()`` gives the lines back as dicts."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.path = Path(run_dir) / JOURNAL

    def write(self, record: FaultRecord) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh, _locked(fh, fcntl.LOCK_EX):
            fh.write(record.to_json() + "\n")
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
        missing = [k for k in REQUIRED if k not in entry]
        if missing:
            raise RunDirError(f"{where}: missing field(s) {missing}")
        for k in ("started_at", "healed_at"):  # null start: a fault that was never injected
            v = entry.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise RunDirError(f"{where}: {k!r} must be UNIX seconds or null, found {v!r}")
        return entry
