"""The user base classes: request events with exact times, ledger rows, Kafka publish and wait.

Every measurement goes through Locust's ``request`` event (so Locust's
statistics and the raw samples count the same things); the context carries
what Locust does not: the wall-clock start, the intended start (fixed-rate
mode) and the key (event or correlation id).
"""
from __future__ import annotations

import time
import uuid
from typing import Any

from locust import User
from locust.exception import StopUser

from locustfiles.support.aio import BridgeTimeout
from locustfiles.support.context import RunContext, option, run_context
from locustfiles.support.kafka import Bus, bus
from locustfiles.support.pacing import Pacer
from nodes.envelope import EventType, new_envelope
from locustfiles.support.stackenv import require


class BridgeMixin:
    """Shared by Kafka and HTTP users: run context, pacing, request events, ledger rows."""

    environment: Any
    ctx: RunContext
    pacer: Pacer | None = None

    def bridge_start(self) -> None:
        self.ctx = run_context(self.environment)
        rate = float(option(self.environment, "rate", 0) or 0)
        self.pacer = Pacer(rate) if rate > 0 else None
        e2e_timeout = float(option(self.environment, "e2e_timeout", 0) or 0)
        if e2e_timeout > 0:
            self.e2e_timeout_s = e2e_timeout

    def service_url(self, variable: str) -> str:
        """A node's base URL from the stack's environment, e.g. ``STAMPING_URL``."""
        return require(self.ctx.env, variable).rstrip("/")

    def open_bus(self) -> Bus:
        """This process's Kafka bridge (one producer and one observer, shared by all its users)."""
        return bus(require(self.ctx.env, "KAFKA_BOOTSTRAP_SERVERS"))

    def intended(self) -> float | None:
        """In fixed-rate mode, wait for this request's slot and return its intended start; else None."""
        return self.pacer.next() if self.pacer is not None else None

    def fire(self, type: str, name: str, ts_start: float, latency_ms: float, *, length: int = 0,
             error: BaseException | str | None = None, key: str | None = None,
             ts_intended: float | None = None) -> None:
        exc = None if error is None else (error if isinstance(error, BaseException) else Exception(error))
        self.environment.events.request.fire(
            request_type=type, name=name, response_time=latency_ms, response_length=length, exception=exc,
            context={"ts_start": ts_start, "key": key, "ts_intended": ts_intended}, start_time=ts_start,
            response=None, url=None,
        )

    def ledger(self, kind: str, item_id: str, ts_sent: float, acked: bool) -> None:
        self.ctx.recorder.ledger_row(kind, item_id, self.ctx.namespace, ts_sent, acked)


class KafkaUser(BridgeMixin, User):
    """A user that publishes envelopes through this process's bridge and waits for their results."""

    abstract = True
    ack_timeout_s: float = 10.0
    e2e_timeout_s: float = 10.0

    def on_start(self) -> None:
        self.bridge_start()
        self.bus: Bus = self.open_bus()

    def publish(self, topic: str, event_type: EventType, payload: dict[str, Any], *, key: str,
                source: str, correlation_id: str | None = None, ledger: tuple[str, str] | None = None,
                ts_intended: float | None = None, event_id: str | None = None) -> tuple[bool, str]:
        """Publish one envelope, wait for the broker's ack; fires a ``kafka`` request named after the event type.

        Returns (acknowledged, correlation id). ``ledger`` = (kind, item_id) adds a ledger row
        (default: kind ``event``, the event id).
        """
        env = new_envelope(event_type, payload, source_node_id=source, namespace=self.ctx.namespace,
                           correlation_id=correlation_id)
        if event_id is not None:
            env = env.model_copy(update={"event_id": uuid.UUID(event_id)})
        value = env.to_bytes()
        ts = time.time()
        ok, _ = self._send(topic, key, value, event_type.value, str(env.event_id), ts_intended)
        kind, item = ledger or ("event", str(env.event_id))
        self.ledger(kind, item, ts, ok)
        return ok, str(env.correlation_id)

    def _send(self, topic: str, key: str, value: bytes, name: str, sample_key: str,
              ts_intended: float | None) -> tuple[bool, float]:
        ts = time.time()
        t0 = time.perf_counter()
        call = self.bus.bridge.submit(self.bus.producer.send(topic, value, key.encode()))
        error: BaseException | None = None
        try:
            call.wait(self.ack_timeout_s)
        except BridgeTimeout as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - any broker error is a failed request
            error = exc
        end = call.done_at if call.done_at else time.perf_counter()
        self.fire("kafka", name, ts, (end - t0) * 1000.0, length=len(value), error=error, key=sample_key,
                  ts_intended=ts_intended)
        return error is None, t0

    def publish_and_wait(self, topic: str, event_type: EventType, payload: dict[str, Any], *, key: str,
                         source: str, expect: list[str], e2e_name: str, fail_on: list[str] = (),
                         correlation_id: str | None = None, event_id: str | None = None,
                         ledger: tuple[str, str] | None = None, ts_intended: float | None = None,
                         timeout: float | None = None) -> dict[str, Any] | None:
        """Publish, then wait for a result event with the same correlation id: an ``e2e`` request.

        The e2e latency runs from the publish to the moment the observer read the result.
        A timeout (or a ``fail_on`` event) is a failed request. Returns the result envelope or None.
        """
        corr = correlation_id or str(uuid.uuid4())
        waiting = self.bus.observer.expect(corr, expect, fail_on)
        ts = time.time()
        t0 = time.perf_counter()
        env = new_envelope(event_type, payload, source_node_id=source, namespace=self.ctx.namespace,
                           correlation_id=corr)
        if event_id is not None:
            env = env.model_copy(update={"event_id": uuid.UUID(event_id)})
        value = env.to_bytes()
        ok, _ = self._send(topic, key, value, event_type.value, str(env.event_id), ts_intended)
        kind, item = ledger or ("event", str(env.event_id))
        self.ledger(kind, item, ts, ok)
        return self.wait_result(waiting, corr, e2e_name, ts, t0, ts_intended, timeout,
                                error=None if ok else "publish not acknowledged")

    def wait_result(self, waiting: Any, corr: str, e2e_name: str, ts: float, t0: float,
                    ts_intended: float | None, timeout: float | None, error: str | None = None
                    ) -> dict[str, Any] | None:
        """Wait for an ``expect()``-ed result and fire the ``e2e`` request for it."""
        return wait_e2e(self, self.bus, waiting, corr, e2e_name, ts, t0, ts_intended,
                        timeout if timeout is not None else self.e2e_timeout_s, error)


def wait_e2e(user: BridgeMixin, b: Bus, waiting: Any, corr: str, e2e_name: str, ts: float, t0: float,
             ts_intended: float | None, timeout: float, error: str | None = None) -> dict[str, Any] | None:
    """Shared by Kafka and HTTP users: wait on the observer, fire one ``e2e`` request."""
    result = None
    if error is None:
        # the timeout counts from the start of the flow, not from when this greenlet began to wait
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
        b.observer.forget(corr)
    end = waiting.done_at if (error is None and waiting.done_at) else time.perf_counter()
    user.fire("e2e", e2e_name, ts, (end - t0) * 1000.0, error=error, key=corr, ts_intended=ts_intended)
    return result


__all__ = ["BridgeMixin", "KafkaUser", "StopUser", "wait_e2e"]
