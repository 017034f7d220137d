"""The one event envelope on every topic (`OnexEnvelopeV1`) and its validation.

`parse_envelope` turns raw bytes into an envelope or raises `InvalidEnvelope`
with a reason short enough to store with the dead letter.
"""
from __future__ import annotations

import enum
import uuid
from datetime import datetime, timezone
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class EventType(str, enum.Enum):
    NODE_INTROSPECTION = "NODE_INTROSPECTION"
    NODE_HEARTBEAT = "NODE_HEARTBEAT"
    REGISTRY_REQUEST_INTROSPECTION = "REGISTRY_REQUEST_INTROSPECTION"
    NODE_REGISTERED = "NODE_REGISTERED"
    WORKFLOW_STARTED = "WORKFLOW_STARTED"
    STATE_TRANSITION = "STATE_TRANSITION"
    WORKFLOW_COMPLETED = "WORKFLOW_COMPLETED"
    WORKFLOW_FAILED = "WORKFLOW_FAILED"
    METADATA_STAMPED = "METADATA_STAMPED"
    # the integration services: the seed's dotted names
    SERVICE_STARTED = "service.lifecycle.started"
    SERVICE_STOPPED = "service.lifecycle.stopped"
    SERVICE_HEALTH_CHANGED = "service.lifecycle.health_changed"
    TOOL_EXECUTED = "tool.execution.completed"
    TOOL_REGISTERED = "registry.tool.registered"
    SERVICE_REGISTERED = "registry.service.registered"
    SERVICE_UPDATED = "registry.service.updated"
    SERVICE_DEREGISTERED = "registry.service.deregistered"
    PROXY_REQUEST = "proxy.request.completed"
    PATTERN_DISCOVERED = "intelligence.pattern.discovered"


ENVELOPE_VERSION = "1.0"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class OnexEnvelopeV1(BaseModel):
    """An event on the bus. `event_id` is the idempotency key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    envelope_version: str = ENVELOPE_VERSION
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    event_type: EventType
    correlation_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    causation_id: uuid.UUID | None = None
    timestamp: datetime = Field(default_factory=utc_now)
    source_node_id: str = Field(min_length=1, max_length=200)
    namespace: str = Field(default="default", min_length=1, max_length=200)
    payload: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("timestamp must carry a time zone (UTC)")
        try:
            return value.astimezone(timezone.utc)
        except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00: before year 1 in UTC
            raise ValueError("timestamp out of range in UTC") from None

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))

    @property
    def ts(self) -> float:
        """The envelope time as UNIX seconds."""
        return self.timestamp.timestamp()


# set by every producer: a missing event_id would get a fresh one on every delivery (no de-duplication),
# a missing correlation_id or timestamp one the producer never chose
WIRE_REQUIRED = ("event_id", "event_type", "correlation_id", "timestamp", "source_node_id")


class InvalidEnvelope(ValueError):
    """Raised for anything on the bus that is not a valid envelope; the message is the reason."""


def parse_envelope(raw: bytes | None) -> OnexEnvelopeV1:
    if raw is None:
        raise InvalidEnvelope("empty message (null value)")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEnvelope(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidEnvelope(f"not a JSON object but {type(data).__name__}")
    missing = [name for name in WIRE_REQUIRED if name not in data]
    if missing:  # defaults are for building an envelope; one read off the bus that lacks them is not one
        raise InvalidEnvelope("invalid envelope: " + "; ".join(f"{name}: Field required" for name in missing))
    try:
        return OnexEnvelopeV1.model_validate(data)
    except RecursionError:
        raise InvalidEnvelope("invalid envelope: nested too deeply") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise InvalidEnvelope(f"invalid envelope: {problems}") from None


def new_envelope(
    event_type: EventType,
    payload: dict[str, Any],
    *,
    source_node_id: str,
    namespace: str = "default",
    correlation_id: uuid.UUID | str | None = None,
    causation_id: uuid.UUID | str | None = None,
    metadata: dict[str, Any] | None = None,
) -> OnexEnvelopeV1:
    return OnexEnvelopeV1(
        event_type=event_type,
        payload=payload,
        source_node_id=source_node_id,
        namespace=namespace,
        correlation_id=uuid.UUID(str(correlation_id)) if correlation_id else uuid.uuid4(),
        causation_id=uuid.UUID(str(causation_id)) if causation_id else None,
        metadata=metadata or {},
    )
