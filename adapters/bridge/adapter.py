"""The bridge adapter: bridgestorm's own nodes (the reference system under test) seen by the harness.

The only module of the toolkit's load side that imports ``nodes``: it speaks
their event contract (the ONEX envelope, nodes/envelope.py), names their
topics and consumer groups, and knows where PostgreSQL keeps what they
stored. The bridge's users (``adapters/bridge/users/``) take everything they
need of the nodes from here.

Results: the observer reads the nodes' result topics (registrations,
workflow events, stamps, re-introspection requests) and matches envelopes by
their ``correlation_id``; a malformed message is skipped (the nodes
dead-letter it). Envelopes are read with orjson, not pydantic: the observer
must keep up with the whole bus.

Truth, per ledger kind: every item stored under the run's namespace (``$1``,
so items never sent are *unexpected*) and every item the run sent, found by
its id in whatever namespace it was stored (``$2``, so an item stored under
another tenant is a *leak*). ``count`` counts an effect that no unique key
prevents, so a duplicate can show:

- ``workflow``: ``workflow_executions``, counted once per WORKFLOW_COMPLETED
  the database adapter logged for it (a workflow completed twice is a
  duplicate);
- ``stamp``: ``metadata_stamps`` by hash, counted once per METADATA_STAMPED
  event logged for it (without the orchestrator's own stamps of workflow
  content);
- ``introspection``: ``node_registrations`` by node id; the registry's
  ``introspections`` counter beyond the distinct introspection events logged
  for the node is a duplicate application (an introspection the broker lost
  before the database adapter logged it would look like one too);
- ``event``: heartbeats in ``event_logs`` (stored once by its primary key:
  a duplicate cannot show);
- ``adapter-event``: EventBatchUser's raw events in ``event_logs`` (told
  from other events by their metadata mark);
- ``hook``: the hook receiver's ``hook_events`` by hook id (its primary key);
- ``registration``: ``service_registrations`` by instance id, or the
  deregistration event of one the load deregistered itself (tenant: the
  ``namespace`` in the registration's metadata);
- ``dead-letter``: EventBatchUser's malformed messages in ``dead_letters``,
  found by their key ``<namespace>/dlq/<uuid>`` (the table has no namespace:
  the key's prefix is taken as it).

Injected messages (topic faults): for each consumer group that must confirm
their topic (nodes/config.py), dead-lettered when ``dead_letters`` holds the
group's row for the message's topic, partition and offset, applied when the
group's receipt for its event id is in ``processed_events``.

For the sampler: the nodes name their Kafka groups after the broker
incarnation (``bridge-reducer.a3f06f2e``, nodes/consumer.py); the label drops
that suffix, so a group is one line across a broker restart. The bridge's own
backlog is its outbox's unsent rows (nodes/outbox.py), every tenant's.
"""
from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg
import orjson

from harness.adapter import IncarnationSource, Message, Result, SystemAdapter, TruthQuery
from nodes.bus import IncarnationReader
from nodes.config import GROUP_DB_ADAPTER, Topics, required_consumers
from nodes.envelope import EventType, new_envelope

__all__ = ["BridgeAdapter", "EventType", "GROUP_DB_ADAPTER", "LOAD_MARK", "TOPICS"]

TOPICS = Topics()
INCARNATION_SUFFIX = re.compile(r"\.[0-9a-f]{8}$")  # nodes/consumer.py: <group>.<incarnation[:8]>
UNSENT_OUTBOX = "SELECT count(*) FROM outbox WHERE sent_at IS NULL"
FATES = """
    SELECT m.i, m.consumer,
           CASE WHEN EXISTS (SELECT 1 FROM dead_letters d WHERE d.consumer = m.consumer AND d.topic = m.topic
                               AND d.partition = m.partition AND d."offset" = m."offset") THEN 'dead-lettered'
                WHEN m.event_id IS NOT NULL AND EXISTS (SELECT 1 FROM processed_events p
                               WHERE p.consumer = m.consumer AND p.event_id = m.event_id) THEN 'applied'
                ELSE 'unaccounted' END
    FROM unnest($1::int[], $2::text[], $3::text[], $4::int[], $5::bigint[], $6::uuid[])
         AS m(i, consumer, topic, partition, "offset", event_id)"""
OBSERVED_STARTUP = """
    SELECT confidence_score, cardinality(affected_services) AS affected FROM intelligence_patterns
    WHERE namespace = $1 AND pattern_type = 'startup_performance'"""
OBSERVED_ANOMALIES = "SELECT count(*) FROM hook_events WHERE namespace = $1 AND anomalous"
PROXIED_TOOL = "blake3_hash"  # the stamping node's tool the ProxyUser calls
LOAD_MARK = "adapter-event"  # envelope metadata["load"] of EventBatchUser's events: how the truth finds them

TRUTH: dict[str, TruthQuery] = {
    "workflow": TruthQuery("workflow_executions", """
        SELECT w.workflow_id::text, w.namespace,
               GREATEST(1, (SELECT count(*) FROM event_logs e
                            WHERE e.event_type = 'WORKFLOW_COMPLETED' AND e.namespace = w.namespace
                              AND e.key = w.workflow_id::text))::bigint
        FROM workflow_executions w
        WHERE w.namespace = $1 OR w.workflow_id::text = ANY($2::text[])"""),
    "stamp": TruthQuery("metadata_stamps", """
        SELECT s.file_hash, s.namespace,
               GREATEST(1, (SELECT count(*) FROM event_logs e
                            WHERE e.event_type = 'METADATA_STAMPED' AND e.namespace = s.namespace
                              AND e.key = s.file_hash))::bigint
        FROM metadata_stamps s
        WHERE (s.namespace = $1 OR s.file_hash = ANY($2::text[])) AND NOT (s.metadata ? 'workflow_id')"""),
    "introspection": TruthQuery("node_registrations", """
        SELECT r.node_id, r.namespace,
               (1 + GREATEST(0, r.introspections - (SELECT count(DISTINCT e.event_id) FROM event_logs e
                                                     WHERE e.event_type = 'NODE_INTROSPECTION'
                                                       AND e.key = r.node_id)))::bigint
        FROM node_registrations r
        WHERE r.namespace = $1 OR r.node_id = ANY($2::text[])"""),
    # a raw heartbeat is stored once by construction (event_logs' primary key), and the registry's heartbeat
    # counter cannot be pinned on single events of a broker that loses messages: no duplicate can show here
    "event": TruthQuery("event_logs",
                        "SELECT event_id::text, namespace, 1::bigint FROM event_logs "
                        "WHERE event_type = 'NODE_HEARTBEAT' AND (namespace = $1 OR event_id::text = ANY($2::text[]))"),
    # event_id is event_logs' primary key and the database adapter has no other effect, so an adapter event
    # cannot be stored twice: its re-sends are checked by EventBatchUser's batch→idempotent check instead
    "adapter-event": TruthQuery("event_logs",
                                "SELECT event_id::text, namespace, 1::bigint FROM event_logs "
                                f"WHERE (namespace = $1 OR event_id::text = ANY($2::text[])) "
                                f"AND metadata->>'load' = '{LOAD_MARK}'"),
    # a hook is stored once by its hook_id (the receiver's primary key): a retried hook cannot show twice
    "hook": TruthQuery("hook_events",
                       "SELECT hook_id::text, namespace, 1::bigint FROM hook_events "
                       "WHERE namespace = $1 OR hook_id::text = ANY($2::text[])"),
    # a registration is stored once by its instance_id; one the load deregistered itself is found by its
    # deregistration event instead (its row is gone, as asked). Tenant: the namespace in its metadata
    "registration": TruthQuery("service_registrations", """
        SELECT instance_id, namespace, 1::bigint FROM (
            SELECT instance_id, coalesce(metadata->>'namespace', '') AS namespace FROM service_registrations
            WHERE metadata->>'namespace' = $1 OR instance_id = ANY($2::text[])
            UNION
            SELECT payload->>'instance_id', coalesce(payload->'metadata'->>'namespace', '') FROM event_logs
            WHERE event_type = 'registry.service.deregistered'
              AND (payload->'metadata'->>'namespace' = $1 OR payload->>'instance_id' = ANY($2::text[]))
        ) AS r"""),
    "dead-letter": TruthQuery("dead_letters", f"""
        SELECT convert_from(key, 'UTF8'), split_part(convert_from(key, 'UTF8'), '/dlq/', 1), count(*)::bigint
        FROM dead_letters
        WHERE consumer = '{GROUP_DB_ADAPTER}' AND reason <> ''
          AND (substr(key, 1, octet_length(convert_to($1::text || '/dlq/', 'UTF8')))
                 = convert_to($1::text || '/dlq/', 'UTF8')
               OR convert_from(key, 'UTF8') = ANY($2::text[]))
        GROUP BY key"""),
}


class BridgeAdapter(SystemAdapter):
    """The bridge nodes: orchestrator, reducer, stamping, registry, database adapter, intelligence, and the
    integration services (service registry, hook receiver, tool-capture proxy)."""

    name = "bridge"
    env_keys = ("ORCHESTRATOR_URL", "STAMPING_URL", "REGISTRY_URL", "DATABASE_ADAPTER_URL", "INTELLIGENCE_URL",
                "REDUCER_URL", "SERVICE_REGISTRY_URL", "HOOK_RECEIVER_URL", "TOOL_CAPTURE_PROXY_URL")
    result_topics = (TOPICS.registered, TOPICS.workflow, TOPICS.stamped, TOPICS.registry_request)
    truth_queries = TRUTH
    _backlog_conn: asyncpg.Connection | None = None

    def event(self, event_type: str, payload: Mapping[str, Any], *, topic: str, key: str, namespace: str,
              source: str, correlation_id: str | None = None, event_id: str | None = None,
              metadata: Mapping[str, Any] | None = None) -> Message:
        env = new_envelope(EventType(event_type), dict(payload), source_node_id=source, namespace=namespace,
                           correlation_id=correlation_id, metadata=dict(metadata or {}))
        if event_id is not None:
            env = env.model_copy(update={"event_id": uuid.UUID(event_id)})
        return Message(topic=topic, key=key, value=env.to_bytes(), event_id=str(env.event_id),
                       correlation_id=str(env.correlation_id))

    def read_result(self, raw: bytes | None) -> Result | None:
        if not raw:
            return None
        env = orjson.loads(raw)
        if not isinstance(env, dict):
            return None
        corr, etype = env.get("correlation_id"), env.get("event_type")
        if not isinstance(corr, str) or not isinstance(etype, str):
            return None
        return Result(correlation_id=corr, event_type=etype, body=env)

    async def message_fates(self, env: Mapping[str, str],
                            messages: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Dead-lettered or applied, per group that must confirm the message's topic (see the module docstring)."""
        url = env.get("DATABASE_URL")
        if not url:
            raise RuntimeError(f"{self.name}: DATABASE_URL is unknown, so the injected messages cannot be looked up")
        pairs = [(i, group) for i, m in enumerate(messages) for group in required_consumers(TOPICS, m["topic"])]
        columns = [[i for i, _ in pairs], [g for _, g in pairs],
                   *([messages[i][name] for i, _ in pairs] for name in ("topic", "partition", "offset")),
                   [_uuid(messages[i].get("event_id")) for i, _ in pairs]]
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch(FATES, *columns)
        finally:
            await conn.close()
        return [{"index": i, "consumer": group, "fate": fate} for i, group, fate in rows]

    async def observe(self, env: Mapping[str, str], namespace: str) -> dict[str, float]:
        """What the intelligence pipeline found in the run's namespace, and what the proxy's cache learned.

        ``startup_confidence`` and ``startup_affected_services``: the run's startup_performance pattern (0 when
        none was found); ``anomalies_found``: hooks of the run the pipeline called anomalous;
        ``cache_hit_ratio`` and ``cache_confidence`` of the stamping node's ``blake3_hash`` tool, over the
        proxy's life (on a stack started for the run, the run's own calls).
        """
        observed: dict[str, float] = {}
        url = env.get("DATABASE_URL")
        if url:
            conn = await asyncpg.connect(url)
            try:
                row = await conn.fetchrow(OBSERVED_STARTUP, namespace)
                observed["startup_confidence"] = float(row["confidence_score"]) if row else 0.0
                observed["startup_affected_services"] = float(row["affected"]) if row else 0.0
                observed["anomalies_found"] = float(await conn.fetchval(OBSERVED_ANOMALIES, namespace))
            finally:
                await conn.close()
        proxy = env.get("TOOL_CAPTURE_PROXY_URL")
        if proxy:
            import aiohttp

            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
                async with http.get(f"{proxy.rstrip('/')}/cache/stats") as resp:
                    stats = (await resp.json())["data"]
            tool = stats["adaptive_caching"]["tools"].get(PROXIED_TOOL)
            if tool:
                observed["cache_hit_ratio"] = float(tool["hit_ratio"])
                observed["cache_confidence"] = float(tool["confidence_score"])
        return observed

    def stack_env(self, options: Any) -> dict[str, str]:
        """The nodes heartbeat at the simulated nodes' ``--heartbeat`` interval (1 s by default)."""
        return {"HEARTBEAT_INTERVAL_SECONDS": str(getattr(options, "heartbeat", None) or 1.0)}

    def broker_incarnation(self, bootstrap: str) -> IncarnationSource:
        """The nodes mark each broker incarnation (nodes/bus.py): a memory broker that restarted is told apart."""
        return IncarnationReader(bootstrap, "bridgestorm-observer")

    def consumer_group_label(self, group: str) -> str | None:
        """``bridge-reducer.a3f06f2e`` -> ``bridge-reducer``, ``node-reducer-c7a40d.a3f06f2e`` -> ``node-reducer-c7a40d``."""
        return INCARNATION_SUFFIX.sub("", group)

    async def backlog(self, env: Mapping[str, str]) -> dict[str, int]:
        """Unsent outbox rows, on one connection kept for the run (a new one each second would fork a backend)."""
        url = env.get("DATABASE_URL")
        if not url:
            return {}
        conn = self._backlog_conn
        if conn is None or conn.is_closed():
            conn = self._backlog_conn = await asyncpg.connect(url, timeout=2.0)
        try:
            return {"outbox": int(await conn.fetchval(UNSENT_OUTBOX))}
        except BaseException:  # a half-done query (a timeout cancelled it) leaves the connection unusable
            self._backlog_conn = None
            conn.terminate()
            raise


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if isinstance(value, str) else None
    except ValueError:
        return None
