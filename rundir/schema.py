"""Folder names, column schemas and file names of a run directory (docs/run-directory.md).

Writers and readers both take the schemas from here, so a renamed column
breaks the writer and the reader together, in the same test run.
"""
from __future__ import annotations

import pyarrow as pa

SAMPLES_SCHEMA = pa.schema(
    [
        pa.field("ts_intended", pa.float64(), nullable=True),
        pa.field("ts_start", pa.float64(), nullable=False),
        pa.field("type", pa.string(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
        pa.field("latency_ms", pa.float64(), nullable=False),
        pa.field("ok", pa.bool_(), nullable=False),
        pa.field("bytes", pa.int64(), nullable=False),
        pa.field("error", pa.string(), nullable=True),
        pa.field("key", pa.string(), nullable=True),
        pa.field("process", pa.string(), nullable=False),
        # when the arrival was ready to start: its intended start, or later when no user was free to take it;
        # ts_start - ts_ready is the generator's own lateness (analysis/generator.py)
        pa.field("ts_ready", pa.float64(), nullable=True),
    ]
)

LEDGER_SCHEMA = pa.schema(
    [
        pa.field("kind", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("namespace", pa.string(), nullable=False),
        pa.field("ts_sent", pa.float64(), nullable=False),
        pa.field("acked", pa.bool_(), nullable=False),
        pa.field("process", pa.string(), nullable=False),
    ]
)

TRUTH_SCHEMA = pa.schema(
    [
        pa.field("kind", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("namespace", pa.string(), nullable=False),
        pa.field("count", pa.int64(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
    ]
)

RESOURCES_SCHEMA = pa.schema(
    [
        pa.field("ts", pa.float64(), nullable=False),
        pa.field("part", pa.string(), nullable=False),
        pa.field("rss_bytes", pa.int64(), nullable=False),
        pa.field("cpu_percent", pa.float64(), nullable=False),
    ]
)

# a lag row is a time lag (lag_ms: how long ago what the consumer just handled was sent) or a
# count (lag_messages: how many messages wait for it), one or the other; source says whose count
# it is: "group" (a consumer group's lag read from the broker) or "system" (the system's own
# backlog, e.g. unsent outbox rows, from the adapter); null for a time lag. committed: for a group,
# its committed offsets summed (a group with lag whose committed sum does not move is stalled)
LAG_SOURCES = ("group", "system")
LAG_SCHEMA = pa.schema(
    [
        pa.field("ts", pa.float64(), nullable=False),
        pa.field("consumer", pa.string(), nullable=False),
        pa.field("lag_ms", pa.float64(), nullable=True),
        pa.field("lag_messages", pa.int64(), nullable=True),
        pa.field("source", pa.string(), nullable=True),
        pa.field("committed", pa.int64(), nullable=True),
    ]
)

# what became of each message a topic fault injected, per consumer group that reads its topic (the
# drain step asks the adapter): fate is one of FATES. One row per (fault, message, consumer)
FATES = ("dead-lettered", "applied", "unaccounted")
INJECTED_SCHEMA = pa.schema(
    [
        pa.field("fault_id", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),  # class:name in the catalogue, or file:line, or replay:n
        pa.field("topic", pa.string(), nullable=False),
        pa.field("partition", pa.int64(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("event_id", pa.string(), nullable=True),
        pa.field("consumer", pa.string(), nullable=False),
        pa.field("fate", pa.string(), nullable=False),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "samples": SAMPLES_SCHEMA,
    "ledger": LEDGER_SCHEMA,
    "truth": TRUTH_SCHEMA,
    "resources": RESOURCES_SCHEMA,
    "lag": LAG_SCHEMA,
    "injected": INJECTED_SCHEMA,
}

# columns added to the contract after files were written without them: such a file reads them as nulls,
# and a writer may leave them out (they are nullable)
ADDED_COLUMNS: dict[str, set[str]] = {"lag": {"lag_messages", "source", "committed"}, "samples": {"ts_ready"}}
# per folder, columns of which every row sets at least one
ONE_OF: dict[str, tuple[str, ...]] = {"lag": ("lag_ms", "lag_messages")}

RUN_JSON = "run.json"
# numbers the system under test reported about the run, read once after the drain
# (SystemAdapter.observe): {"<name>": number, ...}
OBSERVATIONS = "observations.json"
JOURNAL = "chaos.jsonl"
EXPERIMENTS = "experiments.jsonl"


class RunDirError(Exception):
    """A run directory file is missing or damaged; the message names the file (and line)."""
