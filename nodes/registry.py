"""Registry node: two-way registration of every node on the bus.

Consumes NODE_INTROSPECTION and NODE_HEARTBEAT. An introspection upserts the
node's row in `node_registrations`, registers it in Consul when
`CONSUL_HTTP_ADDR` is set (status `registered`; otherwise `partial`:
PostgreSQL only), and publishes NODE_REGISTERED with the introspection's
correlation id, so the node (or a load test) can match it. A heartbeat
updates `last_heartbeat`. On start the registry asks every node to introspect
again (REGISTRY_REQUEST_INTROSPECTION), so a registry that lost its state or
missed events rebuilds it.

GET /nodes[?namespace=&node_type=&status=], GET /nodes/{node_id}
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
from aiohttp import web

from nodes.config import GROUP_REGISTRY
from nodes.consumer import Received
from nodes.envelope import EventType, OnexEnvelopeV1, new_envelope
from nodes.service import Node, json_error

log = logging.getLogger(__name__)

_UPSERT_REGISTRATION = """
INSERT INTO node_registrations AS n
  (node_id, node_type, namespace, status, capabilities, endpoints, last_introspection_id, introspections, uptime_s)
VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8)
ON CONFLICT (node_id) DO UPDATE SET
  node_type = EXCLUDED.node_type, namespace = EXCLUDED.namespace, status = EXCLUDED.status,
  capabilities = EXCLUDED.capabilities, endpoints = EXCLUDED.endpoints,
  last_introspection_id = EXCLUDED.last_introspection_id, introspections = n.introspections + 1,
  uptime_s = EXCLUDED.uptime_s, updated_at = clock_timestamp()
"""

_HEARTBEATS = """
WITH beat AS (
  SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::float8[], $4::int[]) AS b(node_id, at, uptime_s, active)
), updated AS (
  UPDATE node_registrations n SET last_heartbeat = GREATEST(n.last_heartbeat, beat.at),
    heartbeats = n.heartbeats + beat.n, uptime_s = beat.uptime_s, active_operations = beat.active,
    updated_at = clock_timestamp()
  FROM (SELECT node_id, max(at) AS at, count(*) AS n, (array_agg(uptime_s ORDER BY at DESC))[1] AS uptime_s,
               (array_agg(active ORDER BY at DESC))[1] AS active
        FROM beat GROUP BY node_id) AS beat
  WHERE n.node_id = beat.node_id
  RETURNING n.node_id
)
SELECT count(*) FROM beat WHERE node_id IN (SELECT node_id FROM updated)
"""


def _registration_json(row: Any) -> dict:
    return {
        "node_id": row["node_id"],
        "node_type": row["node_type"],
        "namespace": row["namespace"],
        "status": row["status"],
        "capabilities": row["capabilities"],
        "endpoints": row["endpoints"],
        "registered_at": row["registered_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
        "last_heartbeat": row["last_heartbeat"].isoformat() if row["last_heartbeat"] else None,
        "introspections": row["introspections"],
        "heartbeats": row["heartbeats"],
        "uptime_s": row["uptime_s"],
        "active_operations": row["active_operations"],
    }


class ConsulRegistrar:
    """Registers services in Consul through py-consul (a blocking client, so it runs in a thread)."""

    def __init__(self, address: str):
        import consul

        host, _, port = address.replace("http://", "").partition(":")
        self.client = consul.Consul(host=host, port=int(port or 8500))

    async def register(self, node_id: str, node_type: str, endpoints: dict) -> bool:
        def call() -> None:
            self.client.agent.service.register(
                name=node_type, service_id=node_id, tags=["bridgestorm"], meta={"api": str(endpoints.get("api", ""))}
            )

        try:
            await asyncio.wait_for(asyncio.to_thread(call), 2)
            return True
        except Exception as exc:
            log.warning("Consul registration of %s failed: %r", node_id, exc)
            return False


class RegistryNode(Node):
    kind = "registry"

    def __init__(self, settings):
        super().__init__(settings)
        self.consul = ConsulRegistrar(settings.consul_addr) if settings.consul_addr else None
        self.registrations = 0
        self.heartbeats = 0
        self.unknown_heartbeats = 0

    def setup_routes(self, app: web.Application) -> None:
        app.router.add_get("/nodes", self.handle_list)
        app.router.add_get("/nodes/{node_id}", self.handle_get)

    def capabilities(self) -> dict:
        return {"discovery": "consul" if self.consul else "postgresql", "routes": ["/nodes"]}

    def stats(self) -> dict:
        return {
            "registrations": self.registrations,
            "heartbeats": self.heartbeats,
            "unknown_heartbeats": self.unknown_heartbeats,
            "discovery": "consul" if self.consul else "partial",
        }

    async def on_start(self) -> None:
        t = self.settings.topics
        assert self.outbox is not None
        self.add_consumer(
            GROUP_REGISTRY,
            [t.introspection, t.heartbeat],
            self.handle_events,
            max_records=2000,
            after_commit=self.outbox.wake,
        )

    async def start(self):
        runner = await super().start()
        await self.request_introspection()
        return runner

    async def request_introspection(self) -> OnexEnvelopeV1:
        """Ask every node on the bus to introspect again."""
        assert self.outbox is not None
        env = new_envelope(
            EventType.REGISTRY_REQUEST_INTROSPECTION,
            {"registry_id": self.settings.node_id, "reason": "registry started"},
            source_node_id=self.settings.node_id,
            namespace=self.settings.namespace,
        )
        await self.outbox.publish(self.settings.topics.registry_request, self.settings.node_id, env)
        return env

    async def handle_events(self, conn: asyncpg.Connection, records: list[Received]) -> None:
        """One batch: all registrations in one pipelined statement, all heartbeats in another."""
        assert self.outbox is not None
        upserts: list[tuple] = []
        registered: list[tuple[str, str, OnexEnvelopeV1]] = []
        heartbeats: list[tuple] = []
        for rec in records:
            env = rec.envelope
            p = env.payload
            node_id = str(p.get("node_id") or env.source_node_id)
            uptime = p.get("uptime_s")
            uptime = float(uptime) if isinstance(uptime, (int, float)) else None
            if env.event_type == EventType.NODE_INTROSPECTION:
                endpoints = p.get("endpoints") if isinstance(p.get("endpoints"), dict) else {}
                capabilities = p.get("capabilities") if isinstance(p.get("capabilities"), dict) else {}
                node_type = str(p.get("node_type", "unknown"))
                in_consul = await self.consul.register(node_id, node_type, endpoints) if self.consul else False
                status = "registered" if in_consul else "partial"
                upserts.append((node_id, node_type, env.namespace, status, capabilities, endpoints, env.event_id, uptime))
                registered.append((
                    self.settings.topics.registered,
                    node_id,
                    new_envelope(
                        EventType.NODE_REGISTERED,
                        {"node_id": node_id, "node_type": node_type, "status": status,
                         "introspection_event_id": str(env.event_id)},
                        source_node_id=self.settings.node_id,
                        namespace=env.namespace,
                        correlation_id=env.correlation_id,
                        causation_id=env.event_id,
                    ),
                ))
            elif env.event_type == EventType.NODE_HEARTBEAT:
                active = p.get("active_operations")
                heartbeats.append((node_id, env.timestamp, uptime, int(active) if isinstance(active, int) else None))
        if upserts:
            await conn.executemany(_UPSERT_REGISTRATION, upserts)
            await self.outbox.add_many(conn, registered)
            self.registrations += len(registered)
        if heartbeats:
            known = await conn.fetchval(_HEARTBEATS, *map(list, zip(*heartbeats)))
            self.heartbeats += known
            self.unknown_heartbeats += len(heartbeats) - known

    async def handle_list(self, request: web.Request) -> web.Response:
        filters, args = [], []
        for field in ("namespace", "node_type", "status"):
            if field in request.query:
                args.append(request.query[field])
                filters.append(f"{field} = ${len(args)}")
        where = f"WHERE {' AND '.join(filters)}" if filters else ""
        assert self.pool is not None
        rows = await self.pool.fetch(f"SELECT * FROM node_registrations {where} ORDER BY node_id", *args)
        return web.json_response({"count": len(rows), "nodes": [_registration_json(r) for r in rows]})

    async def handle_get(self, request: web.Request) -> web.Response:
        assert self.pool is not None
        row = await self.pool.fetchrow("SELECT * FROM node_registrations WHERE node_id = $1", request.match_info["node_id"])
        if row is None:
            return json_error(404, f"no node {request.match_info['node_id']!r} registered")
        return web.json_response(_registration_json(row))
