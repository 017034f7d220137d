"""Workflows: submit (202), completion on the bus and through GET, with and without intelligence.

    locust -f locustfiles/workflows.py --headless -u 10 -r 10 -t 15s
"""
from adapters.bridge.adapter import BridgeAdapter
from adapters.bridge.users import WorkflowUser
from harness.lifecycle import install

install(BridgeAdapter())

__all__ = ["WorkflowUser"]
