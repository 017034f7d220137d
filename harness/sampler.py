"""The sampler: once a second, CPU and memory of every process of the run, and the backlog of every consumer.

Why: a verdict on memory growth, CPU or drain time needs numbers taken while
the run ran, from outside the system under test. The process that owns the
run starts one ``Sampler`` at test start and stops it after the drain; it
runs as tasks on the process's asyncio bridge (harness/aio.py), where the
Kafka clients live, never on the gevent hub. Rows go to the run directory in
batches (every ``write_every_s`` and at stop): ``resources/`` and ``lag/``
(docs/run-directory.md).

What one sample is:

- ``resources/``: per part of the stack's state file that is a process
  (stack/state.py), the CPU it used since the previous sample in % of one
  core, and its RSS. A part counts its children (PostgreSQL forks a backend
  per connection): their CPU, reaped ones included, and their private memory
  (RSS minus shared pages: the shared buffers and the binary count once, with
  the parent). A container part (the Docker broker) is not sampled. The
  Locust processes of this machine are parts too: ``locust`` (this process)
  and ``locust-<pid>`` for each ``--processes`` worker, each itself only (the
  stack's processes are this process's children when it started the stack).
  A part seen for the first time, or restarted, has no CPU row until its
  second sample.
- ``lag/``: per consumer group, its lag in messages, read from the broker
  (the sum over the partitions it committed to of end offset minus committed
  offset), and its committed offsets summed (``committed``: lag that does
  not move it is a stall), under the name the adapter gives it (``consumer_group_label``);
  and, four times a second, the system's own backlog
  (``SystemAdapter.backlog``, e.g. unsent outbox rows), each entry as one
  more consumer. ``source`` tells them apart (``group`` / ``system``): the
  replay time after a broker fault is read from the system's rows, and a
  replay that takes 1.3 s must not read as 2 s for want of samples.

A source that does not answer (the broker during a broker kill) gives no
rows for those seconds, never zeros; nothing the sampler meets makes the run
fail, and it stops with the run.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from harness.adapter import SystemAdapter
from harness.aio import Call, bridge
from rundir.write import write_lag, write_resources
from stack.state import StateFile

log = logging.getLogger("bridgestorm.sampler")
T = TypeVar("T")

INTERVAL_S = 1.0
BACKLOG_INTERVAL_S = 0.25  # the system's backlog (a count in its database): cheap, and the replay time's resolution
WRITE_EVERY_S = 5.0
RECENT_ROWS = 50_000  # lag rows kept in memory for the web UI: an hour of a stack's groups and backlog
READ_TIMEOUT_S = 2.0  # one read of the broker or of the system's backlog; longer and that second has no rows


# ---------------------------------------------------------------- CPU and memory


class ProcessMeter:
    """CPU % and RSS per part: the stack's processes (its state file, re-read when it changes) and Locust's."""

    def __init__(self, state_path: str | None) -> None:
        self.state_file = StateFile(state_path) if state_path else None
        self._state_mtime: float | None = None
        self._stack: dict[str, tuple[int, float | None]] = {}  # part -> (pid, create time)
        self._previous: dict[str, tuple[tuple[int, float], float, float]] = {}  # part -> (root, wall, cpu seconds)
        self._me = psutil.Process()
        self._workers: dict[tuple[int, float], bool] = {}  # (pid, create time) -> is a forked Locust worker
        self._processes: dict[int, psutil.Process] = {}

    def sample(self, ts: float) -> list[dict[str, Any]]:
        """One row per part (``RESOURCES_SCHEMA``); a part whose process is gone has none."""
        rows = []
        used: dict[int, psutil.Process] = {}
        for part, pid, created, counts_children in self._parts():
            try:
                children = self._children(pid) if counts_children else []
                root, cpu_s, rss = self._measure(pid, created, children, counts_children, used)
            except psutil.Error:
                self._previous.pop(part, None)
                continue
            previous = self._previous.get(part)
            self._previous[part] = (root, ts, cpu_s)
            if previous is None or previous[0] != root or ts <= previous[1]:
                continue  # first sight, or a restarted part: no interval to measure over yet
            cpu_percent = max(0.0, cpu_s - previous[2]) / (ts - previous[1]) * 100.0
            rows.append({"ts": ts, "part": part, "rss_bytes": rss, "cpu_percent": cpu_percent})
        self._processes = used  # the processes of this sample only: gone ones are forgotten
        return rows

    @staticmethod
    def _children(pid: int) -> list[int]:
        """The pids of a process's children: the kernel's list per thread, else a pass over every process."""
        try:
            return [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
                    for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            if not Path(f"/proc/{pid}").exists():
                raise psutil.NoSuchProcess(pid) from None
        except OSError:
            pass
        return [c.pid for c in psutil.Process(pid).children()]  # a kernel without /proc/<pid>/task/*/children

    def _parts(self) -> list[tuple[str, int, float | None, bool]]:
        """(part, pid, its start time if known, counts its children): the stack's, this process, its workers."""
        self._read_state()
        parts = [(name, pid, created, True) for name, (pid, created) in sorted(self._stack.items())]
        parts.append(("locust", self._me.pid, None, False))
        try:
            workers = [pid for pid in self._children(self._me.pid) if self._is_worker(pid)]
        except psutil.Error:
            workers = []
        parts += [(f"locust-{pid}", pid, None, False) for pid in workers]
        return parts

    def _read_state(self) -> None:
        """The stack's parts, again whenever the state file changed (a chaos restart rewrites a pid)."""
        if self.state_file is None:
            return
        try:
            mtime = self.state_file.path.stat().st_mtime
        except OSError:
            self._stack, self._state_mtime = {}, None
            return
        if mtime == self._state_mtime:
            return
        try:
            state = self.state_file.read()
        except (OSError, ValueError, TypeError):
            return  # being rewritten: the next sample reads it
        self._state_mtime = mtime
        self._stack = {p.name: (p.pid, p.create_time) for p in state.parts.values()
                       if p.kind == "process" and p.pid is not None}

    def _is_worker(self, pid: int) -> bool:
        """A child running Locust's own command line: a worker ``--processes`` forked (not a stack part)."""
        try:
            proc = self._process(pid, {})
            key = (pid, proc.create_time())
            if key not in self._workers:
                self._workers[key] = proc.cmdline() == self._me.cmdline()
            return self._workers[key]
        except psutil.Error:
            return False

    def _process(self, pid: int, used: dict[int, psutil.Process]) -> psutil.Process:
        """The psutil object of ``pid``, kept from the previous sample (it holds no file open)."""
        proc = used.get(pid) or self._processes.get(pid) or psutil.Process(pid)
        used[pid] = proc
        return proc

    def _measure(self, pid: int, created: float | None, children: list[int], counts_children: bool,
                 used: dict[int, psutil.Process]) -> tuple[tuple[int, float], float, int]:
        """(root identity, CPU seconds so far, memory): the root's own, plus its children's when it counts them.

        CPU: the root's user and system time, its reaped children's, and each
        live child's own, so a backend that exits between two samples is
        neither lost nor counted twice.
        """
        cpu_s, rss = 0.0, 0
        for child in children:  # children first: one reaped after its read is then in the root's times too
            try:
                proc = self._process(child, used)
                with proc.oneshot():
                    t, m = proc.cpu_times(), proc.memory_info()
                cpu_s += t.user + t.system
                rss += max(0, m.rss - m.shared)
            except psutil.Error:
                continue
        proc = self._process(pid, used)
        with proc.oneshot():
            root = (pid, proc.create_time())
            if created is not None and abs(root[1] - created) > 0.5:
                raise psutil.NoSuchProcess(pid)  # the pid of a part that is gone, now someone else's
            if proc.status() == psutil.STATUS_ZOMBIE:
                raise psutil.ZombieProcess(pid)
            t, m = proc.cpu_times(), proc.memory_info()
        cpu_s += t.user + t.system
        if counts_children:
            cpu_s += t.children_user + t.children_system
        return root, cpu_s, rss + m.rss


# ---------------------------------------------------------------- consumer lag


class LagReader:
    """Each consumer group's lag in messages, from the broker: an admin client and a consumer without a group."""

    def __init__(self, bootstrap: str, label: Callable[[str], str | None]) -> None:
        self.bootstrap = bootstrap
        self.label = label
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._coordinators: dict[str, int] = {}  # group -> its coordinator's node id, asked once

    async def read(self) -> dict[str, tuple[int, int]]:
        """Label -> (lag, committed offsets summed). A group that committed nowhere yet has no entry;
        groups with one label add up."""
        admin, consumer = await self._clients()
        listed, topics = await asyncio.gather(admin.list_consumer_groups(), admin.describe_topics())
        groups = [(g, name) for g, name in ((g, self.label(g)) for g, _ in listed) if name is not None]
        if not groups:
            return {}
        partitions = [TopicPartition(t["topic"], p["partition"]) for t in topics
                      if not t.get("error_code") and not t.get("is_internal") for p in t["partitions"]]
        unknown = [g for g, _ in groups if g not in self._coordinators]
        for g, node in zip(unknown, await asyncio.gather(*(admin.find_coordinator(g) for g in unknown))):
            self._coordinators[g] = node
        # the embedded Tansu broker cannot answer an offset fetch without its partitions listed
        ends, *committed = await asyncio.gather(consumer.end_offsets(partitions), *(
            admin.list_consumer_group_offsets(g, group_coordinator_id=self._coordinators[g], partitions=partitions)
            for g, _ in groups))
        lag: dict[str, tuple[int, int]] = {}
        for (_, name), offsets in zip(groups, committed):
            known = [(tp, meta.offset) for tp, meta in offsets.items() if meta.offset >= 0]  # -1: never committed
            if known:
                behind, at = lag.get(name, (0, 0))
                lag[name] = (behind + sum(max(0, ends.get(tp, offset) - offset) for tp, offset in known),
                             at + sum(offset for _, offset in known))
        return lag

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._consumer is None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="bridgestorm-sampler")
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, client_id="bridgestorm-sampler",
                                        enable_auto_commit=False)
            self._admin, self._consumer = admin, consumer
            await admin.start()
            await consumer.start()
        return self._admin, self._consumer

    async def close(self) -> None:
        """Close both clients (after a failed read too: the next read starts afresh, e.g. on a restarted broker)."""
        admin, consumer, self._admin, self._consumer = self._admin, self._consumer, None, None
        self._coordinators.clear()
        for close in (admin and admin.close, consumer and consumer.stop):
            if close is not None:
                with contextlib.suppress(Exception, asyncio.TimeoutError):
                    await bounded(close(), READ_TIMEOUT_S)


async def bounded(step: Awaitable[T], timeout_s: float) -> T:
    """``step``'s result within ``timeout_s``, else TimeoutError at ``timeout_s``, never later.

    Why not ``asyncio.wait_for``: on timeout it waits for the cancelled step to end, and an aiokafka
    client's stop can ignore its cancellation (it awaits fetch tasks it cancelled itself): a CI run's
    sampler hung 300 s there, closing clients that had never reached a broker. A step that does not
    end when cancelled is left behind instead; its outcome is collected when it does end.
    """
    task = asyncio.ensure_future(step)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        raise asyncio.TimeoutError(f"no answer within {timeout_s:g} s")
    return task.result()


# ---------------------------------------------------------------- the sampler


class Sampler:
    """Samples once an ``interval_s`` into ``run_dir`` until ``stop()``; see the module docstring."""

    def __init__(self, run_dir: str | os.PathLike[str], adapter: SystemAdapter, env: Mapping[str, str],
                 state_path: str | None, interval_s: float = INTERVAL_S, write_every_s: float = WRITE_EVERY_S,
                 backlog_interval_s: float = BACKLOG_INTERVAL_S) -> None:
        self.run_dir = Path(run_dir)
        self.adapter = adapter
        self.env = dict(env)
        self.interval_s = interval_s
        self.backlog_interval_s = backlog_interval_s
        self.write_every_s = write_every_s
        self.meter = ProcessMeter(state_path)
        bootstrap = self.env.get("KAFKA_BOOTSTRAP_SERVERS")
        self.lag = LagReader(bootstrap, adapter.consumer_group_label) if bootstrap else None
        self.samples = 0  # ticks taken, for tests and logs
        self._resources: list[dict[str, Any]] = []
        self._lag: list[dict[str, Any]] = []
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT_ROWS)  # the web UI's Live tab
        self._failing: set[str] = set()  # sources that failed last time (logged once per outage)
        self._stopping = asyncio.Event()
        self._call: Call | None = None

    # ---- from the gevent side

    def start(self) -> Sampler:
        """Start sampling on this process's asyncio bridge; returns at once."""
        if self._call is None:
            self._call = bridge().submit(self.run)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop sampling and write what is buffered (waits up to ``timeout``); never raises."""
        call, self._call = self._call, None
        if call is None:
            return
        try:
            bridge().loop.call_soon_threadsafe(self._stopping.set)
            call.wait(timeout)
        except Exception as exc:  # noqa: BLE001 - the sampler never makes the run fail
            log.warning("sampler: stopping failed: %r", exc)

    # ---- on the asyncio loop

    async def run(self, seconds: float | None = None) -> None:
        """Sample until stopped (or for ``seconds``), then write the rest."""
        tasks = [asyncio.create_task(self._every(self.interval_s, self.sample_resources, "the resources sample")),
                 asyncio.create_task(self._every(self.interval_s, self.sample_lag, "the lag sample")),
                 asyncio.create_task(self._every(self.backlog_interval_s, self.sample_backlog, "the backlog sample")),
                 asyncio.create_task(self._every(self.write_every_s, self.write, "writing"))]
        try:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), seconds)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=2 * READ_TIMEOUT_S)  # a step stuck in a client is left behind
            if self.lag is not None:
                await self.lag.close()
            try:
                await self.write()
            except Exception as exc:  # noqa: BLE001 - the sampler never makes the run fail
                self._failed("writing", exc)

    async def _every(self, interval_s: float, sample: Callable[[float], Awaitable[None]], what: str) -> None:
        """``sample(wall clock)`` once an interval on a fixed schedule; one that overran skips the ticks it missed.

        The ticks fall mid-interval on the wall clock (x.5 s), so each whole
        second of the analysis (counted from a whole second) holds one sample.
        """
        loop = asyncio.get_running_loop()
        next_at = loop.time() + (interval_s / 2 - time.time()) % interval_s
        while True:
            await asyncio.sleep(next_at - loop.time())
            try:
                await sample(time.time())
                self._answered(what)
            except Exception as exc:  # noqa: BLE001 - a broken sample must not end the sampling
                self._failed(what, exc)
            next_at += interval_s
            while next_at <= loop.time():
                next_at += interval_s

    async def sample_resources(self, ts: float) -> None:
        """CPU and memory of every part (psutil reads /proc on the loop: about 3 ms for the embedded stack)."""
        self._resources += self.meter.sample(ts)
        self.samples += 1

    async def sample_lag(self, ts: float) -> None:
        """Every consumer group's lag, read from the broker (bounded by READ_TIMEOUT_S)."""
        if self.lag is None:
            return
        try:
            result = await bounded(self.lag.read(), READ_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - a broker that does not answer: no rows for this second
            self._failed("the broker's lag", exc)
            await self.lag.close()
            return
        self._answered("the broker's lag")
        rows = [{"ts": ts, "consumer": name, "lag_ms": None, "lag_messages": int(n), "source": "group",
                 "committed": int(at)} for name, (n, at) in sorted(result.items())]
        self._lag += rows
        self.recent.extend(rows)

    async def sample_backlog(self, ts: float) -> None:
        """The system's own backlog (SystemAdapter.backlog), bounded by READ_TIMEOUT_S."""
        try:
            result = await bounded(self.adapter.backlog(self.env), READ_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - a database that does not answer: no rows for this tick
            self._failed("the system's backlog", exc)
            return
        self._answered("the system's backlog")
        rows = [{"ts": ts, "consumer": name, "lag_ms": None, "lag_messages": int(n), "source": "system"}
                for name, n in sorted(result.items())]
        self._lag += rows
        self.recent.extend(rows)

    async def write(self, ts: float | None = None) -> None:
        """Write the buffered rows, a file per folder (an empty one writes nothing); raises when one failed."""
        resources, self._resources = self._resources, []
        lag, self._lag = self._lag, []
        try:  # a failure loses this batch only
            write_resources(self.run_dir, resources)
        finally:
            write_lag(self.run_dir, lag)

    def _failed(self, what: str, exc: BaseException) -> None:
        """Log a source's or a step's failure once, until it works again."""
        if what not in self._failing:
            self._failing.add(what)
            why = "no answer in time" if isinstance(exc, asyncio.TimeoutError) else repr(exc)
            log.warning("sampler: %s failed (%s); its rows are missing until it works again", what, why)

    def _answered(self, what: str) -> None:
        if what in self._failing:
            self._failing.discard(what)
            log.info("sampler: %s works again", what)
