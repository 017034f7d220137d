"""A Docker container of bridgestorm's: kill with a signal, stop, start, restart, pause, unpause.

Only containers labelled `bridgestorm.managed=true` are touched; anything
else is refused before any call that would change it.
"""
from __future__ import annotations

import docker
import docker.errors

from chaos.probes import health_answers
from chaos.targets import ChaosRefused, FaultType, TargetContext, TargetError, TargetKind
from chaos.targets.process import check_signal
from stack.broker_gate import BrokerGate
from stack.state import MANAGED_LABEL, StateFile


class ContainerTarget:
    """`ContainerTarget("bridgestorm-broker-1a2b3c").pause()` (name or id)."""

    kind = "container"

    def __init__(self, ref: str, health: str | None = None, client: docker.DockerClient | None = None,
                 gate: BrokerGate | None = None):
        self.ref = ref
        self.health = health
        self.gate = gate  # the stack's broker: (re)started with its topics in place
        try:
            self.client = client or docker.from_env(timeout=30)
        except docker.errors.DockerException as exc:
            raise TargetError(f"no Docker engine reachable for container {ref!r}: {exc}") from None
        self.container()  # refuse at once what is not ours

    def container(self):
        try:
            container = self.client.containers.get(self.ref)
        except docker.errors.NotFound:
            raise TargetError(f"no container {self.ref!r}") from None
        if container.labels.get(MANAGED_LABEL) != "true":
            raise ChaosRefused(f"container {container.name} ({container.short_id}) is not labelled "
                               f"{MANAGED_LABEL}=true; bridgestorm only touches its own containers")
        return container

    def status(self) -> str:
        return self.container().status

    def kill(self, sig: str = "SIGKILL") -> None:
        container = self.container()
        if container.status == "paused":
            container.unpause()
        container.kill(signal=sig)

    def stop(self, timeout: int = 10) -> None:
        container = self.container()
        if container.status == "paused":
            container.unpause()
        container.stop(timeout=timeout)

    def start(self) -> None:
        container = self.container()
        if container.status == "paused":
            container.unpause()
        elif container.status != "running":
            self._gated(container.start)

    def restart(self, timeout: int = 10) -> None:
        container = self.container()
        if container.status == "paused":
            container.unpause()
        self._gated(lambda: container.restart(timeout=timeout))

    def _gated(self, start) -> None:
        self.gate.reopen(start) if self.gate else start()

    def pause(self) -> None:
        self.container().pause()

    def unpause(self) -> None:
        container = self.container()
        if container.status == "paused":
            container.unpause()

    def answers(self) -> bool:
        """Running (not paused) and, when a health address is known, answering it."""
        try:
            if self.status() != "running":
                return False
        except TargetError:
            return False
        return health_answers(self.health) if self.health else True

    def is_injected(self) -> bool:
        return self.status() != "running"


def managed_containers(client: docker.DockerClient | None = None) -> list:
    """Every container labelled as bridgestorm's (running or not)."""
    client = client or docker.from_env(timeout=30)
    return client.containers.list(all=True, filters={"label": f"{MANAGED_LABEL}=true"})


# ----------------------------------------------------------------- the kind

def build(name: str, context: TargetContext) -> ContainerTarget:
    """A stack part of kind container (its container id and health address), else a container name or id."""
    part = context.part(name)
    if part is not None and part.kind == "container":
        return ContainerTarget(part.container_id, part.health, gate=BrokerGate.of(StateFile(context.state_path).read(), part))
    return ContainerTarget(name)


def sweep(context: TargetContext) -> list[str]:
    """Paused bridgestorm containers are unpaused, stopped stack containers started."""
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except Exception:  # noqa: BLE001 - no engine: nothing of ours can be paused there
        return []
    state_file = StateFile(context.state_path)
    stack_parts = {}
    if state_file.exists():
        state = state_file.read()
        stack_parts = {p.container_id: p for p in state.parts.values() if p.kind == "container"}
    done = []
    for container in managed_containers(client):
        if container.status == "paused":
            container.unpause()
            done.append(f"unpaused container {container.name}")
        elif container.id in stack_parts and container.status != "running":
            gate = BrokerGate.of(state, stack_parts[container.id])
            gate.reopen(container.start) if gate else container.start()
            done.append(f"started container {container.name}")
    return done


KIND = TargetKind(
    name="container",
    summary=f"a Docker container labelled {MANAGED_LABEL}=true, by stack part name, container name or id",
    faults=(
        FaultType("container", "kill", "docker kill with a signal (SIGKILL by default)", {"signal": "SIGKILL"},
                  "docker start", inject=lambda t, p, f: t.kill(p["signal"]), heal=lambda t, p, tok: t.start(),
                  checks={"signal": check_signal}),
        FaultType("container", "stop", "docker stop", {"timeout": 10}, "docker start",
                  inject=lambda t, p, f: t.stop(p["timeout"]), heal=lambda t, p, tok: t.start()),
        FaultType("container", "pause", "docker pause (cgroup freezer)", {}, "docker unpause",
                  inject=lambda t, p, f: t.pause(), heal=lambda t, p, tok: t.unpause()),
        FaultType("container", "restart", "docker restart", {"timeout": 10}, None,
                  inject=lambda t, p, f: t.restart(p["timeout"])),
    ),
    build=build,
    sweep=sweep,
)
