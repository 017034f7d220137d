"""The drain step: after the load, wait for the system to store what it acknowledged, then keep the truth.

The truth is read through the run's adapter (``SystemAdapter.read_truth``),
for this run's namespace only, so earlier runs on the same store are neither
counted as lost nor as unexpected. The drain waits until every item the
ledger says was acknowledged is stored and the truth has stopped changing
(the system finished its backlog), or until the drain period ends.

Then the messages the run's topic faults injected (the fault journal's
``observed.messages``) are looked up the same way, through
``SystemAdapter.message_fates``: the wait ends when every one of them is
dead-lettered or applied by every group that reads its topic, or at the
drain's end; ``injected/`` keeps the fates.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Collection, Mapping
from typing import Any

from harness.adapter import SystemAdapter
from rundir.journal import FaultJournal
from rundir.read import read_folder
from rundir.write import write_injected, write_truth

log = logging.getLogger(__name__)


async def drain_and_read(adapter: SystemAdapter, env: Mapping[str, str], namespace: str, drain_s: float,
                         kinds: Collection[str] | None = None, settle_s: float = 1.5,
                         expected: set[tuple[str, str]] | None = None,
                         sent: Mapping[str, Collection[str]] | None = None) -> list[dict[str, Any]]:
    """Poll until the truth holds every ``expected`` (kind, item_id) and has not changed for ``settle_s``.

    ``expected`` is what the load saw acknowledged (the ledger): a quiet
    store alone does not end the drain, because a system still recovering
    from a fault (a consumer waiting for its group) is quiet too. The drain
    never outlasts ``drain_s``; what is still missing then is logged and the
    analysis counts it as lost.
    """
    deadline = time.monotonic() + drain_s
    last: list[tuple[str, str, int]] | None = None
    stable_since = time.monotonic()
    while True:
        rows = await adapter.read_truth(env, namespace, kinds, sent)
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


def ledger_items(run_dir: str, kinds: Collection[str]) -> tuple[set[tuple[str, str]], dict[str, set[str]]]:
    """From the ledger on disk, of the kinds the truth reads: the acknowledged (kind, item_id) pairs, and
    every item sent per kind (acknowledged or not: the truth looks each up wherever it was stored)."""
    table = read_folder(run_dir, "ledger", columns=["kind", "item_id", "acked"])
    acked_items: set[tuple[str, str]] = set()
    sent: dict[str, set[str]] = {}
    if table is None:
        return acked_items, sent
    wanted = set(kinds)
    for kind, item_id, acked in zip(*(table.column(c).to_pylist() for c in ("kind", "item_id", "acked"))):
        if kind in wanted:
            sent.setdefault(kind, set()).add(item_id)
            if acked:
                acked_items.add((kind, item_id))
    return acked_items, sent


def write(run_dir: str, rows: list[dict[str, Any]]) -> None:
    write_truth(run_dir, rows)


def injected_messages(run_dir: str) -> list[dict[str, Any]]:
    """Every message the run's topic faults published, from the fault journal, each with its fault and topic."""
    out: list[dict[str, Any]] = []
    for entry in FaultJournal(run_dir).read():
        observed = entry.get("observed") or {}
        for message in observed.get("messages") or ():
            out.append({"fault_id": entry["fault_id"], "topic": observed.get("topic"), "label": message["label"],
                        "partition": message["partition"], "offset": message["offset"],
                        "event_id": message.get("event_id")})
    return out


async def wait_for_fates(adapter: SystemAdapter, env: Mapping[str, str], messages: list[dict[str, Any]],
                         wait_s: float) -> list[dict[str, Any]] | None:
    """Fates of ``messages`` (INJECTED_SCHEMA rows) once none is unaccounted, or after ``wait_s``; None when the
    adapter cannot tell."""
    deadline = time.monotonic() + wait_s
    while True:
        fates = await adapter.message_fates(env, messages)
        if fates is None:
            return None
        rows = [{k: messages[f["index"]][k] for k in ("fault_id", "label", "topic", "partition", "offset", "event_id")}
                | {"consumer": f["consumer"], "fate": f["fate"]} for f in fates]
        unaccounted = sum(r["fate"] == "unaccounted" for r in rows)
        if not unaccounted or time.monotonic() >= deadline:
            if unaccounted:
                log.warning("drain: %d of %d injected messages' fates are unaccounted for", unaccounted, len(rows))
            return rows
        await asyncio.sleep(0.3)


def write_fates(run_dir: str, rows: list[dict[str, Any]]) -> None:
    write_injected(run_dir, rows)
