"""Load shapes: burst, sustained, burst-then-recovery, step ramp.

Each is a LoadTestShape; add one to any locustfile on the command line
(``-f locustfiles/introspection.py,locustfiles/shapes/burst.py``). Their
sizes come from bridgestorm's options (``--burst``, ``--shape-*``). A burst
is written to the run's journal (``action: burst``), so the analysis reports
the time back to baseline after it.
"""
from __future__ import annotations

import secrets
import time
from typing import Any

from locust import LoadTestShape

from rundir.journal import BURST, FaultJournal, FaultRecord
from harness.context import ATTRIBUTE


def _opt(shape: LoadTestShape, name: str, default: Any) -> Any:
    opts = shape.runner.environment.parsed_options if shape.runner else None
    value = getattr(opts, name, None) if opts is not None else None
    return default if value in (None, "", 0) else value


def _over(shape: LoadTestShape) -> bool:
    """Locust ignores ``-t`` when a shape is used: every shape here honours it, so each run stays bounded."""
    run_time = _opt(shape, "run_time", None)
    return bool(run_time) and shape.get_run_time() >= float(run_time)


class _BurstJournal:
    """Writes one journal line per burst: started when asked for, healed when every user is running."""

    def __init__(self) -> None:
        self.started_at: float | None = None
        self.written = False

    def begin(self) -> None:
        if self.started_at is None:
            self.started_at = time.time()

    def check(self, shape: LoadTestShape, size: int) -> None:
        ctx = getattr(shape.runner.environment, ATTRIBUTE, None) if shape.runner is not None else None
        if self.started_at is None or self.written or ctx is None or not ctx.run_dir:
            return
        if shape.runner.user_count >= size:
            FaultJournal(ctx.run_dir).write(FaultRecord(
                fault_id=f"burst-{secrets.token_hex(3)}", name="burst", action=BURST, target="load",
                target_kind="load", parameters={"users": size}, started_at=self.started_at,
                healed_at=time.time(), outcome="healed", observed={}))
            self.written = True


class BurstShape(LoadTestShape):
    """``--burst N`` users at once (spawn rate N), held until ``-t`` ends the run."""

    def __init__(self) -> None:
        super().__init__()
        self.journal = _BurstJournal()

    def tick(self) -> tuple[int, float] | None:
        if _over(self):
            return None
        n = int(_opt(self, "burst", 100))
        self.journal.begin()
        self.journal.check(self, n)
        return n, float(n)


class SustainedShape(LoadTestShape):
    """``--shape-users`` users, reached at ``--shape-rate`` per second, for ``--shape-duration`` seconds."""

    def tick(self) -> tuple[int, float] | None:
        if _over(self):
            return None
        if self.get_run_time() > float(_opt(self, "shape_duration", 60)):
            return None
        users = int(_opt(self, "shape_users", 50))
        return users, float(_opt(self, "shape_rate", users))


class BurstRecoveryShape(LoadTestShape):
    """``--shape-users`` users; at ``--shape-burst-at`` s, ``--burst`` more at once for ``--shape-burst-for`` s; back."""

    def __init__(self) -> None:
        super().__init__()
        self.journals: list[_BurstJournal] = []

    def tick(self) -> tuple[int, float] | None:
        if _over(self):
            return None
        t = self.get_run_time()
        base = int(_opt(self, "shape_users", 5))
        n = int(_opt(self, "burst", 100))
        at, length = float(_opt(self, "shape_burst_at", 5)), float(_opt(self, "shape_burst_for", 5))
        if at <= t < at + length:
            if not self.journals:
                self.journals.append(_BurstJournal())
                self.journals[0].begin()
            self.journals[0].check(self, base + n)
            return base + n, float(base + n)
        return base, float(max(base, n))


class StepShape(LoadTestShape):
    """Step ramp: ``--shape-step-users`` more users every ``--shape-step-s`` s, up to ``--shape-users``."""

    def tick(self) -> tuple[int, float] | None:
        if _over(self):
            return None
        step = int(_opt(self, "shape_step_users", 10))
        every = float(_opt(self, "shape_step_s", 10))
        top = int(_opt(self, "shape_users", 50))
        users = min(top, step * (int(self.get_run_time() // every) + 1))
        return users, float(step)
