"""Metadata stamping over HTTP, hashes checked with the client's own BLAKE3.

    locust -f locustfiles/stamping.py --headless -u 10 -r 10 -t 15s
"""
from locustfiles.support.run import install
from locustfiles.support.users import StampingUser

install("stamping")

__all__ = ["StampingUser"]
