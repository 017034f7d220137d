"""Reducer node: consumes workflow events in batches and aggregates them.

One transaction per batch: `workflow_executions` gets one row per workflow
(latest state by sequence, event count, and how many events arrived out of
order: not newer than every event applied before them, stored or earlier in
the batch — there should be none, since events are keyed by workflow id), and
`bridge_states` one row per namespace with running totals. Offsets are
committed after the transaction (see `nodes.consumer`).
"""
from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from nodes.config import GROUP_REDUCER
from nodes.consumer import Received
from nodes.envelope import EventType
from nodes.failures import Unprocessable
from nodes.service import Node

_UPSERT_EXECUTIONS = """
WITH input AS (
  SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::int[], $6::int[],
                       $7::timestamptz[], $8::timestamptz[], $9::float8[])
    AS t(workflow_id, namespace, state, last_seq, events, out_of_order, started_at, completed_at, duration_ms)
)
INSERT INTO workflow_executions AS w
  (workflow_id, namespace, state, last_sequence, events, out_of_order, started_at, completed_at, duration_ms)
SELECT workflow_id, namespace, state, last_seq, events, out_of_order, started_at, completed_at, duration_ms FROM input
ON CONFLICT (workflow_id) DO UPDATE SET
  state = CASE WHEN EXCLUDED.last_sequence > w.last_sequence THEN EXCLUDED.state ELSE w.state END,
  last_sequence = GREATEST(w.last_sequence, EXCLUDED.last_sequence),
  events = w.events + EXCLUDED.events,
  out_of_order = w.out_of_order + EXCLUDED.out_of_order,
  started_at = COALESCE(w.started_at, EXCLUDED.started_at),
  completed_at = COALESCE(EXCLUDED.completed_at, w.completed_at),
  duration_ms = COALESCE(EXCLUDED.duration_ms, w.duration_ms),
  updated_at = clock_timestamp()
"""

_UPSERT_NAMESPACES = """
INSERT INTO bridge_states AS b
  (namespace, workflows_started, workflows_completed, workflows_failed, transitions, batches, largest_batch)
SELECT ns, s, c, f, t, 1, n
FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::int[]) AS x(ns, s, c, f, t, n)
ON CONFLICT (namespace) DO UPDATE SET
  workflows_started = b.workflows_started + EXCLUDED.workflows_started,
  workflows_completed = b.workflows_completed + EXCLUDED.workflows_completed,
  workflows_failed = b.workflows_failed + EXCLUDED.workflows_failed,
  transitions = b.transitions + EXCLUDED.transitions,
  batches = b.batches + 1,
  largest_batch = GREATEST(b.largest_batch, EXCLUDED.largest_batch),
  updated_at = clock_timestamp()
"""


@dataclass
class _Execution:
    namespace: str
    state: str = "pending"
    last_seq: int = -1  # the highest sequence applied: the stored one, then this batch's
    events: int = 0
    out_of_order: int = 0
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_ms: float | None = None


@dataclass
class _Totals:
    started: int = 0
    completed: int = 0
    failed: int = 0
    transitions: int = 0
    items: int = 0
    workflows: set = field(default_factory=set)


class ReducerNode(Node):
    kind = "reducer"

    def capabilities(self) -> dict:
        return {"consumes": [self.settings.topics.workflow], "aggregates": ["workflow_executions", "bridge_states"]}

    async def on_start(self) -> None:
        self.add_consumer(GROUP_REDUCER, [self.settings.topics.workflow], self.reduce, max_records=5000, timeout_ms=20)

    async def reduce(self, conn: asyncpg.Connection, records: list[Received]) -> None:
        positions = [_position(rec) for rec in records]
        # an event is out of order when it is not newer than every one applied before it, stored or in this batch
        stored = dict(await conn.fetch("SELECT workflow_id, last_sequence FROM workflow_executions"
                                       " WHERE workflow_id = ANY($1::uuid[])", list({w for w, _ in positions})))
        executions: dict[uuid.UUID, _Execution] = {}
        totals: dict[str, _Totals] = defaultdict(_Totals)
        for rec, (workflow_id, sequence) in zip(records, positions):
            env = rec.envelope
            ex = executions.setdefault(workflow_id, _Execution(namespace=env.namespace,
                                                               last_seq=stored.get(workflow_id, -1)))
            if sequence <= ex.last_seq:
                ex.out_of_order += 1
            if sequence > ex.last_seq:
                ex.last_seq = sequence
                ex.state = str(env.payload.get("to_state") or env.payload.get("state") or ex.state)
            ex.events += 1
            t = totals[env.namespace]
            t.items += 1
            if env.event_type == EventType.WORKFLOW_STARTED:
                ex.started_at = env.timestamp
                t.started += 1
            elif env.event_type == EventType.STATE_TRANSITION:
                t.transitions += 1
            elif env.event_type in (EventType.WORKFLOW_COMPLETED, EventType.WORKFLOW_FAILED):
                ex.completed_at = env.timestamp
                ex.duration_ms = env.payload.get("duration_ms")
                if env.event_type == EventType.WORKFLOW_COMPLETED:
                    t.completed += 1
                else:
                    t.failed += 1
        if executions:
            ids = list(executions)
            rows = [executions[i] for i in ids]
            await conn.execute(
                _UPSERT_EXECUTIONS,
                ids,
                [r.namespace for r in rows],
                [r.state for r in rows],
                [r.last_seq for r in rows],
                [r.events for r in rows],
                [r.out_of_order for r in rows],
                [r.started_at for r in rows],
                [r.completed_at for r in rows],
                [r.duration_ms for r in rows],
            )
        if totals:
            names = list(totals)
            await conn.execute(
                _UPSERT_NAMESPACES,
                names,
                [totals[n].started for n in names],
                [totals[n].completed for n in names],
                [totals[n].failed for n in names],
                [totals[n].transitions for n in names],
                [len(records) for n in names],
            )


def _position(rec: Received) -> tuple[uuid.UUID, int]:
    """The workflow and sequence of one event; one without them is refused (skipped silently, it would look
    applied: dead-lettered instead, and the database adapter still logs it)."""
    env = rec.envelope
    try:
        return uuid.UUID(str(env.payload["workflow_id"])), int(env.payload.get("sequence", 0))
    except (KeyError, ValueError, TypeError, OverflowError) as exc:
        raise Unprocessable(f"not a workflow event: no usable workflow_id and sequence "
                            f"({type(exc).__name__}: {exc})"[:500]) from None
