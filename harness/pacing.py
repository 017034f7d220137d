"""Fixed-rate mode: each request has an intended start time, kept even when it goes out late.

Coordinated omission: a closed-loop user that waits for a slow answer sends
fewer requests, and the slow period looks short. With a pacer, a late
request keeps its *intended* time; the analysis counts latency from it
(``ts_intended`` next to ``ts_start`` in the samples).
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

    def next(self) -> float:
        """Wait for the next slot and return its intended wall-clock time (never skips a slot)."""
        now = time.time()
        if self.start is None:
            self.start = now
        intended = self.start + self.n * self.interval
        self.n += 1
        if intended > now:
            gevent.sleep(intended - now)
        return intended
