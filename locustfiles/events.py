"""Database adapter consumption: raw envelopes in 1,500-event batches, stored once, in order, malformed ones dead-lettered.

    locust -f locustfiles/events.py --headless -u 1 -r 1 -t 30s --batch-size 1500 --resend-share 0.05 --malformed 5
"""
from adapters.bridge.adapter import BridgeAdapter
from adapters.bridge.users import EventBatchUser
from harness.lifecycle import install

install(BridgeAdapter())

__all__ = ["EventBatchUser"]
