"""Target kinds: what a fault can be injected into, and what each kind declares about itself.

A kind is one module of this package (process.py, container.py, proxy.py, topic.py):
its target class, and a `KIND = TargetKind(...)` with its fault types, how
to build a target from a name, and how `chaos heal` sweeps it. `chaos.kinds`
lists the modules; nothing else in chaos/ names a kind.

Each target only touches what is bridgestorm's own and raises `ChaosRefused`
for anything else, so a typo in an experiment can never signal a stranger's
process or container. Heal tokens are JSON-able, so an interrupted run's
faults can be healed later from the active-faults file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

from stack.state import Part, StateFile

Inject = Callable[[Any, dict[str, Any], str], dict | None]  # (target, parameters, fault id) -> heal token
Heal = Callable[[Any, dict[str, Any], dict], None]  # (target, parameters, heal token)
Check = Callable[[Any], str | None]  # a parameter's value -> what is wrong with it, or None


class ChaosRefused(Exception):
    """The target is not bridgestorm's own (not in the stack's state file, not labelled)."""


class TargetError(Exception):
    """The target exists but the action could not be done (not running, no launch spec, ...)."""


@dataclass(frozen=True)
class FaultType:
    """One action on one kind of target: its parameters, how it is injected and how it is healed."""

    kind: str
    action: str
    summary: str
    parameters: dict[str, object] = field(default_factory=dict)  # name -> default
    heals_by: str | None = None  # None: the fault ends by itself (restart)
    inject: Inject = lambda target, params, fault_id: None
    heal: Heal | None = None
    checks: dict[str, Check] = field(default_factory=dict)  # parameter name -> its check, beyond the default's type
    watched: bool = True  # the target stops answering its health check: down_after_s and answered_after_s are measured


@dataclass
class TargetContext:
    """Where targets are found: the stack state file and the Toxiproxy API."""

    state_path: str | None = None
    toxiproxy_url: str | None = None

    def part(self, name: str) -> Part | None:
        """The stack part of that name, or None (no such part, or no stack state file)."""
        try:
            return StateFile(self.state_path).read().parts.get(name)
        except FileNotFoundError:
            return None

    def proxy_url(self) -> str | None:
        """The Toxiproxy API: the one given, `$TOXIPROXY_URL`, the stack's, or None (the client's default)."""
        if self.toxiproxy_url:
            return self.toxiproxy_url
        if os.environ.get("TOXIPROXY_URL"):
            return os.environ["TOXIPROXY_URL"]
        try:
            return StateFile(self.state_path).read().env.get("TOXIPROXY_URL")
        except (FileNotFoundError, ValueError):
            return None


@dataclass(frozen=True)
class TargetKind:
    """A kind of target as one module declares it; `chaos.kinds.KINDS` holds them all."""

    name: str
    summary: str
    faults: tuple[FaultType, ...]
    build: Callable[[str, TargetContext], Any]  # a target object from its name; refuses what is not ours
    sweep: Callable[[TargetContext], list[str]] | None = None  # `chaos heal`: undo what is left, a line per thing done

    def __post_init__(self) -> None:
        strangers = [f"{ft.kind} {ft.action}" for ft in self.faults if ft.kind != self.name]
        if strangers:
            raise ValueError(f"target kind {self.name!r} lists fault types of other kinds: {', '.join(strangers)}")
