"""Raw samples and the ledger, per Locust process, into the run directory.

Locust's own statistics round response times and cannot be merged exactly
across processes; these rows are exact. Every process (local, master,
worker, ``--processes`` child) has one, on its run object, and writes its own files through
``rundir.write`` (file names carry host and pid), in batches, so memory
stays bounded whatever the rate. A batch is written by a native thread, so
the gevent hub never stalls on Parquet encoding.
"""
from __future__ import annotations

import collections
import os
import time
from pathlib import Path
from typing import Any

from gevent import monkey

from rundir.schema import LEDGER_SCHEMA, SAMPLES_SCHEMA
from rundir.write import process_id, write_batch

_start_native_thread = monkey.get_original("_thread", "start_new_thread")
_native_lock = monkey.get_original("_thread", "allocate_lock")

SAMPLE_COLUMNS = SAMPLES_SCHEMA.names
LEDGER_COLUMNS = LEDGER_SCHEMA.names


class _Columns:
    """Column lists for one folder; ``take()`` swaps them out for writing."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.cols: dict[str, list[Any]] = {n: [] for n in names}
        self.rows = 0

    def take(self) -> dict[str, list[Any]]:
        cols, self.cols, self.rows = self.cols, {n: [] for n in self.names}, 0
        return cols


class Recorder:
    """Buffers samples and ledger rows of this process; a native thread writes full batches."""

    def __init__(self, run_dir: str | os.PathLike[str], batch_rows: int = 20_000) -> None:
        self.run_dir = Path(run_dir)
        self.batch_rows = batch_rows
        self.process = process_id()
        self.samples = _Columns(SAMPLE_COLUMNS)
        self.ledger = _Columns(LEDGER_COLUMNS)
        self.samples_written = 0
        self.ledger_written = 0
        self.errors: list[str] = []
        self._queue: collections.deque[tuple[str, dict[str, list[Any]]]] = collections.deque()
        self._wake = _native_lock()
        self._wake.acquire()
        self._idle = _native_lock()  # held while the writer thread has work
        self._closed = False
        _start_native_thread(self._writer, ())

    # ---- adding (gevent side)

    def sample(self, ts_start: float, type: str, name: str, latency_ms: float, ok: bool, bytes: int,
               error: str | None = None, key: str | None = None, ts_intended: float | None = None,
               ts_ready: float | None = None) -> None:
        c = self.samples.cols
        c["ts_intended"].append(ts_intended)
        c["ts_ready"].append(ts_ready)
        c["ts_start"].append(ts_start)
        c["type"].append(type)
        c["name"].append(name)
        c["latency_ms"].append(float(latency_ms))
        c["ok"].append(ok)
        c["bytes"].append(int(bytes or 0))
        c["error"].append(error)
        c["key"].append(key)
        c["process"].append(self.process)
        self.samples.rows += 1
        if self.samples.rows >= self.batch_rows:
            self._hand_over("samples", self.samples.take())

    def ledger_row(self, kind: str, item_id: str, namespace: str, ts_sent: float, acked: bool) -> None:
        c = self.ledger.cols
        c["kind"].append(kind)
        c["item_id"].append(item_id)
        c["namespace"].append(namespace)
        c["ts_sent"].append(ts_sent)
        c["acked"].append(acked)
        c["process"].append(self.process)
        self.ledger.rows += 1
        if self.ledger.rows >= self.batch_rows:
            self._hand_over("ledger", self.ledger.take())

    # ---- writing (native thread)

    def _hand_over(self, folder: str, cols: dict[str, list[Any]]) -> None:
        self._queue.append((folder, cols))
        if self._wake.locked():
            try:
                self._wake.release()
            except RuntimeError:
                pass

    def _writer(self) -> None:
        while True:
            self._wake.acquire(True, 0.5)
            while self._queue:
                folder, cols = self._queue[0]
                try:
                    write_batch(self.run_dir, folder, cols)
                    n = len(cols[next(iter(cols))])
                    if folder == "samples":
                        self.samples_written += n
                    else:
                        self.ledger_written += n
                except Exception as exc:  # noqa: BLE001 - reported by flush(), never silently dropped
                    self.errors.append(f"{folder}: {exc!r}")
                self._queue.popleft()
            if self._closed and not self._queue:
                return

    def flush(self, timeout: float = 60.0, wait: bool = True) -> None:
        """Hand everything buffered to the writer; with ``wait``, block until it is on disk.

        At test stop a worker must not wait: Locust's master gives a quitting worker only
        0.5 s to send its final statistics, and they are sent after the test_stop hooks.
        """
        if self.samples.rows:
            self._hand_over("samples", self.samples.take())
        if self.ledger.rows:
            self._hand_over("ledger", self.ledger.take())
        if not wait:
            return
        deadline = time.monotonic() + timeout
        while self._queue and time.monotonic() < deadline:
            time.sleep(0.01)  # patched under gevent: yields to other greenlets
        if self._queue:
            raise RuntimeError(f"{len(self._queue)} batch(es) not written after {timeout} s")
        if self.errors:
            raise RuntimeError("writing the run directory failed: " + "; ".join(self.errors))
