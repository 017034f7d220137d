"""A broker the chaos module starts again opens with its topics in place (stack.broker_gate).

Tansu 0.6 acknowledges a produce to a topic it does not have, then cannot
serve that partition for the rest of its life, and a client that lived
through a restart sends its retried batch the moment it reconnects. The first
test shows the broker doing that (if it ever fails, Tansu mended it and the
gate can go); the second, that a kill healed by the process target keeps the
same client's batch readable.
"""
from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from chaos.probes import kafka_answers, wait_for
from chaos.targets.process import ProcessTarget
from stack.broker_gate import create_topics
from stack.processes import free_port, launch
from stack.proxy.client import ToxiproxyClient
from tests.chaos.conftest import tansu_spec

TOPIC = "gate-probe"


def proxied_broker(stack, proxy_url: str) -> str:
    """A Tansu process behind a proxy link, recorded as `python -m stack up` records the broker."""
    port = free_port()
    name = f"broker-{port}"
    link = ToxiproxyClient(proxy_url).create_proxy(name, "127.0.0.1:0", f"127.0.0.1:{port}")
    bootstrap = link["listen"]
    stack.add_process("broker", tansu_spec(port, stack.root / "broker.log", int(bootstrap.rsplit(":", 1)[1])),
                      bootstrap, f"tcp://127.0.0.1:{port}")
    with stack.state_file.update() as state:
        state.env["TOXIPROXY_URL"] = proxy_url
        state.parts["broker"].extra.update(listen_port=port, topics={TOPIC: 1}, proxy=name)
    assert wait_for(lambda: kafka_answers(f"127.0.0.1:{port}"), 15) is not None, "tansu did not start"
    create_topics(port, {TOPIC: 1})
    return bootstrap


async def batch_across_a_restart(bootstrap: str, restart) -> tuple[list[bytes], int]:
    """Kill the broker, send one message while it is away, start it with `restart`, create the topic
    as a node would; what a fresh consumer reads, and the partition's end offset."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=20000, retry_backoff_ms=50)
    await producer.start()
    try:
        await producer.send_and_wait(TOPIC, b"before")
        await asyncio.to_thread(restart.kill)
        pending = asyncio.ensure_future(producer.send_and_wait(TOPIC, b"across"))
        await asyncio.sleep(0.3)  # the producer is retrying against a broker that is gone
        await asyncio.to_thread(restart.start)
        await asyncio.wait_for(pending, 20)  # acknowledged by the new broker
        await asyncio.to_thread(create_topics, restart.listen_port, {TOPIC: 1})
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(TOPIC, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        records = (await consumer.getmany(tp, timeout_ms=3000)).get(tp, [])
        end = (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()
    return [r.value for r in records], end


class Restart:
    def __init__(self, stack, gated: bool):
        self.target = ProcessTarget("broker", stack.state_path)
        self.listen_port = stack.part("broker").extra["listen_port"]
        self.gated = gated
        self.stack = stack

    def kill(self) -> None:
        self.target.kill()

    def start(self) -> None:
        if self.gated:
            self.target.start()
            return
        part = self.stack.part("broker")
        proc = launch(part.launch)
        with self.stack.state_file.update() as state:
            state.parts["broker"].pid, state.parts["broker"].create_time = proc.pid, proc.create_time()


async def test_tansu_acknowledges_a_batch_it_cannot_serve_when_started_without_the_gate(stack, proxy_url):
    bootstrap = proxied_broker(stack, proxy_url)
    values, end = await batch_across_a_restart(bootstrap, Restart(stack, gated=False))
    assert values == [] and end >= 1, (
        f"Tansu served the batch ({values}, end {end}): it no longer loses produces to unknown topics, "
        "and stack.broker_gate may be unnecessary")


async def test_a_broker_healed_by_the_process_target_serves_the_batch_sent_across_its_restart(stack, proxy_url):
    bootstrap = proxied_broker(stack, proxy_url)
    values, end = await batch_across_a_restart(bootstrap, Restart(stack, gated=True))
    assert values == [b"across"] and end == 1, (values, end)
    link = ToxiproxyClient(proxy_url).proxy(stack.part("broker").extra["proxy"])
    assert link["enabled"], "the gate left the broker's link closed"
