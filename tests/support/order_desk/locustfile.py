"""Orders into the order desk, each followed to its confirmation: a locustfile for a system that is not ours.

    locust -f tests/support/order_desk/locustfile.py --headless -u 4 -t 5s --stack external

The broker comes from the stack (KAFKA_BOOTSTRAP_SERVERS), the store from ORDER_DESK_STORE.
"""
import sys
import uuid
from pathlib import Path

from locust import constant, task

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/, for support.order_desk

from harness.lifecycle import install  # noqa: E402
from harness.users import KafkaUser  # noqa: E402
from support.order_desk.adapter import ORDERS, OrderDeskAdapter  # noqa: E402

install(OrderDeskAdapter())


class OrderUser(KafkaUser):
    """Places an order and waits for its confirmation (an ``e2e`` sample); every order is a ledger row."""

    wait_time = constant(0.05)

    @task
    def order(self) -> None:
        order_id = str(uuid.uuid4())
        message = self.event("order.placed", {"order_id": order_id, "amount": 3.5}, topic=ORDERS, key=order_id,
                             source="bridgestorm", event_id=order_id)
        self.publish_and_wait(message, name="order.placed", expect=["order.confirmed"], e2e_name="order→confirmed",
                              ledger=("order", order_id), timeout=1.0)
