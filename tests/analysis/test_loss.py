"""Loss accounting against the known answers of rungen's chaos run."""

from __future__ import annotations

import pandas as pd

from analysis.analyse import Analysis
from analysis.loss import account


def test_totals(chaos_analysis: Analysis) -> None:
    assert chaos_analysis.loss.totals == {
        "sent": 110, "acked": 108, "ok": 107, "lost": 1, "recovered": 1, "unacknowledged": 1,
        "duplicated": 1, "unexpected": 1, "leaked": 1, "stored": 109,
    }


def test_which_items(chaos_analysis: Analysis) -> None:
    items = chaos_analysis.loss.items.set_index("item_id")
    assert items.index[items["lost"]].tolist() == ["wf-007"]
    assert items.index[items["duplicated"]].tolist() == ["wf-020"]
    assert items.index[items["leaked"]].tolist() == ["wf-030"]
    assert items.index[items["recovered"]].tolist() == ["wf-090"]
    assert items.index[items["unacknowledged"]].tolist() == ["wf-091"]
    assert items.index[items["unexpected"]].tolist() == ["wf-999"]
    assert bool(items.loc["wf-010", "ok"])  # first send not acked, the re-send acked: one ok item


def test_per_kind_and_namespace(chaos_analysis: Analysis) -> None:
    by_ns = chaos_analysis.loss.by_namespace.set_index(["kind", "namespace"])
    a = by_ns.loc[("workflow", "tenant-a")]
    assert (a["sent"], a["lost"], a["duplicated"], a["leaked"], a["unexpected"]) == (50, 1, 1, 1, 1)
    b = by_ns.loc[("workflow", "tenant-b")]
    assert (b["sent"], b["recovered"], b["unacknowledged"], b["lost"]) == (50, 1, 1, 0)
    stamp = chaos_analysis.loss.by_kind.set_index("kind").loc["stamp"]
    assert (stamp["sent"], stamp["ok"], stamp["lost"]) == (10, 10, 0)


def test_leak_table(chaos_analysis: Analysis) -> None:
    assert chaos_analysis.loss.leaks.to_dict(orient="records") == [
        {"kind": "workflow", "sent_namespace": "tenant-a", "stored_namespace": "tenant-b", "items": 1}
    ]


def test_counts_and_denominators(chaos_analysis: Analysis) -> None:
    loss = chaos_analysis.loss
    assert loss.count("lost", "workflow") == 1 and loss.count("lost", "stamp") == 0
    assert loss.count("lost", "nothing") is None
    assert loss.denominator("duplicated") == 110 and loss.denominator("unexpected") == 109


def test_a_stored_row_in_two_namespaces_is_a_leak_and_a_duplicate() -> None:
    ledger = pd.DataFrame({"kind": ["event"], "item_id": ["e1"], "namespace": ["a"], "ts_sent": [1.0],
                           "acked": [True], "process": ["p"]})
    truth = pd.DataFrame({"kind": ["event", "event"], "item_id": ["e1", "e1"], "namespace": ["a", "b"],
                          "count": [1, 1], "source": ["event_logs", "event_logs"]})
    loss = account(ledger, truth)
    assert loss.totals["ok"] == 1 and loss.totals["duplicated"] == 1 and loss.totals["leaked"] == 1


def test_without_truth_loss_is_unavailable() -> None:
    ledger = pd.DataFrame({"kind": ["event"], "item_id": ["e1"], "namespace": ["a"], "ts_sent": [1.0],
                           "acked": [True], "process": ["p"]})
    loss = account(ledger, None)
    assert not loss.available and "truth" in loss.reason
