"""The sampler against the real embedded stack: CPU and memory of every part and of Locust, lag in messages."""
from __future__ import annotations

import re
import socket
import time

from adapters.bridge.adapter import BridgeAdapter
from harness.sampler import Sampler
from rundir.read import load_run, read_folder

GROUPS = {"bridge-reducer", "bridge-registry", "bridge-database-adapter"}


def test_a_run_samples_every_part_and_every_consumer_group(run_locust, stack):
    run = run_locust("bridge.py", "-u", "3", "-r", "3", "-t", "5s", "--no-report")
    assert run.returncode == 0, run.output[-3000:]
    info = load_run(run.run_dir)  # every row of the contract's types, each lag row with one of its values
    resources, lag = info.resources, info.lag
    assert resources is not None and lag is not None, run.output[-3000:]

    parts = {p.name for p in stack.parts.values() if p.kind == "process"}
    per_part = resources.groupby("part", observed=True)
    assert set(per_part.groups) == parts | {"locust"}, run.output[-3000:]
    assert (per_part.size() >= 4).all(), per_part.size()  # once a second for 5 s, the first second without CPU
    # a real process's resident set (Redis, the smallest part, holds 3-8 MiB; a Python node 40 MiB or more)
    assert (resources["rss_bytes"] > 2**20).all() and (resources["cpu_percent"] >= 0).all()
    assert (per_part["rss_bytes"].min().drop("redis") > 10 * 2**20).all(), per_part["rss_bytes"].min()
    cpu = per_part["cpu_percent"].mean()
    assert cpu["locust"] > 0 and cpu["broker"] > 0 and cpu["postgres"] > 0, cpu
    # PostgreSQL counts its backends' private memory; its postmaster alone is smaller
    assert per_part["rss_bytes"].max()["postgres"] > 40 * 2**20
    assert resources["ts"].min() >= info.info["started_at"] - 1
    assert resources["ts"].max() <= info.info["ended_at"] + 30  # it stopped with the run

    assert lag["lag_ms"].isna().all()  # bridge.py measures no time lag: every row is the sampler's
    consumers = set(lag["consumer"].astype(str))
    nodes = {f"node-{p.extra['node_id']}" for p in stack.parts.values() if "node_id" in p.extra}
    assert GROUPS | nodes | {"outbox"} <= consumers, consumers
    assert not [c for c in consumers if re.search(r"\.[0-9a-f]{8}$", c)]  # labels, not incarnations
    assert (lag["lag_messages"] >= 0).all()
    assert lag.groupby("consumer", observed=True).size().min() >= 4
    # whose count it is: the system's own backlog (the outbox) or a group read from the broker
    assert set(lag.loc[lag["consumer"] == "outbox", "source"]) == {"system"}
    assert set(lag.loc[lag["consumer"] != "outbox", "source"]) == {"group"}


def test_no_sampler_writes_neither_folder(run_locust):
    run = run_locust("bridge.py", "-u", "1", "-r", "1", "-t", "2s", "--no-report", "--no-sampler")
    assert run.returncode == 0, run.output[-3000:]
    assert run.run_dir.joinpath("samples").is_dir(), run.output[-3000:]
    assert not run.run_dir.joinpath("resources").exists() and not run.run_dir.joinpath("lag").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_broker_that_does_not_answer_gives_no_rows_not_zeros(stack, stack_state_path, tmp_path):
    """Nothing listens where the broker should be: the groups have no rows; the outbox and the parts still do."""
    env = {**stack.env, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{_free_port()}"}
    sampler = Sampler(tmp_path, BridgeAdapter(), env, stack_state_path, write_every_s=1.0)
    started = time.monotonic()
    await sampler.run(seconds=4.5)
    assert time.monotonic() - started < 7  # bounded: a read that hangs is cut at 2 s, the stop does not wait
    lag = read_folder(tmp_path, "lag").to_pandas()
    assert set(lag["consumer"]) == {"outbox"} and set(lag["source"]) == {"system"}
    assert len(lag) >= 14  # four times a second: the replay time's resolution
    resources = read_folder(tmp_path, "resources").to_pandas()
    assert {"broker", "postgres", "locust"} <= set(resources["part"])
    assert len(list((tmp_path / "resources").glob("*.parquet"))) >= 2  # written in batches while it ran
