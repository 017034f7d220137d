"""The run directory contract: writers and readers agree; missing or damaged files are named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rungen


from rundir.masking import mask_secrets, mask_url
from rundir.read import SAMPLE_COLUMNS, load_run, read_folder
from rundir.schema import LEDGER_SCHEMA, SAMPLES_SCHEMA, SCHEMAS, RunDirError
from rundir.write import BatchWriter, process_id, write_lag, write_run_info


def copy_run(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(src, dst)
    return dst


def test_schemas_match_the_documented_columns() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "run-directory.md").read_text()
    for name, schema in SCHEMAS.items():
        for column in schema.names:
            assert f"`{column}`" in doc, f"{name}.{column} is not in docs/run-directory.md"


def test_load_reads_every_file_of_every_folder(chaos_run: Path) -> None:
    run = load_run(chaos_run)
    assert len(list((chaos_run / "samples").glob("*.parquet"))) == 3
    assert run.files == {"samples": 640, "ledger": 111, "truth": 109, "resources": 120, "lag": 230, "injected": 0,
                         "faults": 1}
    assert list(run.samples.columns) == SAMPLE_COLUMNS
    assert run.samples["name"].dtype == "category"
    assert run.samples["ts_intended"].isna().sum() == 600
    assert run.journal.loc[0, "name"] == "broker-kill"


def test_batch_writer_flushes_in_batches_and_on_close(tmp_path: Path) -> None:
    with BatchWriter(tmp_path, "ledger", batch_rows=4) as w:
        for k in range(10):
            w.add(kind="event", item_id=f"e{k}", namespace="ns", ts_sent=1.0 + k, acked=k % 2 == 0,
                  process=process_id())
    files = sorted((tmp_path / "ledger").glob("*.parquet"))
    assert len(files) == 3  # 4 + 4 + 2
    table = read_folder(tmp_path, "ledger")
    assert table.num_rows == 10 and w.rows_written == 10
    assert table.schema.types == LEDGER_SCHEMA.types and table.column_names == LEDGER_SCHEMA.names


def test_writer_rejects_a_batch_without_a_column(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lacks columns"):
        write_lag(tmp_path, {"ts": [1.0], "consumer": ["c"]})
    assert write_lag(tmp_path, {"ts": [], "consumer": [], "lag_ms": [], "lag_messages": []}) is None  # no empty files


def test_unfinished_tmp_files_are_ignored(chaos_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(chaos_run, tmp_path)
    (run_dir / "samples" / "half-written.parquet.tmp").write_bytes(b"PAR1 not finished")
    assert load_run(run_dir).files["samples"] == 640


def test_passwords_are_masked() -> None:
    assert mask_url("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert mask_url("see postgres://bridge:s3cr3t@10.0.0.1:5432/x and http://h/p") == \
        "see postgres://bridge:***@10.0.0.1:5432/x and http://h/p"
    masked = mask_secrets({"env": {"POSTGRES_PASSWORD": "pw", "user": "u"}, "urls": ["redis://:x@h"]})
    assert masked == {"env": {"POSTGRES_PASSWORD": "***", "user": "u"}, "urls": ["redis://:***@h"]}


def test_write_run_info_masks(tmp_path: Path) -> None:
    write_run_info(tmp_path, {"stack": {"database": "postgresql://bridge:hunter2@h:5432/b"}})
    text = (tmp_path / "run.json").read_text()
    assert "hunter2" not in text and "bridge:***@h" in text


# ---------------------------------------------------------------- damaged inputs


def test_missing_run_json(chaos_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(chaos_run, tmp_path)
    (run_dir / "run.json").unlink()
    with pytest.raises(RunDirError, match=r"run\.json: missing"):
        load_run(run_dir)


def test_damaged_run_json(chaos_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(chaos_run, tmp_path)
    (run_dir / "run.json").write_text('{"run_id": ')
    with pytest.raises(RunDirError, match=r"run\.json: damaged JSON"):
        load_run(run_dir)


def test_missing_samples(chaos_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(chaos_run, tmp_path)
    shutil.rmtree(run_dir / "samples")
    with pytest.raises(RunDirError, match=r"samples: missing"):
        load_run(run_dir)


def test_damaged_parquet_is_named(chaos_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(chaos_run, tmp_path)
    victim = sorted((run_dir / "samples").glob("*.parquet"))[1]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated, as by a crash
    with pytest.raises(RunDirError) as err:
        load_run(run_dir)
    assert str(victim) in str(err.value) and "damaged parquet" in str(err.value)


def test_missing_column_is_named(chaos_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(chaos_run, tmp_path)
    bad = run_dir / "truth" / "bad.parquet"
    pq.write_table(pa.table({"kind": ["workflow"], "item_id": ["x"], "namespace": ["a"], "source": ["t"]}), bad)
    with pytest.raises(RunDirError, match=r"bad\.parquet: missing column\(s\) \['count'\]"):
        load_run(run_dir)


def test_wrong_type_is_named(chaos_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(chaos_run, tmp_path)
    bad = run_dir / "lag" / "bad.parquet"
    pq.write_table(pa.table({"ts": [1.0], "consumer": ["c"], "lag_ms": ["slow"]}), bad)
    with pytest.raises(RunDirError, match=r"bad\.parquet: column 'lag_ms' is string, expected double"):
        load_run(run_dir)


def test_lag_files_from_before_lag_messages_still_load(chaos_run: Path, tmp_path: Path) -> None:
    """A lag file of the old contract (ts, consumer, lag_ms; lag_ms not nullable) reads with lag_messages null."""
    run_dir = copy_run(chaos_run, tmp_path)
    old = pa.schema([pa.field("ts", pa.float64(), nullable=False), pa.field("consumer", pa.string(), nullable=False),
                     pa.field("lag_ms", pa.float64(), nullable=False)])
    pq.write_table(pa.Table.from_pydict({"ts": [rungen.T0 + 1.5, rungen.T0 + 2.5], "consumer": ["old", "old"],
                                         "lag_ms": [7.0, 9.0]}, schema=old), run_dir / "lag" / "old.parquet")
    lag = load_run(run_dir).lag
    rows = lag[lag["consumer"] == "old"]
    assert rows["lag_ms"].tolist() == [7.0, 9.0] and rows["lag_messages"].isna().all()
    assert len(lag) == 232 and lag["lag_messages"].notna().sum() == 170  # the sampler's rows, beside them


def test_lag_row_without_a_value_is_named(chaos_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(chaos_run, tmp_path)
    write_lag(run_dir, {"ts": [1.0, 2.0], "consumer": ["c", "c"], "lag_ms": [None, 3.0], "lag_messages": [None, None]})
    with pytest.raises(RunDirError, match=r"1 row\(s\) set none of \['lag_ms', 'lag_messages'\]"):
        load_run(run_dir)


def test_null_where_not_allowed_is_named(chaos_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(chaos_run, tmp_path)
    cols = rungen._cols(rungen.e2e_samples())
    cols["latency_ms"][3] = None
    schema = SAMPLES_SCHEMA.set(4, pa.field("latency_ms", pa.float64(), nullable=True))
    table = pa.Table.from_pydict(cols, schema=schema.remove(schema.get_field_index("ts_ready")))
    pq.write_table(table, run_dir / "samples" / "nulls.parquet")
    with pytest.raises(RunDirError, match=r"nulls\.parquet: column 'latency_ms' has 1 null"):
        load_run(run_dir)


def test_damaged_journal_line_is_named(chaos_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(chaos_run, tmp_path)
    with (run_dir / "chaos.jsonl").open("a") as f:
        f.write(json.dumps(rungen.journal_entry(fault_id="f2")) + "\n")
        f.write('{"fault_id": "f3", "name": "broker-pause", "started_at": \n')
    with pytest.raises(RunDirError, match=r"chaos\.jsonl:3: damaged JSON line"):
        load_run(run_dir)


def test_journal_entry_without_start_is_named(chaos_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(chaos_run, tmp_path)
    (run_dir / "chaos.jsonl").write_text(json.dumps({"fault_id": "f1", "name": "broker-kill"}) + "\n")
    with pytest.raises(RunDirError, match=r"chaos\.jsonl:1: missing field\(s\) \['started_at'\]"):
        load_run(run_dir)


def test_optional_parts_may_be_absent(chaos_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(chaos_run, tmp_path)
    for folder in ("ledger", "truth", "resources", "lag"):
        shutil.rmtree(run_dir / folder)
    (run_dir / "chaos.jsonl").unlink()
    run = load_run(run_dir)
    assert run.ledger is None and run.truth is None and run.journal.empty
    assert run.experiments == []


def test_experiment_records_are_read_back(chaos_run: Path, tmp_path: Path) -> None:
    run_dir = rungen.write_experiments(copy_run(chaos_run, tmp_path))
    with (run_dir / "experiments.jsonl").open("a") as f:  # a writer that left out the optional fields
        f.write(json.dumps({"title": "bare", "status": "completed", "started_at": rungen.T0}) + "\n")
    experiments = load_run(run_dir).experiments
    assert [e["status"] for e in experiments] == ["completed", "deviated", "aborted", "interrupted", "completed"]
    first = experiments[0]
    assert first["title"] == "Broker kill" and first["fault_ids"] == ["f1"] and first["line"] == 1
    assert first["steady_state_after"][1] == {"name": "stamp-health", "ok": True, "value": 200}
    assert experiments[1]["deviated"] is True
    assert experiments[4] | {"line": 0} == {"title": "bare", "file": None, "status": "completed",
                                            "started_at": rungen.T0, "ended_at": None, "steady_state_before": [],
                                            "steady_state_after": [], "deviated": False, "fault_ids": [],
                                            "error": None, "line": 0}


@pytest.mark.parametrize("line,message", [
    ('{"title": "t", "status": "completed", "started_at": ', "damaged JSON line"),
    ('{"title": "t", "started_at": 1.0}', r"missing field\(s\) \['status'\]"),
    ('{"title": "t", "status": "exploded", "started_at": 1.0}', "'status' must be one of completed, deviated"),
    ('{"title": "t", "status": "completed", "started_at": "noon"}', "'started_at' must be UNIX seconds"),
    ('{"title": "t", "status": "completed", "started_at": 1.0, "steady_state_after": [{"name": "p"}]}',
     "'steady_state_after' must be a list of {name, ok, value}"),
    ('{"title": "t", "status": "completed", "started_at": 1.0, "fault_ids": [1]}', "'fault_ids' must be a list"),
])
def test_damaged_experiment_record_is_named(chaos_run: Path, tmp_path: Path, line: str, message: str) -> None:
    run_dir = rungen.write_experiments(copy_run(chaos_run, tmp_path))
    with (run_dir / "experiments.jsonl").open("a") as f:
        f.write(line + "\n")
    with pytest.raises(RunDirError, match=r"experiments\.jsonl:5: " + message):
        load_run(run_dir)


def test_experiment_records_mask_secrets(tmp_path: Path) -> None:
    from rundir.journal import ExperimentJournal, ExperimentRecord

    ExperimentJournal(tmp_path).write(ExperimentRecord(
        title="db", status="failed", started_at=1.0, error="cannot reach postgresql://bridge:hunter2@127.0.0.1/bridge"))
    text = (tmp_path / "experiments.jsonl").read_text()
    assert "hunter2" not in text and "bridge:***@127.0.0.1" in text


def test_samples_without_rows_are_refused(tmp_path: Path) -> None:
    from analysis.analyse import analyse

    write_run_info(tmp_path, rungen.run_info())
    (tmp_path / "samples").mkdir()
    pq.write_table(SAMPLES_SCHEMA.empty_table(), tmp_path / "samples" / "empty.parquet")
    with pytest.raises(RunDirError, match=r"samples: no sample rows"):
        analyse(tmp_path)


def test_writers_and_the_journal_do_not_import_pandas() -> None:
    """Every Locust worker imports the writers: pandas there would cost each one start-up time and memory."""
    import subprocess
    import sys

    code = "import sys, rundir.write, rundir.journal, rundir.masking; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False"
