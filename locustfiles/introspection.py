"""Introspection bursts: simulated nodes register, heartbeat, and answer re-introspection.

    locust -f locustfiles/introspection.py --headless -u 100 -r 100 -t 15s
"""
from locustfiles.support.run import install
from locustfiles.support.users import NodeUser

install("introspection-burst")

__all__ = ["NodeUser"]
