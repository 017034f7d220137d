"""A user's own schedule: slots at a fixed interval, each with its intended start, kept even when late.

For users that act on a clock of their own rather than on the run's arrival
rate (a simulated node heartbeats every ``--heartbeat`` seconds, whatever
the load): a late action keeps its *intended* time and the analysis counts
latency from it (``ts_intended`` next to ``ts_start`` in the samples), so a
node that was stuck shows how late it was (coordinated omission). The run's
open-model rate is ``harness/arrivals.py``.
"""
from __future__ import annotations

import time

import gevent


class Pacer:
    """Slots at ``rate`` per second from the first call; ``next()`` sleeps until the next slot."""

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.interval = 1.0 / rate
        self.start: float | None = None
        self.n = 0

    def slot(self) -> float:
        """The next slot's intended wall-clock time, without waiting for it (never skips a slot)."""
        if self.start is None:
            self.start = time.time()
        intended = self.start + self.n * self.interval
        self.n += 1
        return intended

    def next(self) -> float:
        """Wait for the next slot and return its intended wall-clock time."""
        intended = self.slot()
        now = time.time()
        if intended > now:
            gevent.sleep(intended - now)
        return intended
