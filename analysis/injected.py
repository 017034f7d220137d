"""What became of the messages the run's topic faults injected: every one dead-lettered or applied.

The chaos journal says what each `inject` or `replay` fault published (its
``observed.messages``: a label, partition and offset per message); after the
drain the adapter looked each one up per consumer group that reads its topic
(``injected/``, one row per message and group, its fate "dead-lettered",
"applied" or "unaccounted"). A bad message that no group dead-lettered or
applied is lost, or still stuck in front of a consumer: either way the system
did not hold. A message of a class that can never be a valid event
(``NEVER_VALID``) that a group applied anyway is a finding too.

Pure functions from rows to rows, in the spirit of a Jepsen checker: the
caller (analysis/analyse.py) turns an exception into "unknown".
"""
from __future__ import annotations

import pandas as pd

from rundir.schema import FATES

# catalogue classes (chaos/messages.py) that no consumer can take for an event: not JSON, or not an object
NEVER_VALID = ("malformed", "not-object")
SUMMARY_COLUMNS = ["class", "consumer", "messages", *FATES, "applied_invalid"]


def injected_faults(journal: pd.DataFrame) -> list[str]:
    """Ids of the journal's faults that published messages (topic faults with ``observed.messages``)."""
    if journal is None or journal.empty or "observed" not in journal:
        return []
    return [str(f) for f, seen in zip(journal["fault_id"], journal["observed"])
            if isinstance(seen, dict) and seen.get("messages")]


def summarise(injected: pd.DataFrame | None) -> pd.DataFrame:
    """One row per (message class, consumer group): messages, and how many of them had each fate."""
    if injected is None or injected.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    rows = injected.assign(**{"class": injected["label"].astype(str).str.split(":", n=1).str[0],
                              "consumer": injected["consumer"].astype(str), "fate": injected["fate"].astype(str)})
    table = pd.crosstab([rows["class"], rows["consumer"]], rows["fate"]).reindex(columns=list(FATES), fill_value=0)
    table.insert(0, "messages", table.sum(axis=1))
    table["applied_invalid"] = [int(n) if cls in NEVER_VALID else 0
                                for (cls, _), n in zip(table.index, table["applied"])]
    return table.reset_index().rename_axis(columns=None)[SUMMARY_COLUMNS].astype(
        {c: "int64" for c in SUMMARY_COLUMNS[2:]})


def unaccounted(summary: pd.DataFrame, cls: str | None = None) -> tuple[int, str]:
    """Messages (of one class, or all) that some group neither dead-lettered nor applied, or applied though
    they can never be valid; and a line that says where."""
    sel = summary if not cls else summary[summary["class"] == cls]
    bad = sel[(sel["unaccounted"] > 0) | (sel["applied_invalid"] > 0)]
    count = int(bad["unaccounted"].sum() + bad["applied_invalid"].sum())
    if not count:
        return 0, f"{int(sel['messages'].sum()):,} message fates, each dead-lettered or applied"
    return count, "; ".join(
        f"{r['class']} at {r['consumer']}: " + ", ".join(
            part for part in (f"{r['unaccounted']} unaccounted" if r["unaccounted"] else "",
                              f"{r['applied_invalid']} applied though invalid" if r["applied_invalid"] else "")
            if part)
        for _, r in bad.iterrows())
