"""The fault journal: `chaos.jsonl` in the run directory, one JSON object per fault.

The fields are the run directory contract (docs/run-directory.md): fault_id,
name, action, target, target_kind, parameters, started_at, healed_at (UNIX
seconds), outcome (healed | failed | not-healed), observed
{down_after_s, answered_after_s, ...} and error. A line is written when a
fault is over (healed, failed or given up), appended under a lock so several
writers (a runner and a later `chaos heal`) never interleave.
"""
from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

JOURNAL_NAME = "chaos.jsonl"


@dataclass
class FaultRecord:
    fault_id: str
    name: str
    action: str
    target: str
    target_kind: str
    parameters: dict
    started_at: float | None = None
    healed_at: float | None = None
    outcome: str = "not-healed"
    observed: dict = field(default_factory=lambda: {"down_after_s": None, "answered_after_s": None})
    error: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=False, default=str)


class FaultJournal:
    """`FaultJournal(run_dir).write(record)`; `read()` gives the records back."""

    def __init__(self, run_dir: str | os.PathLike[str]):
        self.path = Path(run_dir) / JOURNAL_NAME

    def write(self, record: FaultRecord) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                fh.write(record.to_json() + "\n")
                fh.flush()
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
