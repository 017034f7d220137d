"""The adaptive cache's learning on its own (no stack): the numbers its docstring promises."""
from __future__ import annotations

import math

import pytest
from scipy.stats import beta

from nodes.adaptive_cache import (
    LEARN_REQUESTS,
    MAX_FINGERPRINTS,
    REVALIDATE_EVERY,
    WINDOW,
    AdaptiveCache,
    ToolLearning,
    canonical_json,
    fingerprint,
    repeat_confidence,
)


def test_fingerprint_ignores_key_order_and_refuses_nan():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
    with pytest.raises(ValueError):
        canonical_json({"x": math.nan})


def test_confidence_is_the_beta_survival_function():
    for repeats, first in ((0, 0), (4, 1), (0, 8), (30, 70)):
        assert repeat_confidence(repeats, first) == pytest.approx(beta.sf(0.2, 1 + repeats, 1 + first))


def test_seed_sequence_five_identical_requests_one_second_apart():
    learning = ToolLearning("t", max_ttl_s=300)
    repeats = [learning.observe("same", now=float(i)) for i in range(5)]
    assert repeats == [False, True, True, True, True]
    assert learning.cacheable and learning.confidence() > 0.99
    assert learning.ttl_s() == pytest.approx(2.0)  # 2 × p90 of 1 s intervals


def test_unique_inputs_are_learned_not_worth_caching():
    learning = ToolLearning("t", max_ttl_s=300)
    decisions = []
    for i in range(8):
        learning.observe(f"input-{i}", now=float(i))
        decisions.append(learning.cacheable)
    assert decisions[:LEARN_REQUESTS] == [True] * LEARN_REQUESTS  # cached while learning
    assert decisions[-1] is False and learning.confidence() < 0.2
    assert learning.decision_confidence() > 0.8  # and sure of it


def test_a_repeat_after_the_longest_ttl_is_a_first_sighting():
    learning = ToolLearning("t", max_ttl_s=10)
    learning.observe("x", now=0.0)
    assert learning.observe("x", now=11.0) is False
    assert learning.observe("x", now=12.0) is True


def test_ttl_is_clamped():
    fast = ToolLearning("t", max_ttl_s=300)
    for i in range(5):
        fast.observe("x", now=i * 0.01)
    assert fast.ttl_s() == 1.0
    slow = ToolLearning("t", max_ttl_s=30)
    for i in range(5):
        slow.observe("x", now=i * 20.0)
    assert slow.ttl_s() == 30


def test_window_relearns_a_tool_whose_inputs_start_repeating():
    learning = ToolLearning("t", max_ttl_s=1e9)
    for i in range(WINDOW):
        learning.observe(f"u{i}", now=float(i))
    assert not learning.cacheable
    for i in range(WINDOW // 2):
        learning.observe("hot", now=float(WINDOW + i))
    assert learning.cacheable


def test_memory_is_bounded():
    learning = ToolLearning("t", max_ttl_s=300)
    for i in range(MAX_FINGERPRINTS + 50):
        learning.observe(str(i), now=0.0)
    assert len(learning.seen) == MAX_FINGERPRINTS and len(learning.outcomes) == WINDOW


def test_every_tenth_hit_is_revalidated_and_a_mismatch_stops_caching():
    learning = ToolLearning("t", max_ttl_s=300)
    due = [learning.record_hit() for _ in range(2 * REVALIDATE_EVERY)]
    assert [i + 1 for i, d in enumerate(due) if d] == [REVALIDATE_EVERY, 2 * REVALIDATE_EVERY]
    assert learning.record_revalidation({"a": 1, "b": 2}, {"b": 2, "a": 1})
    assert learning.cacheable
    assert not learning.record_revalidation({"n": 1}, {"n": 2})
    assert not learning.cacheable and learning.mismatches == 1 and learning.decision_confidence() == 1.0


def test_overall_confidence_is_request_weighted_decision_confidence():
    cache = AdaptiveCache(max_ttl_s=300)
    assert cache.confidence_score() == 0.0
    for i in range(20):
        cache.tool("unique").observe(f"u{i}", now=float(i))
    for i in range(5):
        cache.tool("repeat").observe("same", now=float(i))
    unique, repeat = cache.tools["unique"], cache.tools["repeat"]
    expected = (20 * unique.decision_confidence() + 5 * repeat.decision_confidence()) / 25
    assert cache.confidence_score() == pytest.approx(expected) and cache.confidence_score() > 0.9


def test_learning_disabled_caches_everything_with_the_fixed_ttl():
    learning = ToolLearning("t", max_ttl_s=300, learning_enabled=False)
    for i in range(10):
        learning.observe(f"u{i}", now=float(i))
    assert learning.cacheable and learning.ttl_s() == 300
