"""The users' base classes: request events with exact times, ledger rows, Kafka publish and wait.

Every measurement goes through Locust's ``request`` event (so Locust's
statistics and the raw samples count the same things); the context carries
what Locust does not: the wall-clock start, the intended start (fixed-rate
mode) and the key (event or correlation id). Events are built by the run's
adapter (``harness/adapter.py``), so these classes serve any system under
test: subclass ``KafkaUser`` for a user that publishes and waits for results
on the bus, or mix ``RunMixin`` into an HTTP user.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from locust import User
from locust.exception import StopUser

import gevent

from harness.adapter import Message
from harness.aio import BridgeTimeout, Call
from harness.arrivals import arrivals, is_open_model
from harness.context import RunContext, option, run_context
from harness.kafka import Bus


class RunMixin:
    """What every user of a run has: the run object, arrivals, request events, ledger rows, events to send.

    A user class whose ``wait_time`` is ``harness.arrivals.arrivals`` is open-model: with ``--rate`` it
    takes the run's arrivals (harness/arrivals.py) instead of looping on its own answers.
    """

    environment: Any
    run: RunContext
    ts_intended: float | None = None  # the intended start of the arrival this user took
    ts_ready: float | None = None  # when that arrival could start: its intended start, or when the user took it
    _arrival: tuple[float, float] | None = None  # (intended, ready) of the arrival the current task makes
    e2e_timeout_s: float = 10.0

    def run_start(self) -> None:
        """Call first in ``on_start``: joins the run, applies ``--e2e-timeout`` and waits for the first arrival."""
        self.run = run_context(self.environment)
        e2e_timeout = float(option(self.environment, "e2e_timeout", 0) or 0)
        if e2e_timeout > 0:
            self.e2e_timeout_s = e2e_timeout
        clock = self.run.arrival_clock(type(self)) if is_open_model(type(self)) else None
        if clock is not None:
            clock.join()
            gevent.sleep(arrivals(self))  # the first task starts at an arrival too

    def service_url(self, variable: str) -> str:
        """A service's base URL from the stack's environment, e.g. ``STAMPING_URL``."""
        return self.run.address(variable).rstrip("/")

    def event(self, event_type: str, payload: Mapping[str, Any], *, topic: str, key: str, source: str,
              correlation_id: str | None = None, event_id: str | None = None,
              metadata: Mapping[str, Any] | None = None) -> Message:
        """An event in the run's namespace, built by the adapter."""
        return self.run.adapter.event(event_type, payload, topic=topic, key=key, namespace=self.run.namespace,
                                      source=source, correlation_id=correlation_id, event_id=event_id,
                                      metadata=metadata)

    def intended(self) -> float | None:
        """The intended start of the request this task makes (open model with ``--rate``), else None."""
        ts, self.ts_intended = self.ts_intended, None
        self._arrival = None if ts is None or self.ts_ready is None else (ts, self.ts_ready)
        return ts

    def sample_context(self, ts_start: float, key: str | None, ts_intended: float | None) -> dict[str, Any]:
        """The ``context`` of a request event: its start, key and arrival (intended start, and ready time
        when ``ts_intended`` is the arrival this task took; the analysis reads the generator's lateness from it)."""
        arrival = self._arrival
        ready = arrival[1] if arrival is not None and ts_intended is not None and arrival[0] == ts_intended else None
        return {"ts_start": ts_start, "key": key, "ts_intended": ts_intended, "ts_ready": ready}

    def run_stop(self) -> None:
        """Call in ``on_stop``: an open-model user leaves its class's arrivals."""
        clock = self.run.arrival_clock(type(self)) if is_open_model(type(self)) else None
        if clock is not None:
            clock.leave()

    def fire(self, type: str, name: str, ts_start: float, latency_ms: float, *, length: int = 0,
             error: BaseException | str | None = None, key: str | None = None,
             ts_intended: float | None = None) -> None:
        exc = None if error is None else (error if isinstance(error, BaseException) else Exception(error))
        self.environment.events.request.fire(
            request_type=type, name=name, response_time=latency_ms, response_length=length, exception=exc,
            context=self.sample_context(ts_start, key, ts_intended), start_time=ts_start,
            response=None, url=None,
        )

    def ledger(self, kind: str, item_id: str, ts_sent: float, acked: bool) -> None:
        """One item the load caused (the loss accounting joins it with the truth by kind and id)."""
        self.run.recorder.ledger_row(kind, item_id, self.run.namespace, ts_sent, acked)

    def wait_e2e(self, bus: Bus, waiting: Call, corr: str, e2e_name: str, ts: float, t0: float,
                 ts_intended: float | None, timeout: float, error: str | None = None) -> Any:
        """Wait for an ``expect()``-ed result and fire one ``e2e`` request; the result's body or None.

        The timeout counts from the start of the flow (``t0``), not from when this greenlet began to wait.
        """
        result = None
        if error is None:
            remaining = max(0.0, timeout - (time.perf_counter() - t0))
            try:
                result = waiting.wait(remaining)
                if waiting.done_at - t0 > timeout:
                    result, error = None, f"no result event within {timeout:g} s"
            except BridgeTimeout:
                error = f"no result event within {timeout:g} s"
            except Exception as exc:  # noqa: BLE001 - a failure event
                error = str(exc)
        if error is not None:
            bus.observer.forget(corr)
        end = waiting.done_at if (error is None and waiting.done_at) else time.perf_counter()
        self.fire("e2e", e2e_name, ts, (end - t0) * 1000.0, error=error, key=corr, ts_intended=ts_intended)
        return result

    def follow_e2e(self, bus: Bus, waiting: Call, corr: str, e2e_name: str, ts: float, t0: float,
                   ts_intended: float | None, timeout: float, error: str | None = None,
                   then: Any = None) -> None:
        """``wait_e2e`` in a greenlet of its own, so this user is free for the next arrival at once.

        An open-model user that waited for every result would stop taking arrivals exactly
        while the system is slow. ``then(result)`` runs after the e2e sample (e.g. a GET that
        confirms the result). The run waits for its followers at test stop (bounded by their
        timeouts), so no result is left unrecorded.
        """
        def follow() -> None:
            result = self.wait_e2e(bus, waiting, corr, e2e_name, ts, t0, ts_intended, timeout, error)
            if then is not None and result is not None:
                then(result)

        self.run.followers.spawn(follow)


class KafkaUser(RunMixin, User):
    """A user that publishes through this process's bus and waits for results by correlation id."""

    abstract = True
    ack_timeout_s: float = 10.0

    def on_start(self) -> None:
        self.run_start()
        self.bus: Bus = self.run.bus()

    def on_stop(self) -> None:
        self.run_stop()

    def publish(self, message: Message, *, name: str, ledger: tuple[str, str] | None = None,
                ts_intended: float | None = None) -> bool:
        """Publish one message and wait for the broker's ack: a ``kafka`` request named ``name``.

        Returns whether it was acknowledged. ``ledger`` = (kind, item_id) is the ledger row it
        adds (default: kind ``event``, the event id).
        """
        kind, item = ledger or ("event", message.event_id)
        ts, ok = time.time(), False
        try:  # the row is written even when the run stops mid-publish: stored later counts as recovered
            ok = self._send(message, name, ts_intended)
        finally:
            self.ledger(kind, item, ts, ok)
        return ok

    def _send(self, message: Message, name: str, ts_intended: float | None) -> bool:
        ts = time.time()
        t0 = time.perf_counter()
        call = self.bus.bridge.submit(self.bus.producer.send(message.topic, message.value, message.key.encode()))
        error: BaseException | None = None
        try:
            call.wait(self.ack_timeout_s)
        except Exception as exc:  # noqa: BLE001 - a timeout or any broker error is a failed request
            error = exc
        end = call.done_at if call.done_at else time.perf_counter()
        self.fire("kafka", name, ts, (end - t0) * 1000.0, length=len(message.value or b""), error=error,
                  key=message.event_id, ts_intended=ts_intended)
        return error is None

    def publish_and_wait(self, message: Message, *, name: str, expect: Iterable[str], e2e_name: str,
                         fail_on: Iterable[str] = (), ledger: tuple[str, str] | None = None,
                         ts_intended: float | None = None, timeout: float | None = None) -> Any:
        """Publish, then wait for a result event with the message's correlation id: an ``e2e`` request.

        The e2e latency runs from the publish to the moment the observer read the result.
        A timeout (or a ``fail_on`` event) is a failed request. Returns the result's body or None.
        """
        corr = message.correlation_id
        waiting = self.bus.observer.expect(corr, expect, fail_on)
        kind, item = ledger or ("event", message.event_id)
        ts, t0, ok = time.time(), time.perf_counter(), False
        try:  # as in publish()
            ok = self._send(message, name, ts_intended)
        finally:
            self.ledger(kind, item, ts, ok)
        return self.wait_e2e(self.bus, waiting, corr, e2e_name, ts, t0, ts_intended,
                             timeout if timeout is not None else self.e2e_timeout_s,
                             error=None if ok else "publish not acknowledged")


__all__ = ["KafkaUser", "RunMixin", "StopUser"]
