"""Loss accounting: what the load caused (ledger) against what the system stored (truth).

The categories are Jepsen's total-queue checker's, as docs/analysis.md defines them,
per item (kind, item_id):

- ok: acknowledged and stored
- lost: acknowledged and never stored
- recovered: not acknowledged but stored
- unacknowledged: not acknowledged and not stored (a failure the client saw; not a loss)
- duplicated: stored more than once where once is required (on top of the above)
- unexpected: stored but never sent
- leaked: stored under another namespace than the one it was sent in

ok + lost + recovered + unacknowledged == sent (distinct items).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

CATEGORIES = ["sent", "acked", "ok", "lost", "recovered", "unacknowledged", "duplicated", "unexpected", "leaked"]
KEY = ["kind", "item_id"]


@dataclass
class Loss:
    """Per-item outcome table and its roll-ups; ``available`` is False without both ledger and truth."""

    available: bool
    reason: str
    items: pd.DataFrame  # one row per (kind, item_id), sent or stored
    by_kind: pd.DataFrame
    by_namespace: pd.DataFrame
    leaks: pd.DataFrame  # (kind, sent namespace, stored namespace) -> items
    totals: dict[str, int]

    def count(self, category: str, kind: str | None = None) -> int | None:
        """Items in a category, for one kind or all; None when the kind was neither sent nor stored."""
        if kind is None:
            return self.totals[category]
        row = self.by_kind[self.by_kind["kind"] == kind]
        return None if row.empty else int(row[category].iloc[0])

    def denominator(self, category: str, kind: str | None = None) -> int | None:
        """What a percentage is of: stored items for `unexpected`, distinct sent items otherwise."""
        base = "stored" if category == "unexpected" else "sent"
        if kind is None:
            return self.totals[base]
        row = self.by_kind[self.by_kind["kind"] == kind]
        return None if row.empty else int(row[base].iloc[0])


def _empty(reason: str) -> Loss:
    cols = ["kind", "namespace", *CATEGORIES, "stored"]
    return Loss(
        available=False,
        reason=reason,
        items=pd.DataFrame(),
        by_kind=pd.DataFrame(columns=["kind", *CATEGORIES, "stored"]),
        by_namespace=pd.DataFrame(columns=cols),
        leaks=pd.DataFrame(columns=["kind", "sent_namespace", "stored_namespace", "items"]),
        totals={c: 0 for c in [*CATEGORIES, "stored"]},
    )


def _str(frame: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Categoricals from two files have different categories; compare them as plain strings."""
    return frame.assign(**{c: frame[c].astype(str) for c in cols})


def account(ledger: pd.DataFrame | None, truth: pd.DataFrame | None) -> Loss:
    """Join ledger and truth on (kind, item_id) and classify every item (vectorised)."""
    if ledger is None:
        return _empty("no ledger/ in the run directory")
    if truth is None:
        return _empty("no truth/ in the run directory (was the drain step run?)")

    led = _str(ledger, ["kind", "item_id", "namespace"])
    sent = led.groupby(KEY, sort=False).agg(
        namespace=("namespace", "first"), acked=("acked", "any"), sends=("acked", "size")
    )
    tru = _str(truth, ["kind", "item_id", "namespace"])
    # an item stored under several namespaces (or tables) is one item, with every namespace it landed in
    stored = tru.groupby(KEY, sort=False).agg(
        stored_count=("count", "sum"), stored_namespace=("namespace", "first"), namespaces=("namespace", "nunique")
    )
    items = sent.join(stored, how="outer")
    items["was_sent"] = items["sends"].notna()
    items["was_stored"] = items["stored_count"].notna() & (items["stored_count"] > 0)
    acked = items["acked"].fillna(False).astype(bool)
    items["acked"] = acked & items["was_sent"]
    s, st = items["was_sent"], items["was_stored"]
    items["ok"] = s & acked & st
    items["lost"] = s & acked & ~st
    items["recovered"] = s & ~acked & st
    items["unacknowledged"] = s & ~acked & ~st
    items["duplicated"] = st & (items["stored_count"] > 1)
    items["unexpected"] = ~s & st
    items["sent"] = s
    items["stored"] = st

    # leaks: any stored row whose namespace differs from the namespace the item was sent in
    both = tru.merge(sent[["namespace"]].reset_index(), on=KEY, how="inner", suffixes=("_stored", "_sent"))
    leak_rows = both[both["namespace_stored"] != both["namespace_sent"]]
    leaked_keys = leak_rows[KEY].drop_duplicates()
    items["leaked"] = False
    if len(leaked_keys):
        idx = pd.MultiIndex.from_frame(leaked_keys)
        items.loc[idx, "leaked"] = True
    leaks = (
        leak_rows.groupby(["kind", "namespace_sent", "namespace_stored"], sort=True)["item_id"]
        .nunique()
        .reset_index()
        .rename(columns={"namespace_sent": "sent_namespace", "namespace_stored": "stored_namespace", "item_id": "items"})
    )

    items = items.reset_index()
    # the namespace an item is accounted under: where it was sent, else where it was stored
    items["namespace"] = items["namespace"].where(items["was_sent"], items["stored_namespace"])
    flags = [*CATEGORIES, "stored"]
    counts = items[["kind", "namespace", *flags]].copy()
    counts[flags] = counts[flags].astype("int64")
    by_kind = counts.groupby("kind", sort=True)[flags].sum().reset_index()
    by_namespace = counts.groupby(["kind", "namespace"], sort=True)[flags].sum().reset_index()
    totals = {c: int(counts[c].sum()) for c in flags}
    return Loss(
        available=True,
        reason="",
        items=items,
        by_kind=by_kind,
        by_namespace=by_namespace,
        leaks=leaks,
        totals=totals,
    )


def percent(part: int | None, whole: int | None) -> float:
    """part/whole in %, NaN when there is nothing to divide by."""
    if part is None or not whole:
        return float("nan")
    return part / whole * 100.0

