"""Service registry node (seed 004): service instances and tools, in PostgreSQL, every change published as an event.

POST   /registry/services        {service_name, version, instance_id, host, port, health_check_url?,
                                  capabilities?: [str], metadata?: {}, health_status?}
                                 → {registration_id, service_name, instance_id, status: "registered", created}
                                 the same instance_id again: updated, same registration_id
GET    /registry/services[?service_name=&capability=&health_status=]
                                 → {services: [{service_name, instances: [...]}], count, instance_count}
GET    /registry/services/{registration_id}  → the instance
PUT    /registry/services/{registration_id}  {health_status?, load_factor?, metadata? (merged)} → the instance
DELETE /registry/services/{registration_id}  → {registration_id, status: "deregistered"}
POST   /registry/tools           {tool_name, version, service_source, category, description?, input_schema: {},
                                  output_schema: {}, execution_requirements?: {}}
                                 → {tool_id, tool_name, version, status: "registered", created}
                                 the same tool_name and version again: updated, same tool_id
GET    /registry/tools[?category=&tool_name=&service_source=], GET /registry/tools/{tool_id}

Every answer is `nodes.api`'s shape: 400 for a body that is not a JSON
object (or an id that is not a UUID, or an X-Correlation-ID that is not
one), 422 naming the field that is wrong, 404 for an unknown id, 413 over
the body limit. Values PostgreSQL would refuse (NUL, lone surrogates, NaN,
nesting past 64 levels, names over 255 characters) are a 422 here, not the
base node's 503 "database unavailable". A PUT counts as a sign of life
(last_heartbeat is now): the seed's update is the instance reporting its load.

Why a registry of its own next to the
node registry (nodes/registry.py): the node registry knows *our* nodes from
the bus; this one is what the seed's clients ask over HTTP, and it also
holds services that are not on the bus at all (a team's tool provider, a
mock target), found by name or by the tools they offer (`capability=`,
the jsonb `?` operator on a GIN index).

Every change writes its row and its event in one transaction (the outbox):
SERVICE_REGISTERED (a new instance), SERVICE_UPDATED (a registration again,
a PUT, a node whose introspection changed), SERVICE_DEREGISTERED on
`topics.service_registry`, keyed by service name; TOOL_REGISTERED on
`topics.tool_registration`, keyed by tool name. The payload is the instance
or the tool as the API shows it; the correlation id is the request's
`X-Correlation-ID` (a UUID) or a new one.

Our own nodes register themselves: the node consumes NODE_INTROSPECTION and
NODE_HEARTBEAT (group GROUP_SERVICE_REGISTRY) of its own namespace
(`NODE_NAMESPACE`); another tenant's nodes (a load test's simulated ones
among them) are counted and passed over, or discovery by name could route
the orchestrator to them. An introspection upserts the
instance `node_id` of service `node_type` at the host and port of
`endpoints.api`, capabilities = `capabilities.tools` (a list of tool names;
the other capabilities are descriptions, not tools), metadata `{"node": true}`
merged into what is stored, health "healthy". It publishes SERVICE_REGISTERED
or SERVICE_UPDATED (with the introspection's correlation id, caused by it)
only when the instance is new or what it announced changed: nodes introspect
again whenever the node registry restarts, and a storm of identical
"updates" would only make the registry's listeners refetch for nothing. A
heartbeat moves `last_heartbeat` of that instance forward (no event: one a
second per node would drown the topic; `age_s` shows it). An introspection
that cannot be an instance (a node id or type that is not text, no api
host and port) is counted and skipped: the bus is not a client that can be
told 422. Deregistering a node's instance lasts until it introspects again
(at its start, or when the node registry restarts); its heartbeats alone do
not bring it back.
"""
from __future__ import annotations

import logging
import math
import uuid
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from aiohttp import web

from nodes.api import BadRequest, failure, field, read_object, respond, success
from nodes.config import GROUP_SERVICE_REGISTRY
from nodes.consumer import Received
from nodes.envelope import EventType, OnexEnvelopeV1, new_envelope
from nodes.service import Node

log = logging.getLogger(__name__)

HEALTH_STATUSES = ("healthy", "degraded", "unhealthy", "unknown")
MAX_NAME_CHARS = 255  # names are indexed (a btree entry must stay under 2.7 kB); the seed's columns are as short
MAX_DEPTH = 64  # of a JSON value we store: deeper is not a schema or metadata, it is an attack on the recursion

# every instance column, and how long since its last heartbeat by the database's clock
_INSTANCE = "*, extract(epoch FROM clock_timestamp() - last_heartbeat)::float8 AS age_s"

_REGISTER = f"""
INSERT INTO service_registrations AS s
  (registration_id, service_name, instance_id, version, host, port, health_check_url, capabilities, metadata,
   health_status)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, COALESCE($10, 'unknown'))
ON CONFLICT (instance_id) DO UPDATE SET
  service_name = EXCLUDED.service_name, version = EXCLUDED.version, host = EXCLUDED.host, port = EXCLUDED.port,
  health_check_url = EXCLUDED.health_check_url, capabilities = EXCLUDED.capabilities, metadata = EXCLUDED.metadata,
  health_status = COALESCE($10, s.health_status),
  last_heartbeat = clock_timestamp(), updated_at = clock_timestamp()
RETURNING {_INSTANCE}, (xmax = 0) AS created
"""
# (xmax = 0): the row was inserted by this statement, not updated; PostgreSQL's usual way to tell an upsert's outcome

# an introspection: the description is the node's, the metadata it had is kept (a PUT may have added to it)
_INTROSPECTED = f"""
INSERT INTO service_registrations AS s
  (registration_id, service_name, instance_id, version, host, port, health_check_url, capabilities, metadata,
   health_status)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, '{{"node": true}}', 'healthy')
ON CONFLICT (instance_id) DO UPDATE SET
  service_name = EXCLUDED.service_name, version = EXCLUDED.version, host = EXCLUDED.host, port = EXCLUDED.port,
  health_check_url = EXCLUDED.health_check_url, capabilities = EXCLUDED.capabilities,
  metadata = s.metadata || EXCLUDED.metadata, health_status = 'healthy',
  last_heartbeat = clock_timestamp(), updated_at = clock_timestamp()
RETURNING {_INSTANCE}, (xmax = 0) AS created
"""

_UPDATE = f"""
UPDATE service_registrations SET
  health_status = COALESCE($2, health_status), load_factor = COALESCE($3, load_factor),
  metadata = metadata || COALESCE($4::jsonb, '{{}}'::jsonb),
  last_heartbeat = clock_timestamp(), updated_at = clock_timestamp()
WHERE registration_id = $1
RETURNING {_INSTANCE}
"""

_HEARTBEATS = """
UPDATE service_registrations s SET last_heartbeat = GREATEST(s.last_heartbeat, beat.at)
FROM (SELECT instance_id, max(at) AS at FROM unnest($1::text[], $2::timestamptz[]) AS b(instance_id, at)
      GROUP BY instance_id) AS beat
WHERE s.instance_id = beat.instance_id
"""

_REGISTER_TOOL = """
INSERT INTO tool_registrations AS t
  (tool_id, tool_name, version, service_source, category, description, input_schema, output_schema,
   execution_requirements)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (tool_name, version) DO UPDATE SET
  service_source = EXCLUDED.service_source, category = EXCLUDED.category, description = EXCLUDED.description,
  input_schema = EXCLUDED.input_schema, output_schema = EXCLUDED.output_schema,
  execution_requirements = EXCLUDED.execution_requirements, updated_at = clock_timestamp()
RETURNING *, (xmax = 0) AS created
"""

# what an introspection announces: when none of it changed, the introspection publishes nothing
_ANNOUNCED = ("service_name", "version", "host", "port", "health_check_url", "capabilities", "health_status")


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _instance_json(row: Any) -> dict[str, Any]:
    return {
        "registration_id": str(row["registration_id"]),
        "instance_id": row["instance_id"],
        "service_name": row["service_name"],
        "version": row["version"],
        "host": row["host"],
        "port": row["port"],
        "url": _url(row["host"], row["port"]),
        "health_check_url": row["health_check_url"],
        "capabilities": row["capabilities"],
        "metadata": row["metadata"],
        "health_status": row["health_status"],
        "load_factor": row["load_factor"],
        "last_heartbeat": row["last_heartbeat"].isoformat(),
        "age_s": round(max(row["age_s"], 0.0), 3),
        "registered_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
    }


def _tool_json(row: Any) -> dict[str, Any]:
    return {
        "tool_id": str(row["tool_id"]),
        "tool_name": row["tool_name"],
        "version": row["version"],
        "service_source": row["service_source"],
        "category": row["category"],
        "description": row["description"],
        "input_schema": row["input_schema"],
        "output_schema": row["output_schema"],
        "execution_requirements": row["execution_requirements"],
        "registered_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
    }


# -- validation -------------------------------------------------------------------------------------------

def storable(value: Any, label: str, depth: int = 0) -> Any:
    """`value` if PostgreSQL can store it (text and jsonb); BadRequest(422) naming the part it cannot.

    Python's JSON reader accepts what PostgreSQL refuses: NUL in a string, a lone
    surrogate, NaN and Infinity. Refused by the database they would come back
    as a 503, which says the service is down when it is the request that is wrong.
    """
    if depth > MAX_DEPTH:
        raise BadRequest(f"field '{label.split('.')[0]}' is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        if "\x00" in value:
            raise BadRequest(f"field '{label}' must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest(f"field '{label}' is not valid Unicode (a lone surrogate)") from None
    elif isinstance(value, float) and not math.isfinite(value):
        raise BadRequest(f"field '{label}' must be a finite number")
    elif isinstance(value, dict):
        for key, item in value.items():
            storable(key, f"{label}.{key!s:.40}", depth + 1)
            storable(item, f"{label}.{key!s:.40}", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            storable(item, f"{label}[{i}]", depth + 1)
    return value


def name_field(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    """A short text field: a name, a version, a host."""
    value = field(body, name, str, required=required)
    if value is not None and len(value) > MAX_NAME_CHARS:
        raise BadRequest(f"field '{name}' is longer than {MAX_NAME_CHARS} characters")
    return storable(value, name)


def object_field(body: dict[str, Any], name: str, *, required: bool = True) -> dict[str, Any] | None:
    return storable(field(body, name, dict, required=required), name)


def port_field(body: dict[str, Any]) -> int:
    port = field(body, "port", int)
    if not 1 <= port <= 65535:
        raise BadRequest(f"field 'port' must be between 1 and 65535, not {port}")
    return port


def capabilities_field(body: dict[str, Any]) -> list[str]:
    capabilities = field(body, "capabilities", list, required=False, default=[])
    for i, item in enumerate(capabilities):
        if not isinstance(item, str) or not item:
            raise BadRequest(f"field 'capabilities[{i}]' must be a non-empty string")
        storable(item, f"capabilities[{i}]")
    return capabilities


def health_field(value: Any, label: str) -> str | None:
    if value is not None and value not in HEALTH_STATUSES:
        raise BadRequest(f"{label} must be one of {', '.join(HEALTH_STATUSES)}, not {value!r:.60}")
    return value


def load_factor_field(body: dict[str, Any]) -> float | None:
    value = field(body, "load_factor", (int, float), required=False)
    if value is None:
        return None
    try:
        value = float(value)
    except OverflowError:  # an integer too large for a float
        value = math.inf
    if not math.isfinite(value) or value < 0:
        raise BadRequest("field 'load_factor' must be a finite number, 0 or more")
    return value


def uuid_param(request: web.Request, name: str) -> uuid.UUID:
    """A path parameter that must be a UUID: BadRequest(400) when it is not (no such id can exist)."""
    raw = request.match_info[name]
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a UUID, not {raw!r:.60}", 400) from None


def correlation_id(request: web.Request) -> uuid.UUID:
    """The request's X-Correlation-ID (a UUID, else 400), or a new one: the events it causes carry it."""
    raw = request.headers.get("X-Correlation-ID")
    if not raw:
        return uuid.uuid4()
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise BadRequest("header X-Correlation-ID must be a UUID", 400) from None


def endpoint(api: Any) -> tuple[str, int] | None:
    """Host and port of an introspection's `endpoints.api` URL, or None when it has none."""
    if not isinstance(api, str):
        return None
    try:
        parts = urlsplit(api)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:  # a port that is not a number or out of range
        return None
    if not parts.hostname or not port:
        return None
    return parts.hostname, port


class ServiceRegistryNode(Node):
    kind = "service-registry"
    extra_middlewares = (respond,)

    def __init__(self, settings):
        super().__init__(settings)
        self.registrations = 0  # new instances, over HTTP or by introspection
        self.updates = 0  # registered again, PUT, or an introspection that changed something
        self.deregistrations = 0
        self.tools_registered = 0  # POST /registry/tools, new or again
        self.queries = 0
        self.introspections = 0
        self.introspections_skipped = 0
        self.other_namespaces = 0
        self.heartbeats = 0

    def setup_routes(self, app: web.Application) -> None:
        app.router.add_post("/registry/services", self.handle_register)
        app.router.add_get("/registry/services", self.handle_list)
        app.router.add_get("/registry/services/{registration_id}", self.handle_get)
        app.router.add_put("/registry/services/{registration_id}", self.handle_update)
        app.router.add_delete("/registry/services/{registration_id}", self.handle_deregister)
        app.router.add_post("/registry/tools", self.handle_register_tool)
        app.router.add_get("/registry/tools", self.handle_list_tools)
        app.router.add_get("/registry/tools/{tool_id}", self.handle_get_tool)

    def capabilities(self) -> dict:
        return {"discovery": "postgresql", "routes": ["/registry/services", "/registry/tools"]}

    def stats(self) -> dict:
        return {
            "registrations": self.registrations,
            "updates": self.updates,
            "deregistrations": self.deregistrations,
            "tools_registered": self.tools_registered,
            "queries": self.queries,
            "introspections": self.introspections,
            "introspections_skipped": self.introspections_skipped,
            "other_namespaces": self.other_namespaces,
            "heartbeats": self.heartbeats,
        }

    async def on_start(self) -> None:
        t = self.settings.topics
        assert self.outbox is not None
        self.add_consumer(GROUP_SERVICE_REGISTRY, [t.introspection, t.heartbeat], self.handle_node_events,
                          max_records=2000, after_commit=self.outbox.wake)

    def _event(self, event_type: EventType, payload: dict[str, Any], correlation: uuid.UUID,
               namespace: str | None = None, causation: uuid.UUID | None = None) -> OnexEnvelopeV1:
        return new_envelope(event_type, payload, source_node_id=self.settings.node_id,
                            namespace=namespace or self.settings.namespace, correlation_id=correlation,
                            causation_id=causation)

    async def _write(self, query: str, args: tuple, event: Any) -> tuple[Any, OnexEnvelopeV1 | None]:
        """Run one change and add the event `event(row)` makes from its row, in one transaction.

        `event(row)` returns (topic, key, envelope), or None when the row is not there (a 404).
        """
        assert self.pool is not None and self.outbox is not None
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                row = await conn.fetchrow(query, *args)
                if row is None:
                    return None, None
                topic, key, env = event(row)
                await self.outbox.add(conn, topic, key, env)
        self.outbox.wake()
        return row, env

    # -- services ----------------------------------------------------------------------------------------
    async def handle_register(self, request: web.Request) -> web.Response:
        correlation = correlation_id(request)
        body = await read_object(request)
        service_name = name_field(body, "service_name")
        version = name_field(body, "version")
        instance_id = name_field(body, "instance_id")
        host = name_field(body, "host")
        port = port_field(body)
        health_check_url = storable(field(body, "health_check_url", str, required=False), "health_check_url")
        capabilities = capabilities_field(body)
        metadata = object_field(body, "metadata", required=False) or {}
        health = health_field(field(body, "health_status", str, required=False), "field 'health_status'")
        topic = self.settings.topics.service_registry

        def event(row):
            kind = EventType.SERVICE_REGISTERED if row["created"] else EventType.SERVICE_UPDATED
            return topic, row["service_name"], self._event(kind, _instance_json(row), correlation)

        row, env = await self._write(_REGISTER, (uuid.uuid4(), service_name, instance_id, version, host, port,
                                                 health_check_url, capabilities, metadata, health), event)
        if row["created"]:
            self.registrations += 1
        else:
            self.updates += 1
        return success({
            "registration_id": str(row["registration_id"]),
            "service_name": row["service_name"],
            "instance_id": row["instance_id"],
            "status": "registered",
            "created": row["created"],
            "event_id": str(env.event_id),
            "correlation_id": str(correlation),
        })

    async def handle_list(self, request: web.Request) -> web.Response:
        self.queries += 1
        filters, args = [], []
        for name, condition in (("service_name", "service_name = ${}"), ("capability", "capabilities ? ${}"),
                                ("health_status", "health_status = ${}")):
            if name in request.query:
                value = request.query[name]
                if name == "health_status":
                    health_field(value, "query parameter 'health_status'")
                args.append(storable(value, name))
                filters.append(condition.format(len(args)))
        where = f"WHERE {' AND '.join(filters)}" if filters else ""
        assert self.pool is not None
        rows = await self.pool.fetch(
            f"SELECT {_INSTANCE} FROM service_registrations {where} ORDER BY service_name, created_at, instance_id",
            *args,
        )
        services: dict[str, list[dict]] = {}
        for row in rows:
            services.setdefault(row["service_name"], []).append(_instance_json(row))
        return success({
            "services": [{"service_name": name, "instances": instances} for name, instances in services.items()],
            "count": len(services),
            "instance_count": len(rows),
        })

    async def handle_get(self, request: web.Request) -> web.Response:
        self.queries += 1
        registration_id = uuid_param(request, "registration_id")
        assert self.pool is not None
        row = await self.pool.fetchrow(f"SELECT {_INSTANCE} FROM service_registrations WHERE registration_id = $1",
                                       registration_id)
        if row is None:
            return failure(404, f"no service registration {registration_id}")
        return success(_instance_json(row))

    async def handle_update(self, request: web.Request) -> web.Response:
        registration_id = uuid_param(request, "registration_id")
        correlation = correlation_id(request)
        body = await read_object(request)
        health = health_field(field(body, "health_status", str, required=False), "field 'health_status'")
        load_factor = load_factor_field(body)
        metadata = object_field(body, "metadata", required=False)
        if health is None and load_factor is None and metadata is None:
            raise BadRequest("give at least one of the fields 'health_status', 'load_factor', 'metadata'")
        topic = self.settings.topics.service_registry

        def event(row):
            return topic, row["service_name"], self._event(EventType.SERVICE_UPDATED, _instance_json(row), correlation)

        row, _ = await self._write(_UPDATE, (registration_id, health, load_factor, metadata), event)
        if row is None:
            return failure(404, f"no service registration {registration_id}")
        self.updates += 1
        return success(_instance_json(row))

    async def handle_deregister(self, request: web.Request) -> web.Response:
        registration_id = uuid_param(request, "registration_id")
        correlation = correlation_id(request)
        topic = self.settings.topics.service_registry

        def event(row):
            payload = _instance_json(row)
            return topic, row["service_name"], self._event(EventType.SERVICE_DEREGISTERED, payload, correlation)

        row, _ = await self._write(
            f"DELETE FROM service_registrations WHERE registration_id = $1 RETURNING {_INSTANCE}",
            (registration_id,), event,
        )
        if row is None:
            return failure(404, f"no service registration {registration_id}")
        self.deregistrations += 1
        return success({"registration_id": str(registration_id), "service_name": row["service_name"],
                        "instance_id": row["instance_id"], "status": "deregistered"})

    # -- tools -------------------------------------------------------------------------------------------
    async def handle_register_tool(self, request: web.Request) -> web.Response:
        correlation = correlation_id(request)
        body = await read_object(request)
        tool_name = name_field(body, "tool_name")
        version = name_field(body, "version")
        service_source = name_field(body, "service_source")
        category = name_field(body, "category")
        description = storable(field(body, "description", str, required=False), "description")
        input_schema = object_field(body, "input_schema")
        output_schema = object_field(body, "output_schema")
        requirements = object_field(body, "execution_requirements", required=False) or {}
        topic = self.settings.topics.tool_registration

        def event(row):
            return topic, row["tool_name"], self._event(EventType.TOOL_REGISTERED, _tool_json(row), correlation)

        row, env = await self._write(_REGISTER_TOOL, (uuid.uuid4(), tool_name, version, service_source, category,
                                                      description, input_schema, output_schema, requirements), event)
        self.tools_registered += 1
        return success({
            "tool_id": str(row["tool_id"]),
            "tool_name": row["tool_name"],
            "version": row["version"],
            "status": "registered",
            "created": row["created"],
            "event_id": str(env.event_id),
            "correlation_id": str(correlation),
        })

    async def handle_list_tools(self, request: web.Request) -> web.Response:
        self.queries += 1
        filters, args = [], []
        for name in ("category", "tool_name", "service_source"):
            if name in request.query:
                args.append(storable(request.query[name], name))
                filters.append(f"{name} = ${len(args)}")
        where = f"WHERE {' AND '.join(filters)}" if filters else ""
        assert self.pool is not None
        rows = await self.pool.fetch(f"SELECT * FROM tool_registrations {where} ORDER BY tool_name, version", *args)
        return success({"tools": [_tool_json(r) for r in rows], "count": len(rows)})

    async def handle_get_tool(self, request: web.Request) -> web.Response:
        self.queries += 1
        tool_id = uuid_param(request, "tool_id")
        assert self.pool is not None
        row = await self.pool.fetchrow("SELECT * FROM tool_registrations WHERE tool_id = $1", tool_id)
        if row is None:
            return failure(404, f"no tool {tool_id}")
        return success(_tool_json(row))

    # -- our own nodes, from the bus ---------------------------------------------------------------------------
    async def handle_node_events(self, conn: asyncpg.Connection, records: list[Received]) -> None:
        """One batch: each introspection upserts its node's instance, all heartbeats in one statement."""
        beats: list[tuple[str, Any]] = []
        for rec in records:
            env = rec.envelope
            if env.namespace != self.settings.namespace:  # another tenant's node: never offered to our callers
                self.other_namespaces += 1
                continue
            if env.event_type == EventType.NODE_INTROSPECTION:
                self.introspections += 1
                await self._introspected(conn, env)
            elif env.event_type == EventType.NODE_HEARTBEAT:
                node_id = env.payload.get("node_id") or env.source_node_id
                if isinstance(node_id, str):
                    beats.append((node_id, env.timestamp))
        if beats:
            ids, times = zip(*beats)
            status = await conn.execute(_HEARTBEATS, list(ids), list(times))
            self.heartbeats += int(status.split()[-1])  # "UPDATE n": instances moved forward

    async def _introspected(self, conn: asyncpg.Connection, env: OnexEnvelopeV1) -> None:
        described = self._described(env)
        if described is None:
            self.introspections_skipped += 1
            return
        instance_id = described[1]
        old = await conn.fetchrow("SELECT * FROM service_registrations WHERE instance_id = $1 FOR UPDATE", instance_id)
        row = await conn.fetchrow(_INTROSPECTED, uuid.uuid4(), *described)
        if old is not None and all(old[k] == row[k] for k in _ANNOUNCED):
            return  # nothing the node announced changed: no event (see the module docstring)
        kind = EventType.SERVICE_REGISTERED if row["created"] else EventType.SERVICE_UPDATED
        assert self.outbox is not None
        await self.outbox.add(conn, self.settings.topics.service_registry, row["service_name"],
                              self._event(kind, _instance_json(row), env.correlation_id, env.namespace, env.event_id))
        if row["created"]:
            self.registrations += 1
        else:
            self.updates += 1

    @staticmethod
    def _described(env: OnexEnvelopeV1) -> tuple | None:
        """(service_name, instance_id, version, host, port, health_check_url, capabilities) of an introspection."""
        p = env.payload
        node_id, node_type = p.get("node_id") or env.source_node_id, p.get("node_type")
        endpoints = p.get("endpoints") if isinstance(p.get("endpoints"), dict) else {}
        address = endpoint(endpoints.get("api"))
        health = endpoints.get("health") if isinstance(endpoints.get("health"), str) else None
        version = p.get("version") if isinstance(p.get("version"), str) and p.get("version") else "unknown"
        capabilities = p.get("capabilities") if isinstance(p.get("capabilities"), dict) else {}
        tools = capabilities.get("tools", [])
        tools = [t for t in tools if isinstance(t, str) and t] if isinstance(tools, list) else []
        try:
            for name, value in (("node_id", node_id), ("node_type", node_type), ("version", version)):
                if not isinstance(value, str) or not value or len(value) > MAX_NAME_CHARS:
                    raise BadRequest(f"{name} is not a usable name")
                storable(value, name)
            if address is None or len(address[0]) > MAX_NAME_CHARS:
                raise BadRequest("endpoints.api has no host and port")
            storable([address[0], health, tools], "endpoints")
        except BadRequest as exc:
            log.warning("introspection %s not registered as a service: %s", env.event_id, exc)
            return None
        return node_type, node_id, version, address[0], address[1], health, tools
