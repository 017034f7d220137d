"""`python -m chaos heal`: undo everything bridgestorm injected.

First the faults recorded as active (an interrupted or killed run leaves
them there): each is healed as its own run would have, and its journal line
is written. Then a sweep for anything left: stack processes still stopped
get SIGCONT, paused bridgestorm containers are unpaused, stack containers
that are not running are started, and on the Toxiproxy server every
`bridgestorm-*` toxic is removed and every disabled proxy enabled again.
"""
from __future__ import annotations

import signal
import time
from typing import Callable

import psutil

from chaos.active import ActiveFaults
from chaos.faults import Resolver, fault_type
from rundir.journal import FaultJournal, FaultRecord
from chaos.targets.proxy import TOXIC_PREFIX
from stack.proxy.client import ToxiproxyClient, ToxiproxyError
from stack.state import StateFile


def heal_all(state_path: str | None = None, toxiproxy_url: str | None = None, active_path: str | None = None,
             log: Callable[[str], None] = print) -> list[str]:
    """Heal every active fault and sweep; returns a line per thing done."""
    done: list[str] = []
    active = ActiveFaults(active_path, stack_state=state_path)
    for fault_id, entry in active.all().items():
        record = FaultRecord(**entry["record"])
        resolver = Resolver(entry.get("state_path") or state_path, entry.get("toxiproxy_url") or toxiproxy_url)
        try:
            ft = fault_type(record.target_kind, record.action)
            if ft.heal is not None:
                target = resolver.target(record.target_kind, record.target)
                ft.heal(target, record.parameters, entry.get("token") or {})
            record.healed_at, record.outcome = time.time(), "healed"
            record.error = (record.error + "; " if record.error else "") + "healed by `chaos heal`"
            done.append(f"healed {record.name} ({record.target_kind} {record.target} {record.action})")
        except Exception as exc:  # noqa: BLE001 - reported, the sweep goes on
            record.outcome, record.error = "failed", f"chaos heal: {exc}"
            done.append(f"could not heal {record.name}: {exc}")
        FaultJournal(entry["journal"]).write(record)
        if record.outcome == "healed":
            active.remove(fault_id)
    done += _sweep_processes(state_path)
    done += _sweep_containers(state_path)
    done += _sweep_proxies(Resolver(state_path, toxiproxy_url).proxy_url())
    for line in done:
        log(line)
    if not done:
        log("nothing to heal")
    return done


def _sweep_processes(state_path: str | None) -> list[str]:
    sf = StateFile(state_path)
    if not sf.exists():
        return []
    out = []
    for part in sf.read().parts.values():
        proc = part.process() if part.kind == "process" else None
        try:
            if proc is not None and proc.status() == psutil.STATUS_STOPPED:
                proc.send_signal(signal.SIGCONT)
                out.append(f"resumed process {part.name} (pid {part.pid})")
        except psutil.Error:
            pass
    return out


def _sweep_containers(state_path: str | None) -> list[str]:
    try:
        import docker
        client = docker.from_env(timeout=10)
        client.ping()
    except Exception:  # noqa: BLE001 - no engine: nothing of ours can be paused there
        return []
    from chaos.targets.container import managed_containers
    out = []
    stack_ids = set()
    sf = StateFile(state_path)
    if sf.exists():
        stack_ids = {p.container_id for p in sf.read().parts.values() if p.kind == "container"}
    for container in managed_containers(client):
        if container.status == "paused":
            container.unpause()
            out.append(f"unpaused container {container.name}")
        elif container.id in stack_ids and container.status != "running":
            container.start()
            out.append(f"started container {container.name}")
    return out


def _sweep_proxies(url: str | None) -> list[str]:
    client = ToxiproxyClient(url)
    try:
        proxies = client.proxies()
    except ToxiproxyError:
        return []
    out = []
    for name, proxy in proxies.items():
        for toxic in proxy.get("toxics", []):
            if toxic["name"].startswith(TOXIC_PREFIX):
                try:
                    client.remove_toxic(name, toxic["name"])
                    out.append(f"removed toxic {toxic['name']} from proxy {name}")
                except ToxiproxyError:
                    pass
        if not proxy.get("enabled", True):
            client.set_enabled(name, True)
            out.append(f"enabled proxy {name}")
    return out
