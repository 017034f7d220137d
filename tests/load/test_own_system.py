"""A system that is not one of our nodes, driven through the harness with its own adapter (the order desk).

The order desk (tests/support/order_desk/) is a Kafka consumer with a SQLite
store of its own; its adapter is all the harness knows of it. A run gets
samples, end-to-end latency matched by correlation id, loss accounting from
its own store, and a report; a desk that loses orders fails the verdict.
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rundir.read import read_folder

ROOT = Path(__file__).resolve().parents[2]
LOCUST = str(Path(sys.executable).with_name("locust"))
LOCUSTFILE = ROOT / "tests" / "support" / "order_desk" / "locustfile.py"
THRESHOLDS = """description: the order desk
thresholds:
  - count(order→confirmed) > 10
  - p95(order→confirmed) < 2s
  - lost(order) == 0
  - duplicated == 0
"""


@contextmanager
def order_desk(bootstrap: str, store: Path, drop_every: int = 0) -> Iterator[None]:
    proc = subprocess.Popen([sys.executable, "-m", "support.order_desk.service", "--bootstrap", bootstrap,
                             "--store", str(store), "--drop-every", str(drop_every)],
                            cwd=ROOT / "tests", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "ready", line + (proc.stdout.read() if proc.poll() is not None else "")
        yield
    finally:
        proc.terminate()
        proc.wait(10)


def run_orders(stack_state_path: str, store: Path, run_dir: Path, thresholds: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, BRIDGESTORM_STATE=stack_state_path, ORDER_DESK_STORE=str(store))
    cmd = [LOCUST, "-f", str(LOCUSTFILE), "--headless", "--stack", "external", "--stack-state", stack_state_path,
           "-u", "4", "-r", "4", "-t", "4s", "--run-dir", str(run_dir), "--thresholds", str(thresholds),
           "--drain", "5", "--only-summary"]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def stored(store: Path) -> dict[str, int]:
    with sqlite3.connect(store) as db:
        return dict(db.execute("SELECT order_id, times FROM orders"))


def test_the_order_desk_through_the_harness_passes_and_loses_nothing(stack, stack_state_path, tmp_path):
    store, run_dir, thresholds = tmp_path / "desk.sqlite3", tmp_path / "run", tmp_path / "desk.yaml"
    thresholds.write_text(THRESHOLDS)
    with order_desk(stack.env["KAFKA_BOOTSTRAP_SERVERS"], store):
        proc = run_orders(stack_state_path, store, run_dir, thresholds)
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 0, tail

    samples = read_folder(run_dir, "samples").to_pandas()
    e2e = samples[samples["name"] == "order→confirmed"]
    assert len(e2e) > 10 and e2e["ok"].all(), tail
    assert (samples[samples["name"] == "order.placed"]["type"] == "kafka").all()
    analysis = json.loads((run_dir / "analysis.json").read_text())
    assert analysis["verdict"] == "pass"
    (order,) = [k for k in analysis["loss"]["by_kind"] if k["kind"] == "order"]
    # an order in flight when the run stopped is in the ledger as not acknowledged: stored, it is "recovered"
    assert order["ok"] > 10 and order["lost"] == order["unexpected"] == order["duplicated"] == 0, order
    assert order["ok"] + order["recovered"] == len(stored(store)), order
    info = json.loads((run_dir / "run.json").read_text())
    assert info["system"] == "order-desk" and info["scenario"] == "locustfile"
    html = (run_dir / "index.html").read_text()
    assert "order→confirmed" in html and '<code id="system">order-desk</code>' in html


def test_an_order_desk_that_loses_orders_fails_the_verdict(stack, stack_state_path, tmp_path):
    store, run_dir, thresholds = tmp_path / "desk.sqlite3", tmp_path / "run", tmp_path / "desk.yaml"
    thresholds.write_text(THRESHOLDS)
    with order_desk(stack.env["KAFKA_BOOTSTRAP_SERVERS"], store, drop_every=5):
        proc = run_orders(stack_state_path, store, run_dir, thresholds)
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 1, tail

    ledger = read_folder(run_dir, "ledger").to_pandas()
    acknowledged = set(ledger[ledger["acked"]]["item_id"])
    never_stored = acknowledged - set(stored(store))
    assert never_stored, "the desk dropped none: the test proves nothing"
    analysis = json.loads((run_dir / "analysis.json").read_text())
    (order,) = [k for k in analysis["loss"]["by_kind"] if k["kind"] == "order"]
    assert order["lost"] == len(never_stored), order
    assert analysis["verdict"] == "fail"
    lost_row = next(r for r in analysis["thresholds"] if r["text"] == "lost(order) == 0")
    assert lost_row["status"] == "fail" and lost_row["measured"] == len(never_stored)
    # each dropped order's wait for its confirmation timed out: the e2e errors are the same orders
    samples = read_folder(run_dir, "samples").to_pandas()
    failed = samples[(samples["name"] == "order→confirmed") & ~samples["ok"]]
    assert 0 < len(failed) <= len(never_stored)
