"""Node configuration, read from environment variables only.

The same variables work for the embedded stack (which sets them for each
node it starts) and for a user's own Kafka/Redpanda and PostgreSQL.
"""
from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from urllib.parse import quote


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _env_float(name: str, default: float) -> float:
    raw = _env(name, str(default))
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not a number") from None


def _env_int(name: str, default: int) -> int:
    raw = _env(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not a whole number") from None


def topic_partitions() -> int:
    """Partitions of every topic the nodes create (`TOPIC_PARTITIONS`); the stack creates them alike."""
    return _env_int("TOPIC_PARTITIONS", 3)


@dataclass(frozen=True)
class Topics:
    """Topic names; each can be renamed with `TOPIC_<NAME>`."""

    introspection: str = field(default_factory=lambda: _env("TOPIC_NODE_INTROSPECTION", "node-introspection.v1"))
    heartbeat: str = field(default_factory=lambda: _env("TOPIC_NODE_HEARTBEAT", "node-heartbeat.v1"))
    registry_request: str = field(
        default_factory=lambda: _env("TOPIC_REGISTRY_REQUEST", "registry-request-introspection.v1")
    )
    registered: str = field(default_factory=lambda: _env("TOPIC_NODE_REGISTERED", "node-registered.v1"))
    workflow: str = field(default_factory=lambda: _env("TOPIC_WORKFLOW_EVENTS", "workflow-events.v1"))
    stamped: str = field(default_factory=lambda: _env("TOPIC_METADATA_STAMPED", "metadata-stamped.v1"))
    dead_letter: str = field(default_factory=lambda: _env("TOPIC_DEAD_LETTER", "dead-letter.v1"))
    # the integration services (docs/integration-services.md): the seed's topic names
    service_lifecycle: str = field(default_factory=lambda: _env("TOPIC_SERVICE_LIFECYCLE", "hooks.service_lifecycle"))
    tool_execution: str = field(default_factory=lambda: _env("TOPIC_TOOL_EXECUTION", "hooks.tool_execution"))
    tool_registration: str = field(default_factory=lambda: _env("TOPIC_TOOL_REGISTRATION", "hooks.tool_registration"))
    service_registry: str = field(default_factory=lambda: _env("TOPIC_SERVICE_REGISTRY", "registry.services"))
    proxy_requests: str = field(default_factory=lambda: _env("TOPIC_PROXY_REQUESTS", "proxy.requests"))
    patterns: str = field(default_factory=lambda: _env("TOPIC_INTELLIGENCE_PATTERNS", "intelligence.patterns"))

    def all(self) -> list[str]:
        return [
            self.introspection,
            self.heartbeat,
            self.registry_request,
            self.registered,
            self.workflow,
            self.stamped,
            self.dead_letter,
            self.service_lifecycle,
            self.tool_execution,
            self.tool_registration,
            self.service_registry,
            self.proxy_requests,
            self.patterns,
        ]

    def envelope_topics(self) -> list[str]:
        """Every topic that carries envelopes (all but the dead-letter topic)."""
        return [t for t in self.all() if t != self.dead_letter]


def database_url_from_env() -> str:
    """`DATABASE_URL`, else one built from the seeds' `POSTGRES_HOST/PORT/USER/PASSWORD/DB`."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    host = _env("POSTGRES_HOST", "127.0.0.1")
    port = _env("POSTGRES_PORT", "5432")
    user = _env("POSTGRES_USER", "postgres")
    password = os.environ.get("POSTGRES_PASSWORD", "")
    db = _env("POSTGRES_DB", "postgres")
    auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
    return f"postgresql://{auth}@{host}:{port}/{db}"


# scheme://user:password@ -> scheme://user:***@, wherever a URL appears in a text
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^@\s/]*)(?P<at>@)")


def mask_url(text: str) -> str:
    """Passwords in URLs replaced by `***` (a URL alone, or URLs inside a text), for logs and reports."""
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}***{m['at']}", text)


@dataclass(frozen=True)
class Settings:
    """Everything a node reads from its environment."""

    node_kind: str
    node_id: str
    bootstrap_servers: str
    database_url: str
    http_host: str
    http_port: int
    namespace: str
    heartbeat_interval_s: float
    partitions: int
    replication_factor: int
    session_timeout_ms: int
    consumer_handler_attempts: int
    consumer_stall_after_s: float
    public_url: str
    stamping_url: str
    intelligence_url: str
    intelligence_timeout_s: float
    consul_addr: str | None
    breaker_failure_threshold: int
    breaker_reset_timeout_s: float
    service_registry_url: str
    discovery_ttl_s: float
    redis_url: str
    proxy_breaker_failure_threshold: int
    proxy_breaker_reset_timeout_s: float
    cache_ttl_s: float
    adaptive_caching: bool
    topics: Topics

    @staticmethod
    def from_env(node_kind: str) -> "Settings":
        return Settings(
            node_kind=node_kind,
            node_id=_env("NODE_ID", f"{node_kind}-{socket.gethostname()}-{os.getpid()}"),
            bootstrap_servers=_env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            database_url=database_url_from_env(),
            http_host=_env("HTTP_HOST", "127.0.0.1"),
            http_port=_env_int("HTTP_PORT", 0),
            namespace=_env("NODE_NAMESPACE", "default"),
            heartbeat_interval_s=_env_float("HEARTBEAT_INTERVAL_SECONDS", 10.0),
            partitions=topic_partitions(),
            replication_factor=_env_int("TOPIC_REPLICATION_FACTOR", 1),
            # Kafka and Redpanda refuse sessions under 6 s by default; the embedded Tansu takes
            # about session/2 to hand out a new group's first assignment, so the stack sets 2 s
            session_timeout_ms=_env_int("CONSUMER_SESSION_TIMEOUT_MS", 10000),
            # a message the handler fails on is tried this often, then dead-lettered (nodes/consumer.py)
            consumer_handler_attempts=_env_int("CONSUMER_HANDLER_ATTEMPTS", 3),
            # lag and no progress for this long: /ready says the consumer is stuck, and why
            consumer_stall_after_s=_env_float("CONSUMER_STALL_AFTER_SECONDS", 30.0),
            public_url=_env("NODE_PUBLIC_URL", ""),  # how others reach this node, if not HTTP_HOST:HTTP_PORT
            stamping_url=_env("STAMPING_URL", "http://127.0.0.1:8001"),
            intelligence_url=_env("INTELLIGENCE_URL", ""),
            intelligence_timeout_s=_env_float("INTELLIGENCE_TIMEOUT_SECONDS", 0.5),
            consul_addr=os.environ.get("CONSUL_HTTP_ADDR") or None,
            breaker_failure_threshold=_env_int("BREAKER_FAILURE_THRESHOLD", 5),
            breaker_reset_timeout_s=_env_float("BREAKER_RESET_TIMEOUT_SECONDS", 2.0),
            # the integration services: where the service registry is (the orchestrator and the proxy
            # discover through it), how long a discovered address is trusted, and the proxy's cache
            service_registry_url=_env("SERVICE_REGISTRY_URL", ""),
            discovery_ttl_s=_env_float("DISCOVERY_TTL_SECONDS", 5.0),
            redis_url=_env("REDIS_URL", ""),
            # the seed's proxy breaker: 5 failures open it, for 30 s
            proxy_breaker_failure_threshold=_env_int("CIRCUIT_BREAKER_FAILURE_THRESHOLD", 5),
            proxy_breaker_reset_timeout_s=_env_float("CIRCUIT_BREAKER_TIMEOUT", 30.0),
            cache_ttl_s=_env_float("CACHE_TTL_SECONDS", 300.0),
            adaptive_caching=_env("ADAPTIVE_CACHING_ENABLED", "true").lower() in ("1", "true", "yes"),
            topics=Topics(),
        )


# Consumer groups of the nodes. The outbox counts an event as confirmed once
# every group that must consume its topic has a receipt for it.
GROUP_REDUCER = "bridge-reducer"
GROUP_REGISTRY = "bridge-registry"
GROUP_DB_ADAPTER = "bridge-database-adapter"
GROUP_SERVICE_REGISTRY = "bridge-service-registry"  # registers every node that introspects as a service


def required_consumers(topics: Topics, topic: str) -> list[str]:
    """Which consumer groups must confirm an event on `topic` before the outbox forgets it."""
    if topic == topics.workflow:
        return [GROUP_REDUCER, GROUP_DB_ADAPTER]
    if topic in (topics.introspection, topics.heartbeat):
        return [GROUP_REGISTRY, GROUP_DB_ADAPTER]
    if topic == topics.dead_letter:
        return []
    return [GROUP_DB_ADAPTER]
