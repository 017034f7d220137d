"""Kafka publish throughput: one Locust process (through the gevent<->asyncio bridge) vs plain aiokafka.

Why: the load layer must not be the bottleneck. Targets (issue 4): one Locust
process reaches >= 20,000 acknowledged publishes/s and >= 50 % of plain
aiokafka with the same in-flight limit; recording raw samples costs < 10 %
of throughput; a burst of 1,000 nodes all register with
introspection->registered p99 < 250 ms.

Each variant runs in its own process (gevent patches the whole process),
against the same broker, interleaved in rounds so machine noise hits all
alike. Uses the stack named by $BRIDGESTORM_STATE / KAFKA_BOOTSTRAP_SERVERS,
else starts an embedded one for the run.

    .venv/bin/python benchmarks/kafka_publish.py [--seconds 8] [--inflight 50] [--rounds 2] [--burst 1000]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOPIC = "bench-publish.v1"
PAYLOAD = b"x" * 200


# ---------------------------------------------------------------- variants (each in a child process)

def run_plain(bootstrap: str, seconds: float, inflight: int) -> dict:
    """Plain aiokafka: ``inflight`` coroutines, each publishing and awaiting its ack in a loop."""
    from aiokafka import AIOKafkaProducer

    async def main() -> int:
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=1)
        await p.start()
        count = 0
        end = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal count
            while time.perf_counter() < end:
                fut = await p.send(TOPIC, PAYLOAD, key=b"k")
                await fut
                count += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(inflight)))
        took = time.perf_counter() - t0
        await p.stop()
        return int(count / took)

    return {"acks_per_s": asyncio.run(main())}


def run_locust(bootstrap: str, seconds: float, inflight: int, record: bool) -> dict:
    """One Locust process, ``inflight`` users, each publishing through the bridge and waiting for its ack."""
    from gevent import monkey

    monkey.patch_all()
    import gevent
    from locust import User, events, task
    from locust.env import Environment

    from adapters.bridge.adapter import BridgeAdapter
    from harness.kafka import Bus
    from harness.recorder import Recorder

    shared: list[Bus] = []  # one producer and observer for the process, as the harness has

    class PublishUser(User):
        def on_start(self) -> None:
            self.bus = shared[0]

        @task
        def publish(self) -> None:
            ts = time.time()
            t0 = time.perf_counter()
            call = self.bus.bridge.submit(self.bus.producer.send(TOPIC, PAYLOAD, b"k"))
            error = None
            try:
                call.wait(10)
            except Exception as exc:  # noqa: BLE001
                error = exc
            self.environment.events.request.fire(
                request_type="kafka", name="publish", response_time=(call.done_at - t0) * 1000 if call.done_at else 0,
                response_length=len(PAYLOAD), exception=error, context={"ts_start": ts, "key": None},
                start_time=ts, response=None, url=None)

    env = Environment(user_classes=[PublishUser], events=events)
    run_dir = tempfile.mkdtemp(prefix="bench-rundir-")
    rec = Recorder(run_dir) if record else None
    if rec is not None:
        def on_request(request_type, name, response_time, response_length, exception=None, context=None, **_):
            rec.sample(ts_start=context["ts_start"], type=request_type, name=name, latency_ms=response_time,
                       ok=exception is None, bytes=response_length, error=None if exception is None else str(exception),
                       key=context.get("key"))
        env.events.request.add_listener(on_request)
    runner = env.create_local_runner()
    shared.append(Bus(bootstrap, BridgeAdapter()))  # producer and observer up before the clock starts
    runner.start(inflight, spawn_rate=inflight)
    gevent.sleep(1.0)  # warm-up: every user started, producer connected
    n0, t0 = env.stats.total.num_requests, time.perf_counter()
    gevent.sleep(seconds)
    n1, took = env.stats.total.num_requests, time.perf_counter() - t0
    runner.quit()
    failures = env.stats.total.num_failures
    written = 0
    if rec is not None:
        rec.flush()
        written = rec.samples_written
    return {"acks_per_s": int((n1 - n0) / took), "failures": failures, "samples_written": written,
            "requests": env.stats.total.num_requests}


def child(argv: list[str]) -> None:
    mode, bootstrap, seconds, inflight = argv[0], argv[1], float(argv[2]), int(argv[3])
    if mode == "plain":
        out = run_plain(bootstrap, seconds, inflight)
    else:
        out = run_locust(bootstrap, seconds, inflight, record=(mode == "locust-record"))
    print("RESULT " + json.dumps(out), flush=True)
    os._exit(0)


# ---------------------------------------------------------------- orchestration

def ensure_topic(bootstrap: str) -> None:
    """The benchmark's topic, and the bridge's (the Locust observer reads its result topics) on a bare broker."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from nodes.config import Topics

    async def main() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            wanted = {TOPIC: 1} | {t: 3 for t in Topics().all()}
            new = [NewTopic(t, num_partitions=n, replication_factor=1) for t, n in wanted.items() if t not in existing]
            if new:
                await admin.create_topics(new)
        finally:
            await admin.close()

    asyncio.run(main())


def variant(mode: str, bootstrap: str, seconds: float, inflight: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", mode, bootstrap, str(seconds), str(inflight)],
                          capture_output=True, text=True, timeout=seconds * 4 + 120, cwd=ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{mode} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")


def burst(state_path: str, users: int) -> dict:
    """``users`` simulated nodes at once: every one registered? p99 of introspection->registered."""
    from rundir.read import read_folder

    run_dir = tempfile.mkdtemp(prefix="bench-burst-")
    cmd = [str(Path(sys.executable).with_name("locust")), "-f",
           f"{ROOT}/locustfiles/introspection.py,{ROOT}/locustfiles/shapes/burst.py", "--headless", "-t", "12s",
           "--burst", str(users), "--heartbeat", "5", "--stack", "external", "--stack-state", state_path,
           "--run-dir", run_dir, "--only-summary", "--no-report"]
    subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=ROOT,
                   env=dict(os.environ, BRIDGESTORM_STATE=state_path))
    s = read_folder(run_dir, "samples").to_pandas()
    reg = s[s["name"] == "introspection→registered"]
    ok = reg[reg["ok"]]
    first = reg.sort_values("ts_start").groupby("key").head(1)  # noqa: F841 - one correlation id per node
    lat = ok["latency_ms"]
    return {"nodes": users, "registered": int(ok["key"].nunique()), "failed_waits": int((~reg["ok"]).sum()),
            "p50_ms": float(lat.quantile(0.5)) if len(lat) else None,
            "p99_ms": float(lat.quantile(0.99)) if len(lat) else None, "run_dir": run_dir}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--inflight", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--burst", type=int, default=1000, help="nodes in the burst (0: skip)")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args()

    from harness.stackenv import stack_env
    from stack.state import StateFile

    started = None
    state_path = os.environ.get("BRIDGESTORM_STATE") or str(StateFile(None).path)
    env = stack_env(state_path)
    if not env.get("KAFKA_BOOTSTRAP_SERVERS"):
        from stack.embedded import StackOptions, up

        state_path = str(Path(tempfile.mkdtemp(prefix="bench-stack-")) / "stack.json")
        print("starting an embedded stack ...", flush=True)
        up(StackOptions(state_path=state_path, heartbeat_interval_s=5.0))
        started = state_path
        env = stack_env(state_path)
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    try:
        ensure_topic(bootstrap)
        results: dict[str, list[dict]] = {"plain": [], "locust": [], "locust-record": []}
        for r in range(args.rounds):
            for mode in results:
                results[mode].append(variant(mode, bootstrap, args.seconds, args.inflight))
                print(f"round {r + 1} {mode:14s} {results[mode][-1]['acks_per_s']:>8,d} acks/s", flush=True)
        med = {m: statistics.median(x["acks_per_s"] for x in v) for m, v in results.items()}
        vs_plain = med["locust"] / med["plain"]
        cost = 1 - med["locust-record"] / med["locust"]
        print()
        print(f"{'variant':28s} {'acks/s (median)':>16s}")
        print(f"{'plain aiokafka':28s} {med['plain']:>16,.0f}")
        print(f"{'Locust, bridge':28s} {med['locust']:>16,.0f}")
        print(f"{'Locust, bridge + samples':28s} {med['locust-record']:>16,.0f}")
        print(f"\nLocust / plain aiokafka: {vs_plain:.2f}   (target >= 0.50)")
        print(f"Locust acks/s: {med['locust-record']:,.0f} with samples   (target >= 20,000)")
        print(f"sample recording cost: {cost * 100:.1f} %   (target < 10 %)")
        missed = vs_plain < 0.5 or med["locust-record"] < 20_000 or cost >= 0.10
        if args.burst:
            b = burst(state_path, args.burst)
            print(f"\nburst of {b['nodes']} nodes: {b['registered']} registered, {b['failed_waits']} waits timed out; "
                  f"introspection→registered p50 {b['p50_ms']:.1f} ms, p99 {b['p99_ms']:.1f} ms (target < 250 ms)")
            missed = missed or b["registered"] < b["nodes"] or (b["p99_ms"] or 1e9) >= 250
        return 1 if (args.check and missed) else 0
    finally:
        if started:
            from stack.embedded import down

            down(started)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        sys.exit(main())
