"""The fault catalogue: every (target kind, action) with its parameters, inject and heal.

One table drives the experiment validation (which faults and parameters
exist), `python -m chaos list`, the runner and `python -m chaos heal`, so
they cannot disagree. Heal tokens are JSON-able, so an interrupted run's
faults can be healed later from the active-faults file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

from chaos.targets import ChaosRefused, TargetError
from chaos.targets.proxy import TOXIC_PREFIX
from stack.proxy.toxics import TOXIC_ATTRIBUTES


@dataclass(frozen=True)
class FaultType:
    kind: str  # process | container | proxy
    action: str
    summary: str
    parameters: dict[str, object] = field(default_factory=dict)  # name -> default
    heals_by: str | None = None  # None: the fault ends by itself (restart)
    inject: Callable = lambda target, params, fault_id: {}
    heal: Callable | None = None


def _toxic_fault(toxic: str) -> FaultType:
    attrs = TOXIC_ATTRIBUTES[toxic]

    def inject(target, params, fault_id):
        attributes = {k: params[k] for k in attrs}
        name = target.add_toxic(toxic, attributes, params["stream"], params["toxicity"],
                                name=f"{TOXIC_PREFIX}{fault_id}")
        return {"toxic": name}

    def heal(target, params, token):
        target.remove_toxic(token["toxic"])

    return FaultType("proxy", toxic, f"Toxiproxy {toxic} toxic ({', '.join(attrs)})",
                     {**attrs, "stream": "downstream", "toxicity": 1.0}, "remove the toxic", inject, heal)


def _process(action, summary, params, heals_by, inject, heal=None) -> FaultType:
    return FaultType("process", action, summary, params, heals_by, inject, heal)


def _container(action, summary, params, heals_by, inject, heal=None) -> FaultType:
    return FaultType("container", action, summary, params, heals_by, inject, heal)


FAULTS: dict[tuple[str, str], FaultType] = {}
for _ft in [
    _process("kill", "send a signal (SIGKILL by default) and wait until the process is gone",
             {"signal": "SIGKILL"}, "restart from its launch spec",
             lambda t, p, f: t.kill(p["signal"]) or {}, lambda t, p, tok: t.start()),
    _process("terminate", "SIGTERM (graceful stop)", {}, "restart from its launch spec",
             lambda t, p, f: t.terminate() or {}, lambda t, p, tok: t.start()),
    _process("pause", "SIGSTOP", {}, "SIGCONT",
             lambda t, p, f: t.pause() or {}, lambda t, p, tok: t.resume()),
    _process("restart", "SIGTERM, then start again from its launch spec", {}, None,
             lambda t, p, f: {"pid": t.restart()}),
    _container("kill", "docker kill with a signal (SIGKILL by default)", {"signal": "SIGKILL"}, "docker start",
               lambda t, p, f: t.kill(p["signal"]) or {}, lambda t, p, tok: t.start()),
    _container("stop", "docker stop", {"timeout": 10}, "docker start",
               lambda t, p, f: t.stop(p["timeout"]) or {}, lambda t, p, tok: t.start()),
    _container("pause", "docker pause (cgroup freezer)", {}, "docker unpause",
               lambda t, p, f: t.pause() or {}, lambda t, p, tok: t.unpause()),
    _container("restart", "docker restart", {"timeout": 10}, None,
               lambda t, p, f: t.restart(p["timeout"]) or {}),
    FaultType("proxy", "down", "disable the proxy: its listener and connections close", {}, "enable the proxy",
              lambda t, p, f: t.down() or {}, lambda t, p, tok: t.up()),
    *[_toxic_fault(name) for name in TOXIC_ATTRIBUTES],
]:
    FAULTS[(_ft.kind, _ft.action)] = _ft

KINDS = ("process", "container", "proxy")


def fault_type(kind: str, action: str) -> FaultType:
    try:
        return FAULTS[(kind, action)]
    except KeyError:
        known = ", ".join(sorted(a for k, a in FAULTS if k == kind))
        raise ValueError(f"unknown {kind} fault {action!r} (known: {known})") from None


def actions_for(kind: str | None = None) -> list[str]:
    return sorted({a for k, a in FAULTS if kind in (None, "auto", k)})


def full_parameters(ft: FaultType, given: dict) -> dict:
    """The defaults overlaid with what was given; unknown names are an error."""
    unknown = sorted(set(given) - set(ft.parameters))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)} for {ft.kind} {ft.action} "
                         f"(known: {', '.join(ft.parameters) or 'none'})")
    return {**ft.parameters, **given}


@dataclass
class Resolver:
    """Turns (kind, target name) into a target object, from the stack state and the Toxiproxy URL."""

    state_path: str | None = None
    toxiproxy_url: str | None = None

    def proxy_url(self) -> str | None:
        if self.toxiproxy_url:
            return self.toxiproxy_url
        if os.environ.get("TOXIPROXY_URL"):
            return os.environ["TOXIPROXY_URL"]
        try:
            from stack.state import StateFile
            state = StateFile(self.state_path).read()
            return state.env.get("TOXIPROXY_URL")
        except (FileNotFoundError, ValueError):
            return None

    def kind_of(self, target: str, kind: str) -> str:
        if kind != "auto":
            return kind
        from stack.state import StateFile
        try:
            part = StateFile(self.state_path).read().parts.get(target)
        except FileNotFoundError:
            part = None
        if part is None:
            raise ChaosRefused(f"target {target!r} is not a part of the running stack; "
                               "give target_kind: proxy for a Toxiproxy link")
        return part.kind

    def target(self, kind: str, target: str):
        kind = self.kind_of(target, kind)
        if kind == "process":
            from chaos.targets.process import ProcessTarget
            return ProcessTarget(target, self.state_path)
        if kind == "container":
            from chaos.targets.container import ContainerTarget
            from stack.state import StateFile
            health = None
            sf = StateFile(self.state_path)
            if sf.exists():
                part = sf.read().parts.get(target)
                if part is not None and part.kind == "container":
                    return ContainerTarget(part.container_id, part.health)
            return ContainerTarget(target, health)
        if kind == "proxy":
            from chaos.targets.proxy import ProxyTarget
            return ProxyTarget(target, self.proxy_url())
        raise TargetError(f"unknown target kind {kind!r} (known: {', '.join(KINDS)})")
