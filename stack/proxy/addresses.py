"""Addresses of the proxy server: host:port parsing and the loopback rule, and the API's error type.

Safety: listen and upstream addresses must be on loopback, so faults never
leave this machine. Every layer of the server (a proxy's listener, the HTTP
API) checks an address here and raises ``ApiError``, which the API answers
with its status.
"""
from __future__ import annotations

import ipaddress


class ApiError(Exception):
    """An error the HTTP API answers with `{"error": message, "status": status}`."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.message, self.status = message, status


def split_address(address: str) -> tuple[str, int]:
    """'127.0.0.1:80' / '[::1]:80' / 'localhost:80' -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ApiError(f"bad address {address!r}: expected host:port", 400)
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_loopback(field: str, address: str) -> tuple[str, int]:
    host, port = split_address(address)
    if not is_loopback(host):
        raise ApiError(
            f"{field} {address!r} is not on loopback: bridgestorm's proxy server only "
            "listens on and forwards to loopback addresses", 400)
    return host, port
