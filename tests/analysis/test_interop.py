"""The analysis reads what the other layers really write (the chaos module's FaultJournal)."""

from __future__ import annotations

import shutil
from pathlib import Path

import rungen

from analysis.analyse import analyse


def test_reads_the_chaos_modules_journal(chaos_run: Path, tmp_path: Path) -> None:
    from rundir.journal import FaultJournal, FaultRecord

    run_dir = tmp_path / "run"
    shutil.copytree(chaos_run, run_dir)
    (run_dir / "chaos.jsonl").unlink()
    journal = FaultJournal(run_dir)
    journal.write(FaultRecord(fault_id="f1", name="broker-kill", action="kill", target="broker",
                              target_kind="process", parameters={"signal": "SIGKILL"},
                              started_at=rungen.T0 + 20, healed_at=rungen.T0 + 25, outcome="healed",
                              observed={"down_after_s": 0.01, "answered_after_s": 0.8}))
    journal.write(FaultRecord(fault_id="f2", name="broker-pause", action="pause", target="broker",
                              target_kind="container", parameters={}, error="no such container",
                              outcome="failed"))  # never injected: started_at is null
    faults = analyse(run_dir).faults.set_index("fault_id")
    assert faults.loc["f1", "recovery_s"] == 2.0 and faults.loc["f1", "target"] == "broker"
    assert "never injected" in faults.loc["f2", "note"] and "no such container" in faults.loc["f2", "note"]
