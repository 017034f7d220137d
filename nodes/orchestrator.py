"""Orchestrator node: accepts workflows and drives each through its state machine.

    pending → processing → stamped → [enriched] → completed
                  └────────────┴──────────┴──────→ failed

POST /workflows {"content", "content_type"?, "namespace"?, "use_intelligence"?} → 202 {"workflow_id", ...}
GET  /workflows/{id} → the workflow's state

Every step is one transaction that updates `workflows` and adds its event
(WORKFLOW_STARTED, one STATE_TRANSITION per step, WORKFLOW_COMPLETED or
WORKFLOW_FAILED) to the outbox, keyed by workflow id. Stamping and
intelligence calls each go through a circuit breaker; when intelligence is
unavailable the workflow completes unenriched and says so (`"intelligence":
"fallback"`); when it answers, its analysis is stored with the workflow
(`analysis`). With `SERVICE_REGISTRY_URL` set, stamping and intelligence are
found through the service registry (nodes/discovery.py: cached, with the
configured URLs as the way out when the registry is down; /stats shows which).
Workflows left unfinished by a crash are resumed at start.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime, timezone

import aiohttp
import asyncpg
from aiohttp import web

from nodes.breaker import CircuitBreaker, CircuitOpen
from nodes.discovery import ServiceDiscovery
from nodes.envelope import EventType, new_envelope
from nodes.service import Node, json_error, read_json_object

log = logging.getLogger(__name__)

MAX_CONCURRENT_WORKFLOWS = 256
MAX_STEP_ATTEMPTS = 5


class StepFailed(Exception):
    """A step that failed for good; the workflow ends in `failed`."""


class OrchestratorNode(Node):
    kind = "orchestrator"

    def __init__(self, settings):
        super().__init__(settings)
        self.stamping_breaker = CircuitBreaker(
            "stamping", settings.breaker_failure_threshold, settings.breaker_reset_timeout_s
        )
        self.intelligence_breaker = CircuitBreaker(
            "intelligence", settings.breaker_failure_threshold, settings.breaker_reset_timeout_s
        )
        self.http: aiohttp.ClientSession | None = None
        self.discovery: ServiceDiscovery | None = None
        if settings.service_registry_url:
            self.discovery = ServiceDiscovery(settings.service_registry_url, settings.discovery_ttl_s,
                                              {"stamping": settings.stamping_url,
                                               "intelligence": settings.intelligence_url})
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_WORKFLOWS)
        self._running: set[asyncio.Task] = set()
        self.accepted = 0
        self.completed = 0
        self.failed = 0
        self.fallbacks = 0

    def setup_routes(self, app: web.Application) -> None:
        app.router.add_post("/workflows", self.handle_submit)
        app.router.add_get("/workflows/{workflow_id}", self.handle_get)

    def capabilities(self) -> dict:
        return {"states": ["pending", "processing", "stamped", "enriched", "completed", "failed"]}

    def stats(self) -> dict:
        return {
            "workflows": {
                "accepted": self.accepted,
                "completed": self.completed,
                "failed": self.failed,
                "fallbacks": self.fallbacks,
                "running": len(self._running),
            },
            "breakers": {"stamping": self.stamping_breaker.snapshot(), "intelligence": self.intelligence_breaker.snapshot()},
            "discovery": self.discovery.snapshot() if self.discovery else None,
        }

    async def on_start(self) -> None:
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=200), timeout=aiohttp.ClientTimeout(total=10)
        )
        if self.discovery:
            await self.discovery.start()
        assert self.pool is not None
        rows = await self.pool.fetch("SELECT * FROM workflows WHERE state NOT IN ('completed', 'failed')")
        for row in rows:
            self._spawn(row)
        if rows:
            log.warning("resuming %d unfinished workflows", len(rows))

    async def on_stop(self) -> None:
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        if self.http:
            await self.http.close()
        if self.discovery:
            await self.discovery.stop()

    async def _url(self, name: str, configured: str) -> str:
        """Where `name` is now: through discovery when there is a registry, else as configured."""
        if self.discovery is None:
            return configured
        return (await self.discovery.resolve(name)).url

    # -- HTTP ---------------------------------------------------------------------------------
    async def handle_submit(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        content = body.get("content")
        if not isinstance(content, str) or not content:
            return json_error(422, "field 'content' is required and must be a non-empty string")
        namespace = body.get("namespace", "default")
        content_type = body.get("content_type", "text/plain")
        use_intelligence = body.get("use_intelligence", False)
        if not isinstance(namespace, str) or not namespace:
            return json_error(422, "field 'namespace' must be a non-empty string")
        if not isinstance(content_type, str) or not content_type:
            return json_error(422, "field 'content_type' must be a non-empty string")
        if not isinstance(use_intelligence, bool):
            return json_error(422, "field 'use_intelligence' must be true or false")
        try:
            workflow_id = uuid.UUID(body["workflow_id"]) if "workflow_id" in body else uuid.uuid4()
            correlation_id = uuid.UUID(body["correlation_id"]) if "correlation_id" in body else uuid.uuid4()
        except (ValueError, TypeError, AttributeError):
            return json_error(422, "fields 'workflow_id' and 'correlation_id' must be UUIDs")
        assert self.pool is not None and self.outbox is not None
        started = new_envelope(
            EventType.WORKFLOW_STARTED,
            {"workflow_id": str(workflow_id), "state": "pending", "sequence": 0, "use_intelligence": use_intelligence},
            source_node_id=self.settings.node_id,
            namespace=namespace,
            correlation_id=correlation_id,
        )
        # the row and its first event in one statement (atomic, one round trip)
        inserted = await self.pool.fetchrow(
            "WITH ins AS (INSERT INTO workflows (workflow_id, correlation_id, namespace, state, content, content_type,"
            " use_intelligence) VALUES ($1, $2, $3, 'pending', $4, $5, $6)"
            " ON CONFLICT (workflow_id) DO NOTHING RETURNING *),"
            f" events AS ({self.outbox.insert_rows_sql(first_param=7, where='EXISTS (SELECT 1 FROM ins)')})"
            " SELECT * FROM ins",
            workflow_id, correlation_id, namespace, content, content_type, use_intelligence,
            *self.outbox.columns(self.settings.topics.workflow, [(str(workflow_id), started)]),
        )
        if inserted is None:  # a retried submission: same workflow, accepted once
            row = await self.pool.fetchrow("SELECT * FROM workflows WHERE workflow_id = $1", workflow_id)
            return web.json_response(self._workflow_json(row), status=202)
        self.outbox.wake()
        self.accepted += 1
        self._spawn(inserted)
        return web.json_response(
            {"workflow_id": str(workflow_id), "correlation_id": str(correlation_id), "state": "pending",
             "namespace": namespace},
            status=202,
        )

    async def handle_get(self, request: web.Request) -> web.Response:
        try:
            workflow_id = uuid.UUID(request.match_info["workflow_id"])
        except ValueError:
            return json_error(400, "workflow id must be a UUID")
        assert self.pool is not None
        row = await self.pool.fetchrow("SELECT * FROM workflows WHERE workflow_id = $1", workflow_id)
        if row is None:
            return json_error(404, f"no workflow {workflow_id}")
        return web.json_response(self._workflow_json(row))

    @staticmethod
    def _workflow_json(row) -> dict:
        return {
            "workflow_id": str(row["workflow_id"]),
            "correlation_id": str(row["correlation_id"]),
            "namespace": row["namespace"],
            "state": row["state"],
            "sequence": row["sequence"],
            "use_intelligence": row["use_intelligence"],
            "stamp_hash": row["stamp_hash"],
            "intelligence": row["intelligence"],
            "analysis": row["analysis"],
            "error": row["error"],
            "created_at": row["created_at"].isoformat(),
            "updated_at": row["updated_at"].isoformat(),
        }

    # -- the state machine ---------------------------------------------------------------------
    def _spawn(self, row: asyncpg.Record) -> None:
        task = asyncio.create_task(self._drive(row), name=f"workflow-{row['workflow_id']}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _transition(self, row: asyncpg.Record, to_state: str, **fields) -> asyncpg.Record:
        """One step: update the row and add its events atomically (retried while the database is away)."""
        delay = 0.05
        for attempt in range(50):
            try:
                return await self._transition_once(row, to_state, **fields)
            except (asyncpg.PostgresConnectionError, OSError, asyncpg.InterfaceError, asyncio.TimeoutError) as exc:
                log.warning("workflow %s: transition to %s failed (%r), retrying", row["workflow_id"], to_state, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        raise StepFailed(f"could not record transition to {to_state}")

    async def _transition_once(self, row: asyncpg.Record, to_state: str, **fields) -> asyncpg.Record:
        """Move ``row`` (as this driver last saw it) to ``to_state`` in one statement, events included.

        The events are built from the row we hold, so the update and the outbox insert go in one
        statement (atomic on its own: no BEGIN/COMMIT round trips). The ``sequence`` guard makes it
        a no-op when the row moved meanwhile; then the row as it is now is returned.
        """
        assert self.pool is not None and self.outbox is not None
        workflow_id, sequence = row["workflow_id"], row["sequence"] + 1
        after = {**dict(row), **fields}
        common = dict(source_node_id=self.settings.node_id, namespace=row["namespace"],
                      correlation_id=row["correlation_id"])
        key = str(workflow_id)
        payload = {"workflow_id": key, "from_state": row["state"], "to_state": to_state, "sequence": sequence}
        events = [(key, new_envelope(EventType.STATE_TRANSITION, payload, **common))]
        if to_state in ("completed", "failed"):
            final_type = EventType.WORKFLOW_COMPLETED if to_state == "completed" else EventType.WORKFLOW_FAILED
            duration_ms = (datetime.now(timezone.utc) - row["created_at"]).total_seconds() * 1000
            # the final event comes after the final transition: its own, higher sequence
            final = {"workflow_id": key, "state": to_state, "sequence": sequence + 1,
                     "stamp_hash": after["stamp_hash"], "intelligence": after["intelligence"],
                     "error": after["error"], "duration_ms": duration_ms}
            events.append((key, new_envelope(final_type, final, **common)))
        sets = "".join(f", {name} = ${i + 4}" for i, name in enumerate(fields))
        outbox = self.outbox.insert_rows_sql(first_param=4 + len(fields), where="EXISTS (SELECT 1 FROM moved)")
        moved = await self.pool.fetchrow(
            "WITH moved AS (UPDATE workflows SET state = $2, sequence = $3, updated_at = clock_timestamp()"
            f"{sets} WHERE workflow_id = $1 AND sequence = $3 - 1 RETURNING *),"
            f" events AS ({outbox})"
            " SELECT * FROM moved",
            workflow_id, to_state, sequence, *fields.values(),
            *self.outbox.columns(self.settings.topics.workflow, events),
        )
        if moved is None:  # someone else moved it: go on from where it is
            log.warning("workflow %s moved while driven (sequence %d expected)", workflow_id, sequence - 1)
            return await self.pool.fetchrow("SELECT * FROM workflows WHERE workflow_id = $1", workflow_id)
        self.outbox.wake()
        return moved

    async def _drive(self, row: asyncpg.Record) -> None:
        """Run one workflow from the state of ``row`` (just inserted, or found unfinished at start) to its end."""
        async with self._slots:
            try:
                if row["state"] == "pending":
                    row = await self._transition(row, "processing")
                if row["state"] == "processing":
                    stamp_hash = await self._stamp(row)
                    row = await self._transition(row, "stamped", stamp_hash=stamp_hash)
                if row["state"] == "stamped":
                    if row["use_intelligence"]:
                        analysis = await self._enrich(row)
                        if analysis is not None:
                            row = await self._transition(row, "enriched", intelligence="used", analysis=analysis)
                        else:
                            self.fallbacks += 1
                            row = await self._transition(row, "completed", intelligence="fallback")
                    else:
                        row = await self._transition(row, "completed", intelligence="skipped")
                if row["state"] == "enriched":
                    row = await self._transition(row, "completed")
                self.completed += 1
            except StepFailed as exc:
                self.failed += 1
                await self._transition(row, "failed", error=str(exc))

    async def _stamp(self, row) -> str:
        """Stamp the content; retried with backoff, through the stamping breaker."""
        assert self.http is not None
        delay = 0.05
        last_error = ""
        for attempt in range(MAX_STEP_ATTEMPTS):
            try:
                return await self.stamping_breaker.call(lambda: self._post_stamp(row))
            except CircuitOpen as exc:
                last_error = str(exc)
                await asyncio.sleep(self.stamping_breaker.reset_timeout_s / 2)
            except (aiohttp.ClientError, asyncio.TimeoutError, RuntimeError) as exc:
                last_error = repr(exc)
                await asyncio.sleep(delay)
                delay *= 2
        raise StepFailed(f"stamping failed: {last_error}")

    async def _post_stamp(self, row) -> str:
        assert self.http is not None
        base = await self._url("stamping", self.settings.stamping_url)
        async with self.http.post(
            f"{base}/stamp",
            json={"content": row["content"], "content_type": row["content_type"], "namespace": row["namespace"],
                  "metadata": {"workflow_id": str(row["workflow_id"])}},
            headers={"X-Correlation-ID": str(row["correlation_id"])},
        ) as resp:
            body = await resp.json(content_type=None)
            if resp.status not in (200, 201):
                raise RuntimeError(f"stamping answered {resp.status}: {body}")
            return body["file_hash"]

    async def _enrich(self, row) -> dict | None:
        """Intelligence's analysis of the workflow; None (a fallback) when it failed, timed out or its breaker is open."""
        if not self.settings.intelligence_url and self.discovery is None:
            return None
        assert self.http is not None
        timeout = aiohttp.ClientTimeout(total=self.settings.intelligence_timeout_s)

        async def call() -> dict:
            assert self.http is not None
            base = await self._url("intelligence", self.settings.intelligence_url)
            if not base:
                raise RuntimeError("no intelligence service known")
            async with self.http.post(
                f"{base}/analyze",
                json={"workflow_id": str(row["workflow_id"]), "file_hash": row["stamp_hash"],
                      "namespace": row["namespace"], "content": row["content"],
                      "content_type": row["content_type"]},
                timeout=timeout,
            ) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"intelligence answered {resp.status}")
                body = await resp.json(content_type=None)
                if not isinstance(body, dict) or not isinstance(body.get("analysis"), dict):
                    raise RuntimeError("intelligence answered without an analysis")
                return body["analysis"]

        try:
            return await self.intelligence_breaker.call(call)
        except (CircuitOpen, aiohttp.ClientError, asyncio.TimeoutError, RuntimeError, ValueError):
            return None
