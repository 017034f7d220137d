"""`python -m chaos heal`: undo everything bridgestorm injected.

First the faults recorded as active (an interrupted or killed run leaves
them there): each is healed as its own run would have, and its journal line
is written. Then each target kind sweeps for anything left (chaos/targets/:
stack processes still stopped get SIGCONT, paused bridgestorm containers are
unpaused and stopped stack containers started, every `bridgestorm-*` toxic
is removed and every disabled proxy enabled again).
"""
from __future__ import annotations

import time
from typing import Callable

from chaos.active import ActiveFaults
from chaos.kinds import KINDS, Resolver, fault_type
from rundir.journal import FaultJournal, FaultRecord


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
    context = Resolver(state_path, toxiproxy_url)
    for kind in KINDS.values():
        if kind.sweep is None:
            continue
        try:
            done += kind.sweep(context)
        except Exception as exc:  # noqa: BLE001 - reported, the other kinds are swept
            done.append(f"could not sweep {kind.name} targets: {exc}")
    for line in done:
        log(line)
    if not done:
        log("nothing to heal")
    return done
