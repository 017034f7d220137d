"""Fault actions and probes as plain functions with JSON-able arguments.

Why: Chaos Toolkit calls `python` providers by module and function name
with JSON arguments, so a CTK experiment can use bridgestorm's targets (and
their safety checks) directly:

    {"type": "action", "name": "kill-broker",
     "provider": {"type": "python", "module": "chaos.actions", "func": "kill_process",
                  "arguments": {"name": "broker"}}}

`state` is the stack state file (default: `$BRIDGESTORM_STATE` or
`.bridgestorm/stack.json`); `url` the Toxiproxy API (default:
`$TOXIPROXY_URL`, then the stack's, then 127.0.0.1:8474). Every function
returns a small JSON-able dict.
"""
from __future__ import annotations

from chaos.kinds import Resolver
from chaos.probes import kafka_answers as _kafka_answers
from chaos.probes import tcp_answers as _tcp_answers
from chaos.targets.process import ProcessTarget
from chaos.targets.proxy import ProxyTarget


def _proxy(proxy: str, url: str | None, state: str | None) -> ProxyTarget:
    return ProxyTarget(proxy, Resolver(state, url).proxy_url())


# -- local processes of the stack
def kill_process(name: str, signal: str = "SIGKILL", state: str | None = None) -> dict:
    target = ProcessTarget(name, state)
    pid = target.pid
    target.kill(signal)
    return {"name": name, "pid": pid, "signal": signal}


def terminate_process(name: str, state: str | None = None) -> dict:
    return kill_process(name, "SIGTERM", state)


def pause_process(name: str, state: str | None = None) -> dict:
    ProcessTarget(name, state).pause()
    return {"name": name, "paused": True}


def resume_process(name: str, state: str | None = None) -> dict:
    ProcessTarget(name, state).resume()
    return {"name": name, "paused": False}


def start_process(name: str, state: str | None = None) -> dict:
    return {"name": name, "pid": ProcessTarget(name, state).start()}


def restart_process(name: str, state: str | None = None) -> dict:
    return {"name": name, "pid": ProcessTarget(name, state).restart()}


def process_answers(name: str, state: str | None = None) -> bool:
    """Probe: running, not stopped, and its health check answers."""
    return ProcessTarget(name, state).answers()


# -- bridgestorm containers
def _container(ref: str, state: str | None):
    return Resolver(state).target("container", ref)


def kill_container(ref: str, signal: str = "SIGKILL", state: str | None = None) -> dict:
    _container(ref, state).kill(signal)
    return {"container": ref, "signal": signal}


def stop_container(ref: str, timeout: int = 10, state: str | None = None) -> dict:
    _container(ref, state).stop(timeout)
    return {"container": ref, "stopped": True}


def start_container(ref: str, state: str | None = None) -> dict:
    _container(ref, state).start()
    return {"container": ref, "started": True}


def restart_container(ref: str, timeout: int = 10, state: str | None = None) -> dict:
    _container(ref, state).restart(timeout)
    return {"container": ref, "restarted": True}


def pause_container(ref: str, state: str | None = None) -> dict:
    _container(ref, state).pause()
    return {"container": ref, "paused": True}


def unpause_container(ref: str, state: str | None = None) -> dict:
    _container(ref, state).unpause()
    return {"container": ref, "paused": False}


def container_status(ref: str, state: str | None = None) -> str:
    """Probe: 'running', 'paused', 'exited', ..."""
    return _container(ref, state).status()


# -- Toxiproxy links
def add_toxic(proxy: str, type: str, attributes: dict | None = None, stream: str = "downstream",
              toxicity: float = 1.0, name: str | None = None, url: str | None = None,
              state: str | None = None) -> dict:
    toxic = _proxy(proxy, url, state).add_toxic(type, attributes or {}, stream, toxicity, name)
    return {"proxy": proxy, "toxic": toxic}


def remove_toxic(proxy: str, name: str, url: str | None = None, state: str | None = None) -> dict:
    _proxy(proxy, url, state).remove_toxic(name)
    return {"proxy": proxy, "removed": name}


def disable_proxy(proxy: str, url: str | None = None, state: str | None = None) -> dict:
    _proxy(proxy, url, state).down()
    return {"proxy": proxy, "enabled": False}


def enable_proxy(proxy: str, url: str | None = None, state: str | None = None) -> dict:
    _proxy(proxy, url, state).up()
    return {"proxy": proxy, "enabled": True}


# -- probes and the big hammer
def tcp_answers(address: str, timeout: float = 1.0) -> bool:
    return _tcp_answers(address, timeout)


def kafka_answers(address: str, timeout: float = 1.0) -> bool:
    return _kafka_answers(address, timeout)


def heal_all(state: str | None = None, url: str | None = None) -> list[str]:
    """Undo everything bridgestorm injected (see `python -m chaos heal`)."""
    from chaos.heal import heal_all as _heal_all
    return _heal_all(state, url, log=lambda line: None)

