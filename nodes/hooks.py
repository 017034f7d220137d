"""Hook receiver node (seed 004): lifecycle and tool-execution hooks in, events and intelligence patterns out.

POST /hooks/service/lifecycle  {"hook_type": "service_started"|"service_stopped"|"service_health_changed",
                                "service_info": {"name", "version", "instance_id", "startup_time_ms"?, ...},
                                "startup_info"?: {"startup_time_ms"?, "initialization_steps"?: [{"step", "duration_ms"}]},
                                "namespace"?, "correlation_id"?, "hook_id"?}
POST /hooks/tool/execution     {"hook_type": "tool_executed",
                                "execution_info": {"tool_name", "execution_id", "execution_time_ms"?,
                                                   "executor_service"?, ...},
                                "execution_timeline"?: {"execution_time_ms"?, ...},
                                "resource_usage"?: {"cpu_usage": {"peak_percent"}, "memory_usage": {"peak_mb"}}, ...}
    → 200 {"success": true, "data": {"hook_id", "event_id", "correlation_id", "processing_status": "completed",
                                      "intelligence_analysis": {"patterns_discovered": [...]}}}
    → 400/422 {"success": false, "error": "..."} for a body that is not a hook (nothing stored or published)
GET  /intelligence/patterns[?pattern_type=&namespace=&limit=] → {"success": true, "data": {"patterns": [...]}}

One transaction per hook: the hook's row, the patterns it made discovery
find (nodes/patterns.py: one current pattern per namespace, type and subject,
updated as evidence comes in, and retracted when a later hook weakens it below
nodes/patterns.py's REPORT_CONFIDENCE) and their events in the outbox: the hook on
`hooks.service_lifecycle` (keyed by service name) or `hooks.tool_execution`
(keyed by tool name), each pattern as `intelligence.pattern.discovered` on
`intelligence.patterns` (keyed by pattern type), all with the hook's
correlation id, so per-key order holds and nothing is published that was not
stored. A client's `hook_id` makes a retried hook count once. Patterns are
found per namespace (default "default"): two teams' start-ups never make one
trend.
"""
from __future__ import annotations

import logging
import uuid
from collections import Counter
from typing import Any

import asyncpg
from aiohttp import web

from nodes.api import BadRequest, field, read_object, respond, success
from nodes.envelope import EventType, new_envelope
from nodes.patterns import (
    MIN_BASELINE,
    STARTUP_WINDOW,
    Pattern,
    Startup,
    performance_anomaly,
    service_initialization,
    startup_performance,
)
from nodes.service import Node

log = logging.getLogger(__name__)

LIFECYCLE_EVENTS = {"service_started": EventType.SERVICE_STARTED, "service_stopped": EventType.SERVICE_STOPPED,
                    "service_health_changed": EventType.SERVICE_HEALTH_CHANGED}
TOOL_HOOKS = {"tool_executed": EventType.TOOL_EXECUTED}
BASELINE_WINDOW = 50  # earlier executions of a tool its anomaly test compares against
INITIALIZATION_WINDOW = 20  # start-ups of one service its initialization pattern reads

_UPSERT_PATTERN = """
INSERT INTO intelligence_patterns AS p (pattern_id, namespace, pattern_type, subject, confidence_score,
                                        affected_services, pattern_data, hook_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (namespace, pattern_type, subject) DO UPDATE SET
  confidence_score = EXCLUDED.confidence_score, affected_services = EXCLUDED.affected_services,
  pattern_data = EXCLUDED.pattern_data, hook_id = EXCLUDED.hook_id, occurrences = p.occurrences + 1,
  updated_at = clock_timestamp()
RETURNING *
"""


def _hook_type(body: dict[str, Any], known: dict[str, EventType]) -> str:
    hook_type = field(body, "hook_type", str)
    if hook_type not in known:
        raise BadRequest(f"field 'hook_type' must be one of {sorted(known)}, not {hook_type!r}")
    return hook_type


def _number(body: dict[str, Any], name: str, where: str) -> float | None:
    value = field(body, name, (int, float), required=False, where=where)
    if value is not None and value < 0:
        raise BadRequest(f"field '{where}.{name}' must be >= 0")
    return None if value is None else float(value)


def _object(body: dict[str, Any], name: str, where: str = "") -> dict[str, Any]:
    return field(body, name, dict, required=False, default={}, where=where)


def _uuid(value: Any, label: str) -> uuid.UUID | None:
    if value is None:
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise BadRequest(f"{label} must be a UUID", 400 if label.startswith("header") else 422) from None


def _steps(startup_info: dict[str, Any]) -> list[tuple[str, float]]:
    steps = field(startup_info, "initialization_steps", list, required=False, default=[], where="startup_info")
    parsed = []
    for i, step in enumerate(steps):
        where = f"startup_info.initialization_steps[{i}]"
        if not isinstance(step, dict):
            raise BadRequest(f"field '{where}' must be an object")
        parsed.append((field(step, "step", str, where=where), _number(step, "duration_ms", where) or 0.0))
    return parsed


def _pattern_json(row: asyncpg.Record) -> dict[str, Any]:
    return {**row["pattern_data"], "pattern_id": str(row["pattern_id"]), "pattern_type": row["pattern_type"],
            "subject": row["subject"], "namespace": row["namespace"],
            "confidence_score": round(row["confidence_score"], 4), "affected_services": row["affected_services"],
            "occurrences": row["occurrences"], "hook_id": str(row["hook_id"]),
            "discovered_at": row["discovered_at"].isoformat(), "updated_at": row["updated_at"].isoformat()}


class HookReceiverNode(Node):
    kind = "hook-receiver"
    extra_middlewares = (respond,)

    def __init__(self, settings):
        super().__init__(settings)
        self.received: Counter[str] = Counter()
        self.duplicates = 0
        self.patterns_found: Counter[str] = Counter()

    def setup_routes(self, app: web.Application) -> None:
        app.router.add_post("/hooks/service/lifecycle", self.handle_lifecycle)
        app.router.add_post("/hooks/tool/execution", self.handle_tool_execution)
        app.router.add_get("/intelligence/patterns", self.handle_patterns)

    def capabilities(self) -> dict:
        return {"hooks": sorted(LIFECYCLE_EVENTS) + sorted(TOOL_HOOKS),
                "patterns": ["startup_performance", "service_initialization", "performance_anomaly"]}

    def stats(self) -> dict:
        return {"hooks": {"received": dict(self.received), "duplicates": self.duplicates},
                "patterns_found": dict(self.patterns_found)}

    # -- HTTP ------------------------------------------------------------------------------
    async def handle_lifecycle(self, request: web.Request) -> web.Response:
        body = await read_object(request)
        hook_type = _hook_type(body, LIFECYCLE_EVENTS)
        info = field(body, "service_info", dict)
        service = field(info, "name", str, where="service_info")
        field(info, "version", str, where="service_info")
        field(info, "instance_id", str, where="service_info")
        startup_info = _object(body, "startup_info")
        startup_ms = _number(startup_info, "startup_time_ms", "startup_info")
        if startup_ms is None:
            startup_ms = _number(info, "startup_time_ms", "service_info")
        measures: dict[str, Any] = {}
        if startup_ms is not None:
            measures["startup_time_ms"] = startup_ms
        steps = _steps(startup_info)
        if steps:
            measures["initialization_steps"] = steps
        payload = {"hook_type": hook_type, "service_info": info, "startup_info": startup_info}
        return await self._accept(request, body, hook_type, service, payload, measures,
                                  self.settings.topics.service_lifecycle, LIFECYCLE_EVENTS[hook_type])

    async def handle_tool_execution(self, request: web.Request) -> web.Response:
        body = await read_object(request)
        hook_type = _hook_type(body, TOOL_HOOKS)
        info = field(body, "execution_info", dict)
        tool = field(info, "tool_name", str, where="execution_info")
        field(info, "execution_id", str, where="execution_info")
        executor = field(info, "executor_service", str, required=False, where="execution_info")
        timeline = _object(body, "execution_timeline")
        usage = _object(body, "resource_usage")
        measures: dict[str, Any] = {}
        took = _number(info, "execution_time_ms", "execution_info")
        if took is None:
            took = _number(timeline, "execution_time_ms", "execution_timeline")
        if took is not None:
            measures["execution_time_ms"] = took
        cpu = _number(_object(usage, "cpu_usage", "resource_usage"), "peak_percent", "resource_usage.cpu_usage")
        memory = _number(_object(usage, "memory_usage", "resource_usage"), "peak_mb", "resource_usage.memory_usage")
        if cpu is not None:
            measures["cpu_peak_percent"] = cpu
        if memory is not None:
            measures["memory_peak_mb"] = memory
        if executor:
            measures["executor_service"] = executor
        payload = {"hook_type": hook_type, "execution_info": info, "execution_timeline": timeline,
                   "execution_result": _object(body, "execution_result"), "resource_usage": usage}
        return await self._accept(request, body, hook_type, tool, payload, measures,
                                  self.settings.topics.tool_execution, TOOL_HOOKS[hook_type])

    async def handle_patterns(self, request: web.Request) -> web.Response:
        pattern_type = request.query.get("pattern_type")
        namespace = request.query.get("namespace")
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            raise BadRequest("query 'limit' must be a whole number", 400) from None
        if not 1 <= limit <= 1000:
            raise BadRequest("query 'limit' must be between 1 and 1000", 400)
        assert self.pool is not None
        rows = await self.pool.fetch(
            "SELECT * FROM intelligence_patterns WHERE ($1::text IS NULL OR pattern_type = $1)"
            " AND ($2::text IS NULL OR namespace = $2) ORDER BY confidence_score DESC, updated_at DESC LIMIT $3",
            pattern_type, namespace, limit)
        return success({"patterns": [_pattern_json(r) for r in rows], "count": len(rows)})

    # -- one hook ----------------------------------------------------------------------------
    async def _accept(self, request: web.Request, body: dict[str, Any], hook_type: str, subject: str,
                      payload: dict[str, Any], measures: dict[str, Any], topic: str,
                      event_type: EventType) -> web.Response:
        namespace = field(body, "namespace", str, required=False, default="default")
        hook_id = _uuid(body.get("hook_id"), "field 'hook_id'") or uuid.uuid4()
        correlation_id = (_uuid(request.headers.get("X-Correlation-ID"), "header X-Correlation-ID")
                          or _uuid(body.get("correlation_id"), "field 'correlation_id'") or uuid.uuid4())
        common = dict(source_node_id=self.settings.node_id, namespace=namespace, correlation_id=correlation_id)
        event = new_envelope(event_type, {"hook_id": str(hook_id), **payload}, **common)
        assert self.pool is not None and self.outbox is not None
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                inserted = await conn.fetchval(
                    "INSERT INTO hook_events (hook_id, hook_type, namespace, subject, correlation_id, body, measures)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (hook_id) DO NOTHING RETURNING hook_id",
                    hook_id, hook_type, namespace, subject, correlation_id, body, measures)
                if inserted is None:  # a retried hook: accepted once, nothing published again
                    self.duplicates += 1
                    return success({"hook_id": str(hook_id), "processing_status": "duplicate",
                                    "intelligence_analysis": {"patterns_discovered": []}})
                await self.outbox.add(conn, topic, subject, event)
                found, weakened = await self._discover(conn, hook_id, hook_type, namespace, subject, measures)
                for pattern_type, about in weakened:
                    await conn.execute("DELETE FROM intelligence_patterns WHERE namespace = $1 AND pattern_type = $2"
                                       " AND subject = $3", namespace, pattern_type, about)
                discovered = []
                for pattern in found:
                    row = await conn.fetchrow(_UPSERT_PATTERN, uuid.uuid4(), namespace, pattern.pattern_type,
                                              pattern.subject, pattern.confidence_score, pattern.affected_services,
                                              pattern.to_json(), hook_id)
                    pattern_info = _pattern_json(row)
                    discovered.append(pattern_info)
                    await self.outbox.add(conn, self.settings.topics.patterns, pattern.pattern_type, new_envelope(
                        EventType.PATTERN_DISCOVERED, {"hook_id": str(hook_id), "pattern_info": pattern_info},
                        causation_id=event.event_id, **common))
                if any(p.pattern_type == "performance_anomaly" for p in found):
                    await conn.execute("UPDATE hook_events SET anomalous = true WHERE hook_id = $1", hook_id)
        self.outbox.wake()
        self.received[hook_type] += 1
        for pattern in found:
            self.patterns_found[pattern.pattern_type] += 1
        return success({"hook_id": str(hook_id), "event_id": str(event.event_id),
                        "correlation_id": str(correlation_id), "namespace": namespace,
                        "processing_status": "completed",
                        "intelligence_analysis": {"patterns_discovered": discovered}})

    async def _discover(self, conn: asyncpg.Connection, hook_id: uuid.UUID, hook_type: str, namespace: str,
                        subject: str, measures: dict[str, Any]) -> tuple[list[Pattern], list[tuple[str, str]]]:
        """The patterns this hook, with the namespace's recent history, makes discovery find, and the
        (type, subject) of the current patterns it no longer supports (an anomaly is never retracted)."""
        found: list[Pattern | None] = []
        weakened: list[tuple[str, str]] = []
        if hook_type == "service_started":
            if "startup_time_ms" in measures:
                rows = await conn.fetch(
                    "SELECT subject, (measures->>'startup_time_ms')::float8 AS ms FROM hook_events"
                    " WHERE namespace = $1 AND hook_type = 'service_started' AND measures ? 'startup_time_ms'"
                    " ORDER BY received_at DESC LIMIT $2", namespace, STARTUP_WINDOW)
                found.append(startup_performance([Startup(r["subject"], r["ms"]) for r in reversed(rows)]))
                if found[-1] is None:
                    weakened.append(("startup_performance", "startups"))
            if "initialization_steps" in measures:
                rows = await conn.fetch(
                    "SELECT measures->'initialization_steps' AS steps FROM hook_events"
                    " WHERE namespace = $1 AND hook_type = 'service_started' AND subject = $2"
                    " AND measures ? 'initialization_steps' ORDER BY received_at DESC LIMIT $3",
                    namespace, subject, INITIALIZATION_WINDOW)
                history = [[(str(s), float(d)) for s, d in r["steps"]] for r in reversed(rows)]
                found.append(service_initialization(subject, history))
                if found[-1] is None:
                    weakened.append(("service_initialization", subject))
        elif hook_type == "tool_executed":
            rows = await conn.fetch(
                "SELECT measures FROM hook_events WHERE namespace = $1 AND hook_type = 'tool_executed'"
                " AND subject = $2 AND hook_id <> $3 AND NOT anomalous ORDER BY received_at DESC LIMIT $4",
                namespace, subject, hook_id, BASELINE_WINDOW)
            if len(rows) >= MIN_BASELINE:
                services = [measures["executor_service"]] if "executor_service" in measures else []
                found.append(performance_anomaly(subject, measures, [r["measures"] for r in rows], services))
        return [p for p in found if p is not None], weakened
