"""A circuit breaker for calls to a downstream service.

Closed: calls go through; after `failure_threshold` consecutive failures it
opens. Open: calls fail at once with `CircuitOpen` (fail fast) until
`reset_timeout_s` has passed. Half-open: one probe call goes through; success
closes the breaker, failure opens it again. Small enough that a library
(pybreaker, aiobreaker) would add more than it saves, and those track state
per process in ways that are awkward to expose on /health.
"""
from __future__ import annotations

import time
from typing import Awaitable, Callable, TypeVar

T = TypeVar("T")


class CircuitOpen(RuntimeError):
    """Raised instead of calling the downstream while the breaker is open."""


class CircuitBreaker:
    def __init__(self, name: str, failure_threshold: int = 5, reset_timeout_s: float = 2.0):
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self.state = "closed"
        self.consecutive_failures = 0
        self.opened_at: float | None = None  # monotonic
        self.opened_count = 0
        self.rejected_count = 0
        self._probe_in_flight = False

    def _before_call(self) -> None:
        if self.state == "open":
            assert self.opened_at is not None
            if time.monotonic() - self.opened_at < self.reset_timeout_s or self._probe_in_flight:
                self.rejected_count += 1
                raise CircuitOpen(f"circuit '{self.name}' is open")
            self.state = "half-open"
        if self.state == "half-open":
            if self._probe_in_flight:
                self.rejected_count += 1
                raise CircuitOpen(f"circuit '{self.name}' is half-open, probe in flight")
            self._probe_in_flight = True

    def record_success(self) -> None:
        self._probe_in_flight = False
        self.consecutive_failures = 0
        self.state = "closed"
        self.opened_at = None

    def record_failure(self) -> None:
        self._probe_in_flight = False
        self.consecutive_failures += 1
        if self.state == "half-open" or self.consecutive_failures >= self.failure_threshold:
            if self.state != "open":
                self.opened_count += 1
            self.state = "open"
            self.opened_at = time.monotonic()

    async def call(self, func: Callable[[], Awaitable[T]]) -> T:
        self._before_call()
        try:
            result = await func()
        except Exception:
            self.record_failure()
            raise
        except BaseException:  # cancelled: neither a success nor a failure
            self._probe_in_flight = False
            raise
        self.record_success()
        return result

    def snapshot(self) -> dict:
        return {
            "state": self.state,
            "consecutive_failures": self.consecutive_failures,
            "opened_count": self.opened_count,
            "rejected_count": self.rejected_count,
            "failure_threshold": self.failure_threshold,
            "reset_timeout_s": self.reset_timeout_s,
        }
