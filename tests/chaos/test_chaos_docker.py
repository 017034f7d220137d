"""The container target against real Docker: the broker container, a producer that keeps going."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from chaos.experiment import parse
from rundir.journal import FaultJournal
from stack.processes import free_port
from chaos.runner import run_experiment
from chaos.targets import ChaosRefused
from chaos.targets.container import ContainerTarget
from stack.docker_broker import BrokerContainer, ensure_broker_image

pytestmark = pytest.mark.docker


def test_unlabelled_container_is_refused(docker_client):
    image = ensure_broker_image(docker_client)
    stranger = docker_client.containers.create(image, command=["--help"], name=f"not-ours-{free_port()}")
    try:
        with pytest.raises(ChaosRefused, match="not labelled bridgestorm.managed=true"):
            ContainerTarget(stranger.name, client=docker_client)
        with pytest.raises(RuntimeError, match="not labelled"):
            BrokerContainer.remove_by_id(stranger.id)
    finally:
        stranger.remove(force=True)


class Producer:
    """Produces to the broker in a loop in its own thread, recreating the topic after a restart
    (Tansu keeps everything in memory); records when each send was acknowledged."""

    def __init__(self, bootstrap: str):
        self.bootstrap = bootstrap
        self.acks: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        from aiokafka import AIOKafkaProducer
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        while not self.stop.is_set():
            producer = None
            try:
                admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=2000)
                await asyncio.wait_for(admin.start(), 3)
                try:
                    await asyncio.wait_for(admin.create_topics([NewTopic("chaos-probe", 1, 1)]), 3)
                except Exception:  # noqa: BLE001 - exists already
                    pass
                finally:
                    await admin.close()
                producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, request_timeout_ms=2000)
                await asyncio.wait_for(producer.start(), 3)
                while not self.stop.is_set():
                    await asyncio.wait_for(producer.send_and_wait("chaos-probe", b"x"), 3)
                    self.acks.append(time.time())
                    await asyncio.sleep(0.02)
            except Exception:  # noqa: BLE001 - the broker is down: try again
                await asyncio.sleep(0.2)
            finally:
                if producer is not None:
                    try:
                        await asyncio.wait_for(producer.stop(), 3)
                    except Exception:  # noqa: BLE001
                        pass

    def acks_between(self, start: float, end: float) -> int:
        return sum(start <= t <= end for t in self.acks)


def test_broker_container_kill_pause_restart_while_producing(docker_client, stack, tmp_path):
    port = free_port()
    broker = BrokerContainer.start(port=port, client=docker_client)
    producer = Producer(f"127.0.0.1:{port}")
    try:
        stack.add_container("broker", broker.id, f"127.0.0.1:{port}")
        producer.thread.start()
        deadline = time.time() + 20
        while not producer.acks and time.time() < deadline:
            time.sleep(0.1)
        assert producer.acks, "the producer never got an ack"
        exp = parse("""
title: container faults while producing
steady-state-hypothesis:
  within: 20
  probes:
    - {name: broker, type: kafka, target: broker}
timeline:
  - {at: 0.5, duration: 1.5, fault: pause, target: broker, target_kind: container}
  - {at: 3.0, duration: 1.5, fault: kill, target: broker, target_kind: container}
  - {at: 6.0, duration: 0, fault: restart, target: broker, target_kind: container, parameters: {timeout: 2}}
""")
        result = run_experiment(exp, tmp_path / "run", state_path=stack.state_path, log=lambda m: None)
        assert result.status == "completed", result
        lines = FaultJournal(tmp_path / "run").read()
        assert [l["action"] for l in lines] == ["pause", "kill", "restart"]
        for line in lines:
            assert line["outcome"] == "healed" and line["target_kind"] == "container"
            assert line["observed"]["down_after_s"] is not None, line
            assert line["observed"]["answered_after_s"] is not None, line
        pause, kill = lines[0], lines[1]
        assert pause["observed"]["inject_ms"] < 100 and pause["observed"]["heal_ms"] < 100, pause
        # nothing is acknowledged while the broker is paused or dead ...
        assert producer.acks_between(pause["started_at"] + 0.2, pause["healed_at"] - 0.1) == 0
        assert producer.acks_between(kill["started_at"] + 0.2, kill["healed_at"] - 0.1) == 0
        # ... and the producer recovers after the last fault
        last = lines[-1]["healed_at"]
        deadline = time.time() + 20
        while producer.acks_between(last, time.time()) < 5 and time.time() < deadline:
            time.sleep(0.2)
        assert producer.acks_between(last, time.time()) >= 5, "the producer did not recover"
    finally:
        producer.stop.set()
        producer.thread.join(15)
        broker.remove()
