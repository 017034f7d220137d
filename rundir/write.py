"""Writing a run directory: parquet batches, ``run.json``, a row-at-a-time ``BatchWriter``.

pyarrow only, no pandas: every Locust process (workers included) imports
this, and pandas would cost each of them a second of start-up and tens of
megabytes for nothing.
"""
from __future__ import annotations

import itertools
import json
import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rundir.masking import mask_secrets
from rundir.schema import ADDED_COLUMNS, OBSERVATIONS, RUN_JSON, SCHEMAS

Rows = pa.Table | Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]


def process_id() -> str:
    """``<host>:<pid>``, the value of every ``process`` column."""
    return f"{socket.gethostname()}:{os.getpid()}"


_counter = itertools.count()
_counter_lock = threading.Lock()


def _unique_name(prefix: str) -> str:
    with _counter_lock:
        n = next(_counter)
    return f"{prefix}-{socket.gethostname()}-{os.getpid()}-{time.time_ns()}-{n:06d}.parquet"


def _check_folder(folder: str) -> None:
    if folder not in SCHEMAS:
        raise ValueError(f"unknown run directory folder {folder!r}; one of {sorted(SCHEMAS)}")


def to_table(folder: str, rows: Rows) -> pa.Table:
    """Rows as a table of ``folder``'s schema: a pyarrow Table, a dict of columns or a list of dicts.

    A column added to the contract later (ADDED_COLUMNS) may be left out: it is written as nulls.
    """
    schema = SCHEMAS[folder]
    optional = ADDED_COLUMNS.get(folder, set())
    if isinstance(rows, pa.Table):
        missing = [n for n in schema.names if n not in rows.column_names and n not in optional]
        if missing:
            raise ValueError(f"{folder} batch lacks columns {missing}")
        for n in schema.names:
            if n not in rows.column_names:
                rows = rows.append_column(schema.field(n), pa.nulls(rows.num_rows, schema.field(n).type))
        return rows.select(schema.names).cast(schema)
    if isinstance(rows, Mapping):
        missing = [n for n in schema.names if n not in rows and n not in optional]
        if missing:
            raise ValueError(f"{folder} batch lacks columns {missing}")
        length = len(next(iter(rows.values()))) if rows else 0
        return pa.Table.from_pydict({n: rows[n] if n in rows else [None] * length for n in schema.names},
                                    schema=schema)
    rows = list(rows)
    if rows:
        missing = [n for n in schema.names if n not in rows[0] and n not in optional]
        if missing:
            raise ValueError(f"{folder} row lacks columns {missing}")
    return pa.Table.from_pylist(rows, schema=schema)


def write_batch(run_dir: str | os.PathLike[str], folder: str, rows: Rows, prefix: str | None = None) -> Path | None:
    """Write one batch to ``<run_dir>/<folder>/<unique>.parquet`` atomically.

    The file is written under a ``.tmp`` name and renamed, so a reader running
    while a process writes never sees half a file. Returns the path, or None
    for an empty batch (no empty files).
    """
    _check_folder(folder)
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


def write_samples(run_dir: str | os.PathLike[str], rows: Rows) -> Path | None:
    """One batch of samples (see SAMPLES_SCHEMA)."""
    return write_batch(run_dir, "samples", rows)


def write_ledger(run_dir: str | os.PathLike[str], rows: Rows) -> Path | None:
    """One batch of ledger rows (see LEDGER_SCHEMA)."""
    return write_batch(run_dir, "ledger", rows)


def write_truth(run_dir: str | os.PathLike[str], rows: Rows) -> Path | None:
    """What the system stored, read after the drain (see TRUTH_SCHEMA)."""
    return write_batch(run_dir, "truth", rows)


def write_injected(run_dir: str | os.PathLike[str], rows: Rows) -> Path | None:
    """What became of the injected messages, read after the drain (see INJECTED_SCHEMA)."""
    return write_batch(run_dir, "injected", rows)


def write_resources(run_dir: str | os.PathLike[str], rows: Rows) -> Path | None:
    """Memory and CPU samples of the stack's parts (see RESOURCES_SCHEMA)."""
    return write_batch(run_dir, "resources", rows)


def write_lag(run_dir: str | os.PathLike[str], rows: Rows) -> Path | None:
    """Consumer lag samples (see LAG_SCHEMA)."""
    return write_batch(run_dir, "lag", rows)


class BatchWriter:
    """Buffers rows in column lists and writes a parquet file every ``batch_rows`` rows.

    For writers that produce one row at a time: memory stays bounded and each
    flush is one vectorised write. Thread-safe; call ``close()`` (or use it as
    a context manager) at the end.
    """

    def __init__(self, run_dir: str | os.PathLike[str], folder: str, batch_rows: int = 50_000) -> None:
        _check_folder(folder)
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


def write_observations(run_dir: str | os.PathLike[str], observed: Mapping[str, float]) -> Path:
    """Write ``observations.json``: what the system reported about the run, by name (atomically)."""
    path = Path(run_dir) / OBSERVATIONS
    tmp = path.with_name(OBSERVATIONS + ".tmp")
    tmp.write_text(json.dumps({str(k): float(v) for k, v in observed.items()}, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path
