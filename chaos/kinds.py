"""The registry of target kinds, and the fault catalogue it gives.

Each kind declares itself in its own module of chaos/targets/ (its fault
types, how to build a target, its sweep for `chaos heal`); the list below
is the only place that names them. Experiment validation, `python -m chaos
list`, the runner and `chaos heal` all read `KINDS` and `FAULTS`, so they
cannot disagree. A new kind is its module plus one line in that list.
"""
from __future__ import annotations

from typing import Any

from chaos.targets import ChaosRefused, FaultType, TargetContext, TargetError, TargetKind
from chaos.targets import container, process, proxy, topic

KINDS: dict[str, TargetKind] = {kind.name: kind for kind in (
    process.KIND,
    container.KIND,
    proxy.KIND,
    topic.KIND,
)}

FAULTS: dict[tuple[str, str], FaultType] = {(kind.name, ft.action): ft for kind in KINDS.values() for ft in kind.faults}


def target_kind(name: str) -> TargetKind:
    try:
        return KINDS[name]
    except KeyError:
        raise TargetError(f"unknown target kind {name!r} (known: {', '.join(KINDS)})") from None


def fault_type(kind: str, action: str) -> FaultType:
    try:
        return FAULTS[(kind, action)]
    except KeyError:
        known = ", ".join(actions_for(kind))
        raise ValueError(f"unknown {kind} fault {action!r} (known: {known})") from None


def actions_for(kind: str | None = None) -> list[str]:
    """The actions of one kind, or of every kind for None or "auto"."""
    return sorted({a for k, a in FAULTS if kind in (None, "auto", k)})


def full_parameters(ft: FaultType, given: dict) -> dict:
    """The defaults overlaid with what was given; unknown names are an error."""
    unknown = sorted(set(given) - set(ft.parameters))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)} for {ft.kind} {ft.action} "
                         f"(known: {', '.join(ft.parameters) or 'none'})")
    return {**ft.parameters, **given}


class Resolver(TargetContext):
    """Turns (kind, target name) into a target object, through the kind that builds it."""

    def kind_of(self, target: str, kind: str) -> str:
        """The kind given, or for "auto" the kind of the stack part of that name."""
        if kind != "auto":
            return kind
        part = self.part(target)
        if part is None:
            raise ChaosRefused(f"target {target!r} is not a part of the running stack; give its target_kind "
                               f"({', '.join(KINDS)}), e.g. target_kind: proxy for a Toxiproxy link")
        return part.kind

    def target(self, kind: str, target: str) -> Any:
        return target_kind(self.kind_of(target, kind)).build(target, self)
