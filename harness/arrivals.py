"""Open-model load: arrivals at a fixed rate, taken by whichever user of their class is free.

Why: a closed loop (each user waits for its answer, then sends the next
request) sends less exactly when the system is slow or broken, so the
report shows least of the very period a user of bridgestorm came to see
(coordinated omission). Here requests arrive at a fixed rate whatever the
system does. A free user takes the next arrival and starts it at its
intended time, or late if no user was free; the analysis counts latency
from the intended start, and keeps the service time beside it. An arrival
no user could take within ``max_lateness_s`` (every user was stuck) is
dropped: it becomes a ``dropped`` sample with its intended start, never a
silent gap.

The rate: ``--rate R`` is the whole run's arrivals per second over its
open-model users (those whose ``wait_time`` is ``arrivals``). The run's
owner turns it into one share per user (``rate_per_user``, sent to every
worker with the spawn); each process runs one clock per user class, at that
share times the class's users in this process, so the total stays R however
Locust spreads users over worker processes. Without ``--rate`` the same
users run closed-loop, as plain Locust users do.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import gevent

DROP_CHECK_S = 0.25  # how often a clock looks for arrivals no user took

Dropped = Callable[[str, float], None]  # (class name, intended start)


class ArrivalClock:
    """The arrivals of one user class in one process."""

    def __init__(self, name: str, per_user_rate: float, max_lateness_s: float, on_dropped: Dropped) -> None:
        if per_user_rate <= 0:
            raise ValueError("the arrival rate must be > 0")
        self.name = name
        self.per_user_rate = per_user_rate
        self.max_lateness_s = max_lateness_s
        self.on_dropped = on_dropped
        self.users = 0
        self.next_at: float | None = None
        self.taken = 0
        self.dropped = 0
        self._watch: gevent.Greenlet | None = None

    @property
    def rate(self) -> float:
        """Arrivals per second of this class in this process (at least one user's share)."""
        return self.per_user_rate * max(1, self.users)

    def join(self) -> None:
        self.users += 1
        if self._watch is None:
            self._watch = gevent.spawn(self._watch_loop)

    def leave(self) -> None:
        self.users = max(0, self.users - 1)

    def take(self) -> float:
        """The next arrival's intended start (wall clock); older ones nobody took are dropped first."""
        now = time.time()
        if self.next_at is None:
            self.next_at = now
        self.drop_overdue(now)
        intended = self.next_at
        self.next_at += 1.0 / self.rate
        self.taken += 1
        return intended

    def drop_overdue(self, now: float) -> None:
        """Every arrival due more than ``max_lateness_s`` ago becomes a dropped sample."""
        if self.next_at is None or self.users == 0:
            return
        while self.next_at < now - self.max_lateness_s:
            self.on_dropped(self.name, self.next_at)
            self.dropped += 1
            self.next_at += 1.0 / self.rate

    def _watch_loop(self) -> None:
        """Drops arrivals while every user of the class is stuck (none comes to take them)."""
        while True:
            gevent.sleep(DROP_CHECK_S)
            self.drop_overdue(time.time())

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.kill(block=False)
            self._watch = None


def is_open_model(user_class: type) -> bool:
    return getattr(user_class, "wait_time", None) is arrivals


def rate_per_user(rate: float, user_classes: list[type], users: int | None) -> float:
    """Each open-model user's share of ``--rate``: the rate over the open-model users at full strength.

    Locust spreads ``users`` over the classes by weight, so the open-model classes get
    their weights' share of them. ValueError names what is wrong with the combination.
    """
    if rate <= 0:
        return 0.0
    open_classes = [c for c in user_classes if is_open_model(c)]
    if not open_classes:
        names = ", ".join(c.__name__ for c in user_classes) or "none"
        raise ValueError(f"--rate {rate:g}: none of the user classes ({names}) takes arrivals "
                         "(wait_time = harness.arrivals.arrivals)")
    if not users:
        raise ValueError(f"--rate {rate:g} needs a number of users (-u), which bound how many requests run at once")
    weights = {c: max(0, getattr(c, "weight", 1)) for c in user_classes}
    share = sum(weights[c] for c in open_classes) / (sum(weights.values()) or 1)
    return rate / max(1.0, users * share)


def arrivals(user: Any) -> float:
    """Locust ``wait_time`` of open-model users: seconds until the next arrival of the user's class.

    With ``--rate`` the user takes the arrival and keeps its intended start for
    the request it makes next (``RunMixin.intended()``), and when it was ready
    to start (``ts_ready``: the intended start, or now if that has passed);
    without, it runs closed-loop (no wait, no intended start).
    """
    clock = user.run.arrival_clock(type(user))
    if clock is None:
        user.ts_intended = user.ts_ready = None
        return 0.0
    user.ts_intended = clock.take()
    now = time.time()
    user.ts_ready = max(user.ts_intended, now)  # later than intended: no user was free when it was due
    return max(0.0, user.ts_intended - now)
