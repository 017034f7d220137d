"""The drain step: after the load, read what the system under test stored into ``truth/``.

Only this run's namespace is read, so earlier runs on the same database are
neither counted as lost nor as unexpected. The drain waits until every item
the ledger says was acknowledged is stored and the counts have stopped
changing (the nodes finished their backlog), or until the drain period ends.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

import asyncpg

from rundir.read import read_folder
from rundir.write import write_truth
from nodes.config import GROUP_DB_ADAPTER

log = logging.getLogger(__name__)

# kind -> query returning (item_id, namespace, count) for namespace $1
QUERIES: dict[str, tuple[str, str]] = {
    "workflow": ("workflow_executions", """
        SELECT w.workflow_id::text, w.namespace,
               GREATEST(1, (SELECT count(*) FROM event_logs e
                            WHERE e.event_type = 'WORKFLOW_COMPLETED' AND e.namespace = w.namespace
                              AND e.key = w.workflow_id::text))::bigint
        FROM workflow_executions w WHERE w.namespace = $1"""),
    "stamp": ("metadata_stamps",
              "SELECT file_hash, namespace, count(*)::bigint FROM metadata_stamps WHERE namespace = $1 "
              # a workflow's own stamp (the orchestrator's) is part of that workflow, not a stamp the load sent
              "AND NOT (metadata ? 'workflow_id') GROUP BY file_hash, namespace"),
    "introspection": ("node_registrations",
                      "SELECT node_id, namespace, 1::bigint FROM node_registrations WHERE namespace = $1"),
    "event": ("event_logs",
              "SELECT event_id::text, namespace, 1::bigint FROM event_logs "
              "WHERE namespace = $1 AND event_type = 'NODE_HEARTBEAT'"),
    # EventBatchUser's raw events (users/events.py), told from other events of the run by their metadata mark;
    # event_id is event_logs' primary key, so a count above 1 cannot happen there: a re-sent event is one row
    "adapter-event": ("event_logs",
                      "SELECT event_id::text, namespace, 1::bigint FROM event_logs "
                      "WHERE namespace = $1 AND metadata->>'load' = 'adapter-event'"),
    # EventBatchUser's malformed messages, dead-lettered by the database adapter with a reason; dead_letters
    # has no namespace column, so they are found by their key, <namespace>/dlq/<uuid>
    "dead-letter": ("dead_letters", f"""
        SELECT convert_from(key, 'UTF8'), $1::text, count(*)::bigint FROM dead_letters
        WHERE consumer = '{GROUP_DB_ADAPTER}' AND reason <> ''
          AND substr(key, 1, octet_length(convert_to($1::text || '/dlq/', 'UTF8')))
              = convert_to($1::text || '/dlq/', 'UTF8')
        GROUP BY key"""),
}


async def read_truth(database_url: str, namespace: str, kinds: list[str] | None = None) -> list[dict[str, Any]]:
    """Every stored item of ``namespace`` as truth rows."""
    conn = await asyncpg.connect(database_url)
    try:
        rows: list[dict[str, Any]] = []
        for kind, (source, query) in QUERIES.items():
            if kinds is not None and kind not in kinds:
                continue
            for item_id, ns, count in await conn.fetch(query, namespace):
                rows.append({"kind": kind, "item_id": item_id, "namespace": ns, "count": count, "source": source})
        return rows
    finally:
        await conn.close()


async def drain_and_read(database_url: str, namespace: str, drain_s: float, kinds: list[str] | None = None,
                         settle_s: float = 1.5, expected: set[tuple[str, str]] | None = None
                         ) -> list[dict[str, Any]]:
    """Poll until the truth holds every ``expected`` (kind, item_id) and has not changed for ``settle_s``.

    ``expected`` is what the load saw acknowledged (the ledger): a quiet
    database alone does not end the drain, because a bridge still recovering
    from a fault (a consumer waiting for its group) is quiet too. The drain
    never outlasts ``drain_s``; what is still missing then is logged and the
    analysis counts it as lost.
    """
    deadline = time.monotonic() + drain_s
    last: list[tuple[str, str, int]] | None = None
    stable_since = time.monotonic()
    while True:
        rows = await read_truth(database_url, namespace, kinds)
        key = sorted((r["kind"], r["item_id"], r["count"]) for r in rows)
        if last is None or key != last:
            last, stable_since = key, time.monotonic()
        missing = missing_items(expected, rows)
        if not missing and time.monotonic() - stable_since >= settle_s:
            return rows
        if time.monotonic() >= deadline:
            if missing:
                by_kind = Counter(kind for kind, _ in missing)
                log.warning("drain: after %.0f s, acknowledged items not stored: %s", drain_s,
                            ", ".join(f"{n} {kind}" for kind, n in sorted(by_kind.items())))
            return rows
        await asyncio.sleep(0.3)


def missing_items(expected: set[tuple[str, str]] | None, rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """The expected (kind, item_id) pairs the truth rows do not hold."""
    if not expected:
        return set()
    return expected - {(r["kind"], r["item_id"]) for r in rows}


def acknowledged(run_dir: str, kinds: list[str] | None = None) -> set[tuple[str, str]]:
    """(kind, item_id) of every acknowledged ledger row on disk, of the kinds the truth reads."""
    table = read_folder(run_dir, "ledger", columns=["kind", "item_id", "acked"])
    if table is None:
        return set()
    wanted = set(kinds or QUERIES)
    return {(kind, item_id) for kind, item_id, acked in zip(*(table.column(c).to_pylist() for c in
                                                               ("kind", "item_id", "acked")))
            if acked and kind in wanted}


def write(run_dir: str, rows: list[dict[str, Any]]) -> None:
    write_truth(run_dir, rows)
