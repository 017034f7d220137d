"""Running the proxy server: in this process until a signal, or as a child process, or its command line.

A separate process keeps the proxy's data path off the caller's GIL, which
matters for measurements; the embedded stack starts it as one of its parts.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

from stack.processes import free_port
from stack.proxy.addresses import ApiError, require_loopback, split_address
from stack.proxy.api import ProxyServer

DEFAULT_LISTEN = "127.0.0.1:8474"


async def serve(listen: str = DEFAULT_LISTEN, ready_file: str | None = None) -> None:
    """Run the server until SIGINT/SIGTERM."""
    host, port = split_address(listen)
    server = ProxyServer(host, port)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"bridgestorm proxy server (Toxiproxy API) on {server.url}", flush=True)
    if ready_file:
        with open(ready_file, "w") as fh:
            fh.write(server.url)
    try:
        await stop.wait()
    finally:
        await server.stop()


def run(listen: str = DEFAULT_LISTEN, ready_file: str | None = None) -> None:
    try:
        import uvloop  # optional: faster event loop when installed
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(listen, ready_file))


def server_argv(listen: str = DEFAULT_LISTEN) -> list[str]:
    """How to start a Toxiproxy server: the real one when on PATH, else ours."""
    host, port = split_address(listen)
    real = shutil.which("toxiproxy-server")
    if real:
        return [real, "-host", host, "-port", str(port)]
    return [sys.executable, "-m", "stack.proxy", "--listen", listen]


def wait_until_answering(url: str, timeout: float = 10.0) -> None:
    """Block until GET {url}/version answers, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/version", timeout=1.0) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"no Toxiproxy API answered at {url} within {timeout:.0f} s")
        time.sleep(0.02)


class ProxyServerProcess:
    """Runs a Toxiproxy server as a child process: `with ProxyServerProcess() as url: ...`.

    A separate process keeps the proxy's data path off the caller's GIL,
    which matters for measurements. `listen` defaults to a free loopback port.
    """

    def __init__(self, listen: str | None = None, log: str | None = None):
        self.listen = listen or f"127.0.0.1:{free_port()}"
        self.url = "http://" + self.listen
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> str:
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen(server_argv(self.listen), stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            wait_until_answering(self.url)
        except TimeoutError:
            self.stop()
            raise
        return self.url

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.proxy",
                                     description="A Toxiproxy-API-compatible TCP proxy server on loopback.")
    parser.add_argument("--listen", default=DEFAULT_LISTEN, help="API address (loopback), default %(default)s")
    parser.add_argument("--ready-file", help="write the API URL here once it answers")
    args = parser.parse_args(argv)
    try:
        require_loopback("--listen", args.listen)
        run(args.listen, args.ready_file)
    except (ApiError, OSError) as exc:
        print(f"{parser.prog}: error: {getattr(exc, 'message', None) or exc}", file=sys.stderr)
        return 2
    return 0
