"""The tool proxy's adaptive cache policy: learns, per tool, whether caching its results pays.

Pure logic, no I/O: the proxy (nodes/tool_proxy.py) keeps the results in
Redis under `cache_key(tool, fingerprint(input_data))` with the TTL this
module learns, and asks it before every lookup whether to use the cache.

How it learns, per tool:

* Every request's input is fingerprinted (sha256 of its canonical JSON, keys
  sorted; with the target service when the call names one). A fingerprint
  seen before within `max_ttl_s` is a *repeat*, any other a *first sighting*
  (a repeat later than the longest TTL could never have been a hit). The
  last `MAX_FINGERPRINTS` fingerprints are kept with their last-seen time;
  the last `WINDOW` outcomes are what the estimate uses, so a tool whose
  traffic changes is relearned within `WINDOW` requests.
* The repeat probability p gets a Beta(1 + repeats, 1 + first sightings)
  posterior (uniform prior). Caching pays when p exceeds `BREAK_EVEN` (0.2,
  chosen, not measured: below one repeat in five most stored results are
  never read, and every call pays a lookup and a store for few hits). The
  tool's `confidence_score` is the posterior probability P(p > BREAK_EVEN):
  the Beta survival function, scipy.special.betaincc, which is exactly
  scipy.stats.beta.sf without importing all of scipy.stats (1.5 s less at
  every start of the node).
* The adaptive policy stores and looks up results while the tool is
  `cacheable`: confidence ≥ 0.5, or within the tool's first `LEARN_REQUESTS`
  requests (the first few are cached to learn). Learning goes on while it is not
  cacheable (the fingerprints are observed either way), so a tool whose inputs
  start repeating becomes cacheable again.
* TTL = clamp(2 × the 90th percentile of the last `WINDOW` intervals between
  repeats of one input, 1 s, max_ttl_s); max_ttl_s until an interval is known.
  Twice the 90th percentile keeps nine repeats in ten within the TTL with room,
  while results of a tool that is asked again quickly do not linger.
* Determinism check: every `REVALIDATE_EVERY`-th hit of a tool is executed
  upstream again and compared with the cached result; a mismatch marks the
  tool not cacheable for good (`deterministic` false, counted in `mismatches`).

How much to trust it: for the seed's five identical requests one second apart
the tool's posterior is Beta(5, 2) and P(p > 0.2) = 0.998 (1 miss, 4 hits, TTL
2 s); for all-unique inputs it is 0.8^(n+1) after n requests, so the fourth
unique request already goes uncached (0.33). The prior is weak on purpose: two
requests change the decision. The overall `confidence_score` of the cache is
how sure the learner is of what it does now: per tool the posterior
probability of its current decision (P(p > 0.2) where it caches, 1 − that
where it does not, 1 where a mismatch proved it must not), averaged over the
tools weighted by their recent requests; 0 before any request.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from collections import OrderedDict, deque
from typing import Any

from scipy.special import betaincc

BREAK_EVEN = 0.2  # repeat probability above which caching pays
CONFIDENT = 0.5  # cache while P(p > BREAK_EVEN) is at least this
LEARN_REQUESTS = 3  # the first requests of a tool are cached whatever the estimate
WINDOW = 200  # recent outcomes and repeat intervals kept per tool
MAX_FINGERPRINTS = 2_000  # recent inputs remembered per tool (least recently seen forgotten first)
MAX_TOOLS = 200  # tools learned at once (least recently used forgotten first): memory stays bounded
REVALIDATE_EVERY = 10  # every n-th hit is executed upstream again and compared
MIN_TTL_S = 1.0


def canonical_json(value: Any) -> str:
    """The one JSON text of a value: sorted keys, no spaces; ValueError for NaN or Infinity (not JSON)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def fingerprint(input_data: Any, target_service: str | None = None) -> str:
    """sha256 of the input's canonical JSON; a call for one target service is told apart from the others
    (its answer is that service's), so the pair is hashed then."""
    value = input_data if target_service is None else [target_service, input_data]
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def cache_key(tool: str, input_fingerprint: str) -> str:
    return f"tool-proxy:cache:{tool}:{input_fingerprint}"


def repeat_confidence(repeats: int, first_sightings: int) -> float:
    """Posterior P(p > BREAK_EVEN) for p ~ Beta(1 + repeats, 1 + first_sightings)."""
    return float(betaincc(1 + repeats, 1 + first_sightings, BREAK_EVEN))


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


class ToolLearning:
    """What the cache knows about one tool: recent inputs, the estimate, the counters."""

    def __init__(self, tool: str, max_ttl_s: float, learning_enabled: bool = True):
        self.tool = tool
        self.max_ttl_s = max_ttl_s
        self.learning_enabled = learning_enabled
        self.seen: OrderedDict[str, float] = OrderedDict()  # fingerprint -> last seen (monotonic)
        self.outcomes: deque[bool] = deque(maxlen=WINDOW)  # True: a repeat
        self.intervals: deque[float] = deque(maxlen=WINDOW)  # seconds between repeats of one input
        self.deterministic = True
        self.requests = 0
        self.hits = 0
        self.misses = 0
        self.bypassed = 0
        self.unavailable = 0
        self.stores = 0
        self.revalidations = 0
        self.mismatches = 0
        self.errors = 0  # upstream failures
        self._hits_since_revalidation = 0

    # -- learning
    def observe(self, input_fingerprint: str, now: float | None = None) -> bool:
        """Record one request's input; True when it repeats an input seen within max_ttl_s."""
        now = time.monotonic() if now is None else now
        self.requests += 1
        last = self.seen.pop(input_fingerprint, None)
        repeat = last is not None and now - last <= self.max_ttl_s
        if repeat:
            self.intervals.append(now - last)  # type: ignore[operator]
        self.outcomes.append(repeat)
        self.seen[input_fingerprint] = now
        while len(self.seen) > MAX_FINGERPRINTS:
            self.seen.popitem(last=False)
        return repeat

    @property
    def repeats(self) -> int:
        return sum(self.outcomes)

    @property
    def first_sightings(self) -> int:
        return len(self.outcomes) - self.repeats

    def confidence(self) -> float:
        """How sure we are that caching pays for this tool: P(p > BREAK_EVEN)."""
        return repeat_confidence(self.repeats, self.first_sightings)

    @property
    def cacheable(self) -> bool:
        if not self.deterministic:
            return False
        if not self.learning_enabled:
            return True
        return len(self.outcomes) <= LEARN_REQUESTS or self.confidence() >= CONFIDENT

    def decision_confidence(self) -> float:
        """The posterior probability that the current decision (cache or not) is the right one."""
        if not self.deterministic:
            return 1.0
        c = self.confidence()
        return c if self.cacheable else 1.0 - c

    def ttl_s(self) -> float:
        """How long a stored result lives: 2 × p90 of the repeat intervals, within [1 s, max_ttl_s]."""
        if not self.learning_enabled or not self.intervals:
            return self.max_ttl_s
        return min(max(2.0 * percentile(list(self.intervals), 90), MIN_TTL_S), self.max_ttl_s)

    # -- what the proxy reports back
    def record_hit(self) -> bool:
        """Count a hit; True when this hit must be revalidated upstream (every REVALIDATE_EVERY-th)."""
        self.hits += 1
        self._hits_since_revalidation += 1
        if self._hits_since_revalidation >= REVALIDATE_EVERY:
            self._hits_since_revalidation = 0
            self.revalidations += 1
            return True
        return False

    def record_revalidation(self, cached_output: Any, fresh_output: Any) -> bool:
        """Compare a cached result with a fresh one; a mismatch marks the tool not cacheable. True if equal."""
        if canonical_json(cached_output) == canonical_json(fresh_output):
            return True
        self.mismatches += 1
        self.deterministic = False
        return False

    def snapshot(self) -> dict[str, Any]:
        lookups = self.hits + self.misses
        return {
            "requests": self.requests,
            "hits": self.hits,
            "misses": self.misses,
            "bypassed": self.bypassed,
            "unavailable": self.unavailable,
            "upstream_errors": self.errors,
            "stores": self.stores,
            "hit_ratio": round(self.hits / lookups, 4) if lookups else 0.0,
            "repeats": self.repeats,
            "first_sightings": self.first_sightings,
            "ttl_s": round(self.ttl_s(), 3),
            "confidence_score": round(self.confidence(), 4),
            "decision_confidence": round(self.decision_confidence(), 4),
            "cacheable": self.cacheable,
            "deterministic": self.deterministic,
            "revalidations": self.revalidations,
            "mismatches": self.mismatches,
            "inputs_remembered": len(self.seen),
        }


class AdaptiveCache:
    """The learning of every tool the proxy has seen, bounded to MAX_TOOLS."""

    def __init__(self, max_ttl_s: float, learning_enabled: bool = True):
        self.max_ttl_s = max_ttl_s
        self.learning_enabled = learning_enabled
        self.tools: OrderedDict[str, ToolLearning] = OrderedDict()

    def tool(self, name: str) -> ToolLearning:
        learning = self.tools.pop(name, None) or ToolLearning(name, self.max_ttl_s, self.learning_enabled)
        self.tools[name] = learning
        while len(self.tools) > MAX_TOOLS:
            self.tools.popitem(last=False)
        return learning

    def confidence_score(self) -> float:
        """How sure the learner is of its current decisions, weighted by each tool's recent requests."""
        weights = [(len(t.outcomes), t.decision_confidence()) for t in self.tools.values() if t.outcomes]
        total = sum(w for w, _ in weights)
        return sum(w * c for w, c in weights) / total if total else 0.0

    def totals(self) -> dict[str, Any]:
        names = ("requests", "hits", "misses", "bypassed", "unavailable", "stores", "revalidations", "mismatches")
        sums = {name: sum(getattr(t, name) for t in self.tools.values()) for name in names}
        lookups = sums["hits"] + sums["misses"]
        sums["hit_ratio"] = round(sums["hits"] / lookups, 4) if lookups else 0.0
        return sums

    def snapshot(self) -> dict[str, Any]:
        return {
            "learning_enabled": self.learning_enabled,
            "confidence_score": round(self.confidence_score(), 4),
            "method": f"per tool Beta(1+repeats, 1+first sightings) over the last {WINDOW} requests;"
                      f" cacheable while P(p > {BREAK_EVEN}) >= {CONFIDENT}",
            "tools": {name: t.snapshot() for name, t in self.tools.items()},
        }
