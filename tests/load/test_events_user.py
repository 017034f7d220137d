"""EventBatchUser against the real stack: 1,500-event batches stored once, in order per key, malformed dead-lettered.

What the user's own checks claim (its e2e and check samples) is checked here
again from PostgreSQL directly, so a bug in the user cannot pass itself.
"""
from __future__ import annotations

import asyncio
import json
from collections import defaultdict

import asyncpg

from adapters.bridge.adapter import GROUP_DB_ADAPTER
from adapters.bridge.batches import MALFORMED, dead_letter_prefix


def _stored(database_url: str, namespace: str) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    """This run's events in event_logs, and its dead letters (found by their key prefix)."""
    async def q() -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
        conn = await asyncpg.connect(database_url)
        try:
            events = await conn.fetch(
                "SELECT event_id::text, key, partition, \"offset\", inserted_at, (payload->>'seq')::int AS seq"
                " FROM event_logs WHERE namespace = $1 AND metadata->>'load' = 'adapter-event'", namespace)
            dead = await conn.fetch(
                "SELECT convert_from(key, 'UTF8') AS key, reason FROM dead_letters WHERE consumer = $1"
                " AND position(convert_to($2::text, 'UTF8') IN key) = 1", GROUP_DB_ADAPTER, dead_letter_prefix(namespace))
            return events, dead
        finally:
            await conn.close()

    return asyncio.run(q())


def test_event_batches_are_stored_once_in_order_and_malformed_ones_dead_lettered(run_locust, stack):
    run = run_locust("events.py", "-u", "1", "-r", "1", "-t", "8s", "--batch-size", "1500",
                     "--resend-share", "0.05", "--malformed", "5", "--drain", "20")
    tail = run.output[-3000:]
    assert run.returncode in (0, 1), tail  # 1: a latency floor missed on a busy machine, never an error
    namespace = json.loads((run.run_dir / "run.json").read_text())["namespace"]
    s, ledger, truth = run.samples(), run.ledger(), run.truth()

    # every batch that finished was stored, in order, from its first copies, its malformed ones dead-lettered
    for name in ("batch→stored", "batch→ordered", "batch→idempotent", "batch→dead-lettered"):
        done = s[s["name"] == name]
        assert len(done) >= 1 and done["ok"].all(), (name, done["error"].dropna().tolist()[:3], tail)
    published = s[s["type"] == "kafka"]
    assert published["ok"].all(), published["error"].dropna().tolist()[:3]

    # ledger: whole batches of 1,500 distinct events, 5 % of them twice, 5 malformed per batch
    events = ledger[ledger["kind"] == "adapter-event"]
    batches = len(s[s["name"] == "batch→stored"])
    assert events["item_id"].nunique() >= 1500 * batches and events["item_id"].nunique() % 1500 == 0
    sends = events.groupby("item_id").size()
    assert set(sends.unique()) <= {1, 2} and (sends == 2).sum() == round(0.05 * 1500) * (len(sends) // 1500)
    dead_sent = set(ledger[ledger["kind"] == "dead-letter"]["item_id"])
    assert len(dead_sent) == 5 * (len(sends) // 1500)

    # truth: every acknowledged event once; what is stored was sent (a batch the stop interrupted has ledger rows,
    # acknowledged or not, and may or may not be stored); every acknowledged malformed message dead-lettered once
    sent = set(events["item_id"])
    acked = set(events[events["acked"]]["item_id"])
    stored_truth = truth[truth["kind"] == "adapter-event"]
    assert acked <= set(stored_truth["item_id"]) <= sent and (stored_truth["count"] == 1).all()
    dead_acked = set(ledger[ledger["acked"] & (ledger["kind"] == "dead-letter")]["item_id"])
    dead_truth = truth[truth["kind"] == "dead-letter"]
    assert dead_acked <= set(dead_truth["item_id"]) <= dead_sent and (dead_truth["count"] == 1).all()
    analysis = json.loads((run.run_dir / "analysis.json").read_text())
    zero = ("lost", "duplicated", "unexpected", "leaked")
    assert {k: analysis["loss"]["totals"][k] for k in zero} == dict.fromkeys(zero, 0), analysis["loss"]["by_kind"]

    # PostgreSQL directly: per key, sequence order = offset order = insert order, no sequence number skipped
    rows, dead = _stored(stack.env["DATABASE_URL"], namespace)
    assert acked <= {r["event_id"] for r in rows} <= sent
    by_key: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for r in rows:
        by_key[r["key"]].append(r)
    for key, key_rows in by_key.items():
        key_rows.sort(key=lambda r: r["seq"])
        assert len({r["partition"] for r in key_rows}) == 1, key
        assert [r["offset"] for r in key_rows] == sorted(r["offset"] for r in key_rows), key
        assert [r["inserted_at"] for r in key_rows] == sorted(r["inserted_at"] for r in key_rows), key
        assert [r["seq"] for r in key_rows] == list(range(1, len(key_rows) + 1)), key
    # the dead letters carry the reason the adapter gives for each sort of malformed message
    assert dead_acked <= {r["key"] for r in dead} <= dead_sent
    reasons = [r["reason"] for r in dead]
    assert all(any(expected in reason for _s, _v, expected in MALFORMED) for reason in reasons), reasons
    for _sort, _value, expected in MALFORMED:
        assert sum(expected in reason for reason in reasons) >= batches, (expected, reasons)
    # the lag samples: the adapter's lag for every stored event of every finished batch
    assert (run.run_dir / "lag").is_dir() and analysis["lag"], tail
