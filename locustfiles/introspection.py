"""Introspection bursts: simulated nodes register, heartbeat, and answer re-introspection.

    locust -f locustfiles/introspection.py --headless -u 100 -r 100 -t 15s
"""
from adapters.bridge.adapter import BridgeAdapter
from adapters.bridge.users import NodeUser
from harness.lifecycle import install

install(BridgeAdapter())

__all__ = ["NodeUser"]
