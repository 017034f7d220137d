"""The bridge: simulated nodes, stamping and workflows at once (the flagship scenario).

    locust -f locustfiles/bridge.py                       # web UI
    locust -f locustfiles/bridge.py --headless -u 200 -r 200 -t 60s
"""
from adapters.bridge.adapter import BridgeAdapter
from adapters.bridge.users import NodeUser, StampingUser, WorkflowUser
from harness.lifecycle import install

install(BridgeAdapter())

NodeUser.weight = 3
StampingUser.weight = 1
WorkflowUser.weight = 1

__all__ = ["NodeUser", "StampingUser", "WorkflowUser"]
