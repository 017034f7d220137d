"""Starting, checking and stopping the stack's local processes.

Every process is started in its own session (so it outlives `stack up` and
a Ctrl-C in the terminal does not reach it), with its output in a log file,
and recorded as a `Part` with pid and start time in the state file.
"""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from stack.state import LaunchSpec, Part


def _ephemeral_low() -> int:
    """The first port of the range the kernel hands to outgoing connections (Linux default 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now, chosen below the kernel's ephemeral range.

    The kernel's own pick (binding port 0) comes from the range it also gives
    to outgoing connections, so between our pick and the node's bind one of the
    hundreds of client connections a start opens can take it (a node then
    fails with "address already in use"). Below that range a port is only
    taken by someone who binds it by number; a random pick keeps two stacks
    that start at once apart.
    """
    low = _ephemeral_low()
    if low > 11000:
        for _ in range(200):
            port = random.randint(10000, low - 1)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def launch(spec: LaunchSpec, user: str | None = None) -> psutil.Process:
    """Start a process from its launch spec, detached, output appended to its log."""
    log_path = Path(spec.log) if spec.log else Path(os.devnull)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            spec.argv,
            env={**os.environ, **spec.env},
            cwd=spec.cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=user,
        )
    return psutil.Process(proc.pid)


def process_part(name: str, address: str, health: str, spec: LaunchSpec, proc: psutil.Process, **extra) -> Part:
    return Part(
        name=name,
        kind="process",
        address=address,
        health=health,
        pid=proc.pid,
        create_time=proc.create_time(),
        launch=spec,
        extra=extra,
    )


def tcp_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Exactly `n` bytes from a blocking socket; ConnectionError if the peer closes first."""
    data = b""
    while len(data) < n:
        part = sock.recv(n - len(data))
        if not part:
            raise ConnectionError(f"the peer closed the connection after {len(data)} of {n} bytes")
        data += part
    return data


def http_status(url: str, timeout: float = 1.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return None


def check_health(part: Part) -> str:
    """'up', 'not ready', 'down' (process alive, not answering) or 'gone' (process exited)."""
    if part.kind == "process" and part.process() is None:
        return "gone"
    if part.health.startswith("tcp://"):
        host, _, port = part.health[len("tcp://"):].rpartition(":")
        return "up" if tcp_answers(host, int(port)) else "down"
    status = http_status(part.health)
    if status == 200:
        return "up"
    return "not ready" if status is not None else "down"


def wait_until(predicate, timeout_s: float, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()


def stop_process(part: Part, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> bool:
    """Stop a process of ours (pid and start time must match); SIGKILL after the timeout."""
    proc = part.process()
    if proc is None:
        return False
    try:
        proc.send_signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
        proc.send_signal(sig)
        proc.wait(timeout_s)
    except psutil.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    except psutil.NoSuchProcess:
        pass
    return True


def log_tail(path: str | None, lines: int = 20) -> str:
    if not path or not Path(path).exists():
        return ""
    text = Path(path).read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])
