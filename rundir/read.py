"""Reading a run directory back: one folder as a pyarrow table, or the whole run as pandas frames.

Every file is checked against the contract's schema on its own, so a
damaged or foreign file is named in the error (``RunDirError``) instead of
surfacing later as a wrong number.
"""
from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rundir.journal import EXPERIMENT_FIELDS
from rundir.journal import FIELDS as JOURNAL_FIELDS
from rundir.journal import ExperimentJournal, ExperimentRecord, FaultJournal
from rundir.schema import ADDED_COLUMNS, OBSERVATIONS, ONE_OF, RUN_JSON, SCHEMAS, RunDirError

# columns the analysis needs from samples: `key` is not read (it is the largest
# column and nothing in the analysis uses it), repeated strings come back as categoricals
SAMPLE_COLUMNS = ["ts_intended", "ts_start", "type", "name", "latency_ms", "ok", "bytes", "error", "process", "ts_ready"]
_DICTIONARY_COLUMNS = {"type", "name", "error", "process", "kind", "namespace", "source", "part", "consumer"}


@dataclass
class Run:
    """Everything one run directory holds, as DataFrames (None or empty frames for absent optional parts)."""

    path: Path
    info: dict[str, Any]
    samples: pd.DataFrame
    ledger: pd.DataFrame | None
    truth: pd.DataFrame | None
    journal: pd.DataFrame
    resources: pd.DataFrame | None
    lag: pd.DataFrame | None
    files: dict[str, int] = field(default_factory=dict)
    experiments: list[dict[str, Any]] = field(default_factory=list)  # experiments.jsonl, in the order they ended
    injected: pd.DataFrame | None = None  # injected/: what became of the messages topic faults published
    observations: dict[str, float] | None = None  # observations.json: what the system reported; None: absent


def _parquet_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(".parquet"))


def _check_schema(path: Path, actual: pa.Schema, schema: pa.Schema, columns: Sequence[str],
                  added: Collection[str] = ()) -> None:
    missing = [c for c in columns if c not in actual.names and c not in added]
    if missing:
        raise RunDirError(f"{path}: missing column(s) {missing}; expected {list(schema.names)}")
    for c in columns:
        if c not in actual.names:
            continue
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


def _check_one_of(path: Path, table: pa.Table, columns: Sequence[str]) -> None:
    """Every row sets at least one of ``columns`` (checked when all of them were read)."""
    if not columns or any(c not in table.column_names for c in columns):
        return
    unset = functools.reduce(pc.and_, [pc.is_null(table.column(c)) for c in columns])
    n = pc.sum(unset).as_py() or 0
    if n:
        raise RunDirError(f"{path}: {n} row(s) set none of {list(columns)}; each row sets one")


def read_folder(run_dir: str | os.PathLike[str], folder: str, columns: Sequence[str] | None = None,
                required: bool = False) -> pa.Table | None:
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
    added = ADDED_COLUMNS.get(folder, set())
    tables = []
    for path in files:
        try:
            f = pq.ParquetFile(path)
            _check_schema(path, f.schema_arrow, schema, columns, added)
            present = [c for c in columns if c in f.schema_arrow.names]
            t = f.read(columns=present)
        except RunDirError:
            raise
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise RunDirError(f"{path}: damaged parquet file ({exc})") from exc
        if t.num_rows == 0:
            continue
        for c in columns:  # written before the column was added to the contract
            if c not in present:
                t = t.append_column(target.field(c), pa.nulls(t.num_rows, target.field(c).type))
        t = t.select(columns)
        try:
            t = t.cast(target)
        except (pa.ArrowException, ValueError) as exc:
            raise RunDirError(f"{path}: columns cannot be read as the contract's types ({exc})") from exc
        for c in columns:
            if not schema.field(c).nullable and t.column(c).null_count:
                raise RunDirError(f"{path}: column {c!r} has {t.column(c).null_count} null value(s); it must not")
        _check_one_of(path, t, ONE_OF.get(folder, ()))
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


def load_observations(run_dir: str | os.PathLike[str]) -> dict[str, float] | None:
    """``observations.json`` (name -> number), or None when the run has none."""
    path = Path(run_dir) / OBSERVATIONS
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{path}: damaged JSON ({exc})") from exc
    if not isinstance(data, dict) or not all(isinstance(v, (int, float)) for v in data.values()):
        raise RunDirError(f"{path}: expected an object of numbers")
    return {str(k): float(v) for k, v in data.items()}


def load_journal(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """``chaos.jsonl`` as a frame sorted by start; an absent journal is an empty frame (no faults)."""
    rows = [{k: entry.get(k) for k in JOURNAL_FIELDS} | {"line": lineno}
            for lineno, entry in FaultJournal(run_dir).entries()]
    frame = pd.DataFrame(rows, columns=[*JOURNAL_FIELDS, "line"])
    frame["started_at"] = frame["started_at"].astype("float64")
    frame["healed_at"] = frame["healed_at"].astype("float64")
    return frame.sort_values("started_at", kind="stable").reset_index(drop=True)


def load_experiments(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """``experiments.jsonl``: one dict per experiment, every field of the contract (absent ones at their default)."""
    return [asdict(ExperimentRecord(**{k: entry[k] for k in EXPERIMENT_FIELDS if k in entry})) | {"line": lineno}
            for lineno, entry in ExperimentJournal(run_dir).entries()]


def load_run(run_dir: str | os.PathLike[str], on_step: Callable[[str], None] | None = None) -> Run:
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
    for folder in ("ledger", "truth", "resources", "lag", "injected"):
        step(folder)
        t = read_folder(path, folder)
        frames[folder] = None if t is None else to_frame(t)
        counts[folder] = 0 if t is None else t.num_rows
    step("chaos.jsonl")
    journal = load_journal(path)
    counts["faults"] = len(journal)
    step("experiments.jsonl")
    experiments = load_experiments(path)
    step("observations.json")
    observations = load_observations(path)
    return Run(path=path, info=info, samples=samples, ledger=frames["ledger"], truth=frames["truth"],
               journal=journal, resources=frames["resources"], lag=frames["lag"], files=counts,
               experiments=experiments, injected=frames["injected"], observations=observations)


def finite_or_none(x: Any) -> Any:
    """JSON has no NaN/inf: None for them (used by analysis.json writers)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def iter_rows(frame: pd.DataFrame) -> Iterable[dict[str, Any]]:
    """Small result frames (one row per name or fault) as JSON-able dicts."""
    for rec in frame.to_dict(orient="records"):
        yield {k: finite_or_none(v.item() if hasattr(v, "item") else v) for k, v in rec.items()}
