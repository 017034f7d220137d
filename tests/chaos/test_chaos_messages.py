"""The bad-message catalogue (chaos/messages.py) is seeded, named and complete; tests/nodes/test_fuzz.py runs it."""
from __future__ import annotations

import json
import uuid

import pytest

from chaos.messages import CLASSES, bad_messages

TEMPLATE = json.dumps({"event_id": str(uuid.uuid4()), "event_type": "X", "source_node_id": "n", "sequence": 3,
                       "payload": {"workflow_id": "w", "sequence": 1, "note": "text"}}).encode()


def test_the_same_seed_gives_the_same_messages_and_another_seed_other_ids():
    first, again, other = (bad_messages(TEMPLATE, seed) for seed in (1, 1, 2))
    assert [(m.label, m.value) for m in first] == [(m.label, m.value) for m in again]
    assert [m.label for m in first] != [] and [m.value for m in first] != [m.value for m in other]


def test_every_class_has_messages_and_only_the_asked_classes_come():
    messages = bad_messages(TEMPLATE)
    assert {m.cls for m in messages} == set(CLASSES)
    assert len({m.label for m in messages}) == len(messages), "labels name one message each"
    assert {m.cls for m in bad_messages(TEMPLATE, classes=["deep", "unicode"])} == {"deep", "unicode"}


def test_mutations_that_stay_objects_carry_a_fresh_event_id_except_the_duplicate():
    original = json.loads(TEMPLATE)["event_id"]
    for m in bad_messages(TEMPLATE):
        try:
            doc = json.loads(m.value) if m.value else None
        except (ValueError, RecursionError):
            continue
        if isinstance(doc, dict) and "event_id" in doc and m.name != "event_id=string":
            assert (doc["event_id"] == original) == (m.cls == "duplicate"), m.label


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown message class.*nope"):
        bad_messages(TEMPLATE, classes=["nope"])
    with pytest.raises(ValueError, match="JSON object"):
        bad_messages(b"[1]")


def test_an_injected_message_is_about_an_entity_of_its_own():
    """chaos/targets/topic.py: an applied bad message must not count as one more event of a real workflow."""
    from chaos.targets.topic import disguise

    wid = "7a1c4a52-5d4b-4a53-9d1e-2f1f0c6b3a11"
    template = json.dumps({"event_id": "e1", "namespace": "run-1", "payload": {"workflow_id": wid, "sequence": 2}})
    key, own = disguise(template.encode(), wid.encode(), seed=3)
    doc = json.loads(own)
    assert key != wid.encode() and doc["payload"]["workflow_id"] == key.decode() and wid not in own.decode()
    assert doc["namespace"] == "run-1-injected" and doc["payload"]["sequence"] == 2 and doc["event_id"] == "e1"
    assert disguise(template.encode(), wid.encode(), seed=3) == (key, own)  # seeded
    node_key, node = disguise(json.dumps({"payload": {"node_id": "node-7"}}).encode(), b"node-7", seed=1)
    assert node_key.startswith(b"node-7-injected-") and json.loads(node)["payload"]["node_id"] == node_key.decode()
