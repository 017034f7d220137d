"""What every node shares: HTTP server with /health, /ready and /stats, PostgreSQL, the bus,
the outbox, introspection on start and on request, heartbeats, JSON logs and graceful shutdown.

A node subclasses `Node`, adds its routes in `setup_routes` and its consumers
and tasks in `on_start`, and is run with `python -m nodes run <kind>`.
"""
from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from typing import Any

import asyncpg
from aiohttp import web

from nodes.api import BadRequest, parse_object
from nodes.bus import EventBus
from nodes.config import Settings, mask_url
from nodes.consumer import BatchConsumer, Received
from nodes.db import create_pool, migrate
from nodes.envelope import EventType, OnexEnvelopeV1, new_envelope
from nodes.outbox import Outbox

log = logging.getLogger(__name__)

VERSION = "0.1.0"


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: easy to grep, easy to load."""

    def __init__(self, node_id: str):
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "node": self.node_id,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(node_id: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter(node_id))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # connection errors flood; nodes.bus reports the broker state


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, "status": status, **extra}, status=status)


async def read_json_object(request: web.Request) -> dict:
    """The request body as a JSON object, or a 400 (413 over the limit) in these nodes' older error shape.

    One reader for every node (nodes/api.py's `read_object`), so a body nested too deeply or with a
    4300-digit integer is a 400 here too, not a 500.
    """
    try:
        return await parse_object(request)  # over the limit: the middleware answers the 413
    except BadRequest as exc:
        raise web.HTTPBadRequest(text=json.dumps({"error": str(exc), "status": exc.status}),
                                 content_type="application/json") from None


class Node:
    """Base of every bridge node."""

    kind = "node"
    max_body_bytes = 1024 * 1024
    extra_middlewares: tuple = ()  # the integration services add nodes.api.respond

    def __init__(self, settings: Settings):
        self.settings = settings
        self.started_monotonic = time.monotonic()
        self.pool: asyncpg.Pool | None = None
        self.bus: EventBus | None = None
        self.outbox: Outbox | None = None
        self.consumers: list[BatchConsumer] = []
        self.tasks: list[asyncio.Task] = []
        self.active_operations = 0
        self.ready = False
        self.introspections_sent = 0
        self.app = web.Application(client_max_size=self.max_body_bytes, middlewares=[self._middleware, *self.extra_middlewares])
        self.app.router.add_get("/health", self.handle_health)
        self.app.router.add_get("/ready", self.handle_ready)
        self.app.router.add_get("/stats", self.handle_stats)
        self.setup_routes(self.app)
        self._stop = asyncio.Event()

    # -- to override ---------------------------------------------------------------
    def setup_routes(self, app: web.Application) -> None:
        """Add the node's own HTTP routes."""

    async def on_start(self) -> None:
        """Start the node's consumers and tasks (database, bus and outbox are up)."""

    async def on_stop(self) -> None:
        """Stop what on_start started, before the consumers and the bus stop."""

    def capabilities(self) -> dict[str, Any]:
        return {}

    def stats(self) -> dict[str, Any]:
        return {}

    # -- HTTP ------------------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        self.active_operations += 1
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return json_error(413, f"body larger than the limit of {self.max_body_bytes} bytes")
        except web.HTTPException:
            raise
        except asyncpg.PostgresError as exc:
            log.exception("database error")
            return json_error(503, f"database unavailable: {type(exc).__name__}")
        finally:
            self.active_operations -= 1

    @property
    def base_url(self) -> str:
        return self.settings.public_url or f"http://{self.settings.http_host}:{self.settings.http_port}"

    async def handle_health(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "ok",
                "node_id": self.settings.node_id,
                "node_type": self.kind,
                "uptime_s": round(time.monotonic() - self.started_monotonic, 3),
            }
        )

    async def handle_ready(self, request: web.Request) -> web.Response:
        problems = []
        if not self.ready:
            problems.append("starting or stopping")
        if self.bus is not None and not self.bus.reachable:
            problems.append("broker unreachable")
        problems += [f"consumer {c.group_id} has no partitions yet" for c in self.consumers if not c.assigned]
        problems += [why for why in (c.stuck() for c in self.consumers) if why]
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.fetchval("SELECT 1"), 2)
            except Exception as exc:
                problems.append(f"database unreachable: {type(exc).__name__}")
        body = {"ready": not problems, "problems": problems, "node_id": self.settings.node_id}
        return web.json_response(body, status=200 if not problems else 503)

    async def handle_stats(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = {
            "node_id": self.settings.node_id,
            "node_type": self.kind,
            "active_operations": self.active_operations,
            "broker_epoch": self.bus.epoch if self.bus else None,
            "producers_dropped": self.bus.producers_dropped if self.bus else None,
            "outbox": self.outbox.snapshot() if self.outbox else None,
            "consumers": {c.group_id: c.snapshot() for c in self.consumers},
        }
        body.update(self.stats())
        return web.json_response(body)

    # -- introspection and heartbeats ----------------------------------------------------
    def introspection_payload(self) -> dict[str, Any]:
        return {
            "node_id": self.settings.node_id,
            "node_type": self.kind,
            "version": VERSION,
            "capabilities": self.capabilities(),
            "endpoints": {"api": self.base_url, "health": f"{self.base_url}/health"},
            "uptime_s": round(time.monotonic() - self.started_monotonic, 3),
        }

    async def introspect(self, causation_id=None) -> OnexEnvelopeV1:
        assert self.outbox is not None
        env = new_envelope(
            EventType.NODE_INTROSPECTION,
            self.introspection_payload(),
            source_node_id=self.settings.node_id,
            namespace=self.settings.namespace,
            causation_id=causation_id,
        )
        await self.outbox.publish(self.settings.topics.introspection, self.settings.node_id, env)
        self.introspections_sent += 1
        return env

    async def _heartbeat_loop(self) -> None:
        assert self.outbox is not None
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval_s)
            env = new_envelope(
                EventType.NODE_HEARTBEAT,
                {
                    "node_id": self.settings.node_id,
                    "node_type": self.kind,
                    "uptime_s": round(time.monotonic() - self.started_monotonic, 3),
                    "active_operations": self.active_operations,
                },
                source_node_id=self.settings.node_id,
                namespace=self.settings.namespace,
            )
            try:
                await self.outbox.publish(self.settings.topics.heartbeat, self.settings.node_id, env)
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("heartbeat not recorded: %r", exc)

    async def _on_registry_request(self, conn, records: list[Received]) -> None:
        for rec in records:
            if rec.envelope.event_type == EventType.REGISTRY_REQUEST_INTROSPECTION:
                await self.introspect(causation_id=rec.envelope.event_id)

    # -- lifecycle -------------------------------------------------------------------------
    def add_consumer(self, group_id: str, topics: list[str], handler, **kwargs) -> BatchConsumer:
        assert self.bus is not None
        consumer = BatchConsumer(
            group_id=group_id,
            topics=topics,
            bus=self.bus,
            pool=self.pool,
            handler=handler,
            dead_letter_topic=self.settings.topics.dead_letter,
            session_timeout_ms=self.settings.session_timeout_ms,
            handler_attempts=self.settings.consumer_handler_attempts,
            stall_after_s=self.settings.consumer_stall_after_s,
            **kwargs,
        )
        self.consumers.append(consumer)
        return consumer

    async def start(self) -> web.AppRunner:
        s = self.settings
        log.info("starting %s (broker %s, database %s)", s.node_id, s.bootstrap_servers, mask_url(s.database_url))
        steps: dict[str, float] = {}
        mark = time.monotonic()

        def step(name: str) -> None:
            nonlocal mark
            now = time.monotonic()
            steps[name] = round(now - mark, 3)
            mark = now

        self.pool = await create_pool(s.database_url, max_size=20)
        await migrate(self.pool)
        step("database")
        self.bus = EventBus(s.bootstrap_servers, s.topics.all(), partitions=s.partitions,
                            replication_factor=s.replication_factor, client_id=s.node_id)
        await self.bus.start()
        step("bus")
        self.outbox = Outbox(self.pool, self.bus, s.node_id, s.topics)
        self.outbox.start()
        await self.on_start()
        # every node answers the registry's request to introspect again (its own group: all see it)
        # re-introspection requests are rare and not latency-critical: long polls keep the idle broker quiet
        self.add_consumer(f"node-{s.node_id}", [s.topics.registry_request], self._on_registry_request, dedupe=False,
                          fetch_max_wait_ms=500)
        await asyncio.gather(*(consumer.start() for consumer in self.consumers))
        step("consumers")
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=5)
        await runner.setup()
        site = web.TCPSite(runner, s.http_host, s.http_port)
        await site.start()
        await self.introspect()
        self.tasks.append(asyncio.create_task(self._heartbeat_loop(), name="heartbeat"))
        step("http")
        self.ready = True
        log.info("%s ready on %s in %.2fs %s", s.node_id, self.base_url, time.monotonic() - self.started_monotonic, steps)
        return runner

    async def stop(self, runner: web.AppRunner) -> None:
        self.ready = False
        log.info("stopping %s", self.settings.node_id)
        await runner.cleanup()  # stops accepting, waits for in-flight requests
        await self.on_stop()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for consumer in self.consumers:
            await consumer.stop()
        if self.outbox:
            await self.outbox.stop()
        if self.bus:
            await self.bus.stop()
        if self.pool:
            await self.pool.close()
        log.info("stopped %s", self.settings.node_id)

    async def serve(self) -> None:
        """Run until SIGTERM or SIGINT, then shut down gracefully."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        runner = await self.start()
        await self._stop.wait()
        await self.stop(runner)
