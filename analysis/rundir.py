"""The run directory contract (docs/run-directory.md) as code.

Writers (the Locust load layer, the drain step, the chaos journal, samplers)
import the schemas and ``write_*`` helpers from here; the analysis reads
everything back with ``load_run``. Keeping both sides in one module is what
makes the contract hold: a renamed column breaks the writer and the reader
together, in the same test run.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from nodes.config import mask_url  # one masker for the whole project; re-exported here

# --------------------------------------------------------------------------
# schemas (names and types exactly as docs/run-directory.md)

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

LAG_SCHEMA = pa.schema(
    [
        pa.field("ts", pa.float64(), nullable=False),
        pa.field("consumer", pa.string(), nullable=False),
        pa.field("lag_ms", pa.float64(), nullable=False),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "samples": SAMPLES_SCHEMA,
    "ledger": LEDGER_SCHEMA,
    "truth": TRUTH_SCHEMA,
    "resources": RESOURCES_SCHEMA,
    "lag": LAG_SCHEMA,
}

RUN_JSON = "run.json"
JOURNAL = "chaos.jsonl"
# journal fields a reader needs; the rest (target_kind, parameters, observed...) is kept as-is
JOURNAL_REQUIRED = ("fault_id", "name", "started_at")
JOURNAL_FIELDS = (
    "fault_id", "name", "action", "target", "target_kind", "parameters",
    "started_at", "healed_at", "outcome", "observed", "error",
)


class RunDirError(Exception):
    """A run directory file is missing or damaged; the message names the file."""


# --------------------------------------------------------------------------
# password masking (run.json and the report never show a secret)

_SECRET_KEY = re.compile(r"(password|passwd|secret|token|api[_-]?key)", re.IGNORECASE)


def mask_secrets(value: Any) -> Any:
    """Mask passwords in URLs, and the values of keys that look like secrets, recursively."""
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, Mapping):
        return {
            k: ("***" if isinstance(k, str) and _SECRET_KEY.search(k) and v not in (None, "") else mask_secrets(v))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [mask_secrets(v) for v in value]
    return value


# --------------------------------------------------------------------------
# writing


def process_id() -> str:
    """``<host>:<pid>``, the value of every ``process`` column."""
    return f"{socket.gethostname()}:{os.getpid()}"


_counter = itertools.count()
_counter_lock = threading.Lock()


def _unique_name(prefix: str) -> str:
    with _counter_lock:
        n = next(_counter)
    return f"{prefix}-{socket.gethostname()}-{os.getpid()}-{time.time_ns()}-{n:06d}.parquet"


def to_table(folder: str, rows: pa.Table | Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]) -> pa.Table:
    """Rows as a table of ``folder``'s schema: a pyarrow Table, a dict of columns or a list of dicts."""
    schema = SCHEMAS[folder]
    if isinstance(rows, pa.Table):
        missing = [n for n in schema.names if n not in rows.column_names]
        if missing:
            raise ValueError(f"{folder} batch lacks columns {missing}")
        return rows.select(schema.names).cast(schema)
    if isinstance(rows, Mapping):
        missing = [n for n in schema.names if n not in rows]
        if missing:
            raise ValueError(f"{folder} batch lacks columns {missing}")
        return pa.Table.from_pydict({n: rows[n] for n in schema.names}, schema=schema)
    rows = list(rows)
    if rows:
        missing = [n for n in schema.names if n not in rows[0]]
        if missing:
            raise ValueError(f"{folder} row lacks columns {missing}")
    return pa.Table.from_pylist(rows, schema=schema)


def write_batch(
    run_dir: str | os.PathLike[str],
    folder: str,
    rows: pa.Table | Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]],
    prefix: str | None = None,
) -> Path | None:
    """Write one batch to ``<run_dir>/<folder>/<unique>.parquet`` atomically.

    The file is written under a ``.tmp`` name and renamed, so a reader running
    while a process writes never sees half a file. Returns the path, or None
    for an empty batch (no empty files).
    """
    if folder not in SCHEMAS:
        raise ValueError(f"unknown run directory folder {folder!r}; one of {sorted(SCHEMAS)}")
    table = to_table(folder, rows)
    if table.num_rows == 0:
        return None
    out_dir = Path(run_dir) / folder
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / _unique_name(prefix or folder)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
    return path


def write_samples(run_dir: str | os.PathLike[str], rows: Any) -> Path | None:
    """One batch of samples (see SAMPLES_SCHEMA)."""
    return write_batch(run_dir, "samples", rows)


def write_ledger(run_dir: str | os.PathLike[str], rows: Any) -> Path | None:
    """One batch of ledger rows (see LEDGER_SCHEMA)."""
    return write_batch(run_dir, "ledger", rows)


def write_truth(run_dir: str | os.PathLike[str], rows: Any) -> Path | None:
    """What the system stored, read after the drain (see TRUTH_SCHEMA)."""
    return write_batch(run_dir, "truth", rows)


def write_resources(run_dir: str | os.PathLike[str], rows: Any) -> Path | None:
    """Memory and CPU samples of the stack's parts (see RESOURCES_SCHEMA)."""
    return write_batch(run_dir, "resources", rows)


def write_lag(run_dir: str | os.PathLike[str], rows: Any) -> Path | None:
    """Consumer lag samples (see LAG_SCHEMA)."""
    return write_batch(run_dir, "lag", rows)


class BatchWriter:
    """Buffers rows in column lists and writes a parquet file every ``batch_rows`` rows.

    For writers that produce one row at a time (a Locust request event
    handler): memory stays bounded and each flush is one vectorised write.
    Thread-safe; call ``close()`` (or use it as a context manager) at the end.
    """

    def __init__(self, run_dir: str | os.PathLike[str], folder: str, batch_rows: int = 50_000) -> None:
        if folder not in SCHEMAS:
            raise ValueError(f"unknown run directory folder {folder!r}; one of {sorted(SCHEMAS)}")
        self.run_dir = Path(run_dir)
        self.folder = folder
        self.batch_rows = batch_rows
        self.rows_written = 0
        self._names = SCHEMAS[folder].names
        self._columns: dict[str, list[Any]] = {n: [] for n in self._names}
        self._lock = threading.Lock()

    def add(self, **row: Any) -> None:
        """Add one row given as keyword arguments (every column of the schema)."""
        try:
            values = [row[n] for n in self._names]
        except KeyError:
            missing = [n for n in self._names if n not in row]
            raise ValueError(f"{self.folder} row lacks columns {missing}") from None
        with self._lock:
            for n, v in zip(self._names, values):
                self._columns[n].append(v)
            full = len(self._columns[self._names[0]]) >= self.batch_rows
        if full:
            self.flush()

    def flush(self) -> Path | None:
        """Write what is buffered (nothing when empty)."""
        with self._lock:
            columns, self._columns = self._columns, {n: [] for n in self._names}
        n = len(columns[self._names[0]])
        if n == 0:
            return None
        path = write_batch(self.run_dir, self.folder, columns)
        self.rows_written += n
        return path

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_run_info(run_dir: str | os.PathLike[str], info: Mapping[str, Any]) -> Path:
    """Write ``run.json`` with every password masked (atomically)."""
    path = Path(run_dir) / RUN_JSON
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(RUN_JSON + ".tmp")
    tmp.write_text(json.dumps(mask_secrets(dict(info)), indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def append_journal(run_dir: str | os.PathLike[str], entry: Mapping[str, Any]) -> Path:
    """Append one fault (or burst) line to ``chaos.jsonl``; the chaos module has its own writer too."""
    missing = [k for k in JOURNAL_REQUIRED if k not in entry]
    if missing:
        raise ValueError(f"journal entry lacks {missing}")
    path = Path(run_dir) / JOURNAL
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(mask_secrets(dict(entry)), ensure_ascii=False) + "\n")
    return path


# --------------------------------------------------------------------------
# reading

# columns the analysis needs from samples: `key` is not read (it is the largest
# column and nothing in the analysis uses it), repeated strings come back as categoricals
SAMPLE_COLUMNS = ["ts_intended", "ts_start", "type", "name", "latency_ms", "ok", "bytes", "error", "process"]
_DICTIONARY_COLUMNS = {"type", "name", "error", "process", "kind", "namespace", "source", "part", "consumer"}


@dataclass
class Run:
    """Everything one run directory holds, as DataFrames (empty frames for absent optional parts)."""

    path: Path
    info: dict[str, Any]
    samples: pd.DataFrame
    ledger: pd.DataFrame | None
    truth: pd.DataFrame | None
    journal: pd.DataFrame
    resources: pd.DataFrame | None
    lag: pd.DataFrame | None
    files: dict[str, int] = field(default_factory=dict)


def _parquet_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(".parquet"))


def _check_schema(path: Path, actual: pa.Schema, schema: pa.Schema, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in actual.names]
    if missing:
        raise RunDirError(f"{path}: missing column(s) {missing}; expected {list(schema.names)}")
    for c in columns:
        want = schema.field(c).type
        got = actual.field(c).type
        if pa.types.is_dictionary(got):
            got = got.value_type
        if got == want:
            continue
        numeric = (pa.types.is_integer(want) or pa.types.is_floating(want)) and (
            pa.types.is_integer(got) or pa.types.is_floating(got)
        )
        stringy = pa.types.is_string(want) and (pa.types.is_large_string(got) or pa.types.is_string_view(got))
        if not (numeric or stringy or pa.types.is_null(got)):
            raise RunDirError(f"{path}: column {c!r} is {got}, expected {want}")


def read_folder(
    run_dir: str | os.PathLike[str],
    folder: str,
    columns: Sequence[str] | None = None,
    required: bool = False,
) -> pa.Table | None:
    """Read every ``*.parquet`` of one folder into one table of the contract's types.

    Each file is read on its own so that a damaged one is named in the error.
    Returns None when the folder is absent (RunDirError if ``required``).
    """
    schema = SCHEMAS[folder]
    columns = list(columns or schema.names)
    d = Path(run_dir) / folder
    if not d.is_dir():
        if required:
            raise RunDirError(f"{d}: missing (the run directory has no {folder}/ folder)")
        return None
    files = _parquet_files(d)
    if not files:
        if required:
            raise RunDirError(f"{d}: no .parquet files in it")
        return None
    # cast to nullable types first, so a null where the contract forbids one gets its own clear error
    target = pa.schema([schema.field(c).with_nullable(True) for c in columns])
    tables = []
    for path in files:
        try:
            f = pq.ParquetFile(path)
            _check_schema(path, f.schema_arrow, schema, columns)
            t = f.read(columns=columns)
        except RunDirError:
            raise
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise RunDirError(f"{path}: damaged parquet file ({exc})") from exc
        if t.num_rows == 0:
            continue
        try:
            t = t.cast(target)
        except (pa.ArrowException, ValueError) as exc:
            raise RunDirError(f"{path}: columns cannot be read as the contract's types ({exc})") from exc
        for c in columns:
            if not schema.field(c).nullable and t.column(c).null_count:
                raise RunDirError(f"{path}: column {c!r} has {t.column(c).null_count} null value(s); it must not")
        tables.append(t)
    if not tables:
        return target.empty_table()
    return pa.concat_tables(tables)


def to_frame(table: pa.Table) -> pd.DataFrame:
    """Arrow -> pandas, repeated strings as categoricals (fast grouping, small memory)."""
    for i, name in enumerate(table.column_names):
        if name in _DICTIONARY_COLUMNS and pa.types.is_string(table.schema.field(name).type):
            table = table.set_column(i, name, table.column(name).dictionary_encode())
    return table.to_pandas(self_destruct=True)


def load_run_info(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(run_dir) / RUN_JSON
    if not path.is_file():
        raise RunDirError(f"{path}: missing (every run directory has a run.json)")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{path}: damaged JSON ({exc})") from exc
    if not isinstance(info, dict):
        raise RunDirError(f"{path}: expected a JSON object, found {type(info).__name__}")
    for key in ("started_at", "ended_at"):
        v = info.get(key)
        if v is not None and not isinstance(v, (int, float)):
            raise RunDirError(f"{path}: {key!r} must be UNIX seconds (a number), found {v!r}")
    return info


def load_journal(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """``chaos.jsonl`` as a frame sorted by start; an absent journal is an empty frame (no faults)."""
    path = Path(run_dir) / JOURNAL
    rows: list[dict[str, Any]] = []
    if path.is_file():
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise RunDirError(f"{path}: unreadable ({exc})") from exc
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RunDirError(f"{path}:{lineno}: damaged JSON line ({exc.msg})") from exc
            if not isinstance(entry, dict):
                raise RunDirError(f"{path}:{lineno}: expected a JSON object")
            missing = [k for k in JOURNAL_REQUIRED if k not in entry]
            if missing:
                raise RunDirError(f"{path}:{lineno}: missing field(s) {missing}")
            for k in ("started_at", "healed_at"):  # null start: a fault that was never injected
                v = entry.get(k)
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                    raise RunDirError(f"{path}:{lineno}: {k!r} must be UNIX seconds or null, found {v!r}")
            rows.append({k: entry.get(k) for k in JOURNAL_FIELDS} | {"line": lineno})
    frame = pd.DataFrame(rows, columns=[*JOURNAL_FIELDS, "line"])
    frame["started_at"] = frame["started_at"].astype("float64")
    frame["healed_at"] = frame["healed_at"].astype("float64")
    return frame.sort_values("started_at", kind="stable").reset_index(drop=True)


def load_run(run_dir: str | os.PathLike[str], on_step: Any = None) -> Run:
    """Load a run directory. ``on_step(label)`` is called before each part (progress display)."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(f"{path}: not a directory")

    def step(label: str) -> None:
        if on_step is not None:
            on_step(label)

    step("run.json")
    info = load_run_info(path)
    step("samples")
    samples_t = read_folder(path, "samples", SAMPLE_COLUMNS, required=True)
    counts = {"samples": samples_t.num_rows}
    samples = to_frame(samples_t)
    del samples_t
    frames: dict[str, pd.DataFrame | None] = {}
    for folder in ("ledger", "truth", "resources", "lag"):
        step(folder)
        t = read_folder(path, folder)
        frames[folder] = None if t is None else to_frame(t)
        counts[folder] = 0 if t is None else t.num_rows
    step("chaos.jsonl")
    journal = load_journal(path)
    counts["faults"] = len(journal)
    return Run(
        path=path,
        info=info,
        samples=samples,
        ledger=frames["ledger"],
        truth=frames["truth"],
        journal=journal,
        resources=frames["resources"],
        lag=frames["lag"],
        files=counts,
    )


def finite_or_none(x: Any) -> Any:
    """JSON has no NaN/inf: None for them (used by analysis.json writers)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def iter_rows(frame: pd.DataFrame) -> Iterable[dict[str, Any]]:
    """Small result frames (one row per name or fault) as JSON-able dicts."""
    for rec in frame.to_dict(orient="records"):
        yield {k: finite_or_none(v.item() if hasattr(v, "item") else v) for k, v in rec.items()}
