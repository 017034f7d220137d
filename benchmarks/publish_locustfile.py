"""The Locust side of the Kafka half of benchmarks/generator_cost.py: open-model users that publish and wait for the ack.

Each arrival (``--rate``) is one heartbeat event built by the bridge's
adapter and published through ``KafkaUser.publish`` (harness/users.py): the
process's bus (harness/kafka.py, on the asyncio bridge), a ``kafka`` request
event, a raw sample and a ledger row, as every publishing user of ours pays.
The broker is named by ``KAFKA_BOOTSTRAP_SERVERS``.
"""
import sys
from pathlib import Path

from locust import task

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from adapters.bridge.adapter import BridgeAdapter, EventType  # noqa: E402
from harness.arrivals import arrivals  # noqa: E402
from harness.lifecycle import install  # noqa: E402
from harness.users import KafkaUser  # noqa: E402
from kafka_publish import TOPIC  # noqa: E402

install(BridgeAdapter())


class PublishUser(KafkaUser):
    abstract = False
    wait_time = arrivals

    def on_start(self) -> None:
        super().on_start()
        self.node_id = f"{self.run.namespace}-bench-{id(self)}"

    @task
    def publish_heartbeat(self) -> None:
        ts_intended = self.intended()
        message = self.event(EventType.NODE_HEARTBEAT, {"node_id": self.node_id, "uptime_s": 0.0,
                                                        "active_operations": 0},
                             topic=TOPIC, key=self.node_id, source=self.node_id)
        self.publish(message, name="publish", ts_intended=ts_intended)
