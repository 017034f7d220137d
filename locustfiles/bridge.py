"""The bridge: simulated nodes, stamping and workflows at once (the flagship scenario).

    locust -f locustfiles/bridge.py                       # web UI
    locust -f locustfiles/bridge.py --headless -u 200 -r 200 -t 60s
"""
from locustfiles.support.run import install
from locustfiles.support.users import NodeUser, StampingUser, WorkflowUser

install("flagship")

NodeUser.weight = 3
StampingUser.weight = 1
WorkflowUser.weight = 1

__all__ = ["NodeUser", "StampingUser", "WorkflowUser"]
