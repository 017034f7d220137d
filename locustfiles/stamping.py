"""Metadata stamping over HTTP, hashes checked with the client's own BLAKE3.

    locust -f locustfiles/stamping.py --headless -u 10 -r 10 -t 15s
"""
from adapters.bridge.adapter import BridgeAdapter
from adapters.bridge.users import StampingUser
from harness.lifecycle import install

install(BridgeAdapter())

__all__ = ["StampingUser"]
