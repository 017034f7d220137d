"""Service discovery through the service registry: cached answers, and the last known ones when it is down.

`ServiceDiscovery.lookup(capability="blake3_hash")` (the tool proxy) or
`lookup(service_name="stamping")` answers the registry's instances for that
query and where they came from: `cache` (the registry was asked less than
`ttl_s` ago), `registry` (asked now) or `stale` (the registry did not answer:
the last instances it gave, however old). With nothing known and the
registry down it raises `RegistryUnavailable`. The registry is asked with a
short timeout, one call per query at a time, and after an error it is left
alone for `RETRY_AFTER_S` (a breaker), so a registry that is down or paused
costs one caller its timeout, never every caller.

`resolve("stamping")` is the orchestrator's: one base URL by service name,
round robin over the instances whose last heartbeat is younger than
`STALE_AFTER_S` (all of them if none is), and the URL the node was configured
with (`fallback`) when the registry never answered or knows no instance.
`snapshot()` is what a node's /stats shows: lookups per source, the queries
whose last lookup was degraded (stale or fallback), the registry's errors,
lookup latency percentiles and each cached answer's age.
"""
from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Mapping

import aiohttp

from nodes.breaker import CircuitBreaker, CircuitOpen

REGISTRY_TIMEOUT_S = 0.5
RETRY_AFTER_S = 1.0
STALE_AFTER_S = 30.0
LATENCY_WINDOW = 2000
MAX_ENTRIES = 1000  # queries remembered: tool names come from callers


class RegistryUnavailable(Exception):
    """The registry did not answer and nothing is known for the query (the message says why)."""


@dataclass(frozen=True)
class Lookup:
    instances: list[dict[str, Any]]
    source: str  # cache | registry | stale
    age_s: float


@dataclass(frozen=True)
class Resolved:
    url: str
    source: str  # cache | registry | stale | fallback
    age_s: float | None  # how old the registry's answer is; None for a fallback


@dataclass
class _Entry:
    instances: list[dict[str, Any]]
    fetched_at: float  # monotonic
    turn: itertools.count = field(default_factory=itertools.count)


def query_label(query: Mapping[str, str]) -> str:
    """{"capability": "x"} -> "capability=x": how a query is named in stats."""
    return ",".join(f"{k}={v}" for k, v in sorted(query.items()))


class ServiceDiscovery:
    def __init__(self, registry_url: str, ttl_s: float, fallbacks: Mapping[str, str] | None = None):
        self.registry_url = registry_url.rstrip("/")
        self.ttl_s = ttl_s
        self.fallbacks = dict(fallbacks or {})
        self.http: aiohttp.ClientSession | None = None
        self.breaker = CircuitBreaker("service-registry", failure_threshold=1, reset_timeout_s=RETRY_AFTER_S)
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self.sources: Counter[str] = Counter()
        self.last_source: dict[str, str] = {}
        self.registry_errors = 0
        self.last_error: str | None = None
        self.lookup_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)

    async def start(self) -> None:
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REGISTRY_TIMEOUT_S))

    async def stop(self) -> None:
        if self.http:
            await self.http.close()

    # -- by query (the proxy) --------------------------------------------------------------------
    async def lookup(self, **query: str | None) -> Lookup:
        """The instances the registry lists for `query` (None values are left out), cached; see the docstring."""
        wanted = {k: v for k, v in query.items() if v}
        label = query_label(wanted)
        started = time.perf_counter()
        try:
            found = await self._lookup(label, wanted)
        except RegistryUnavailable:
            self.last_source[label] = "unavailable"  # the registry's error is counted in registry_errors
            raise
        finally:
            self.lookup_ms.append((time.perf_counter() - started) * 1000)
        self._count(label, found.source)
        return found

    async def _lookup(self, label: str, query: dict[str, str]) -> Lookup:
        entry = self._fresh(label)
        if entry:
            return Lookup(entry.instances, "cache", self._age(entry))
        async with self._locks.setdefault(label, asyncio.Lock()):  # one registry call per query at a time
            entry = self._fresh(label)
            if entry:
                return Lookup(entry.instances, "cache", self._age(entry))
            try:
                instances = await self.breaker.call(lambda: self._ask_registry(query))
            except (CircuitOpen, RegistryUnavailable) as exc:
                known = self._cache.get(label)
                if known is None:
                    raise RegistryUnavailable(self.last_error or str(exc)) from None
                return Lookup(known.instances, "stale", self._age(known))
            entry = self._cache[label] = _Entry(instances, time.monotonic())
            self._cache.move_to_end(label)
            while len(self._cache) > MAX_ENTRIES:
                oldest, _ = self._cache.popitem(last=False)
                lock = self._locks.get(oldest)
                if lock is not None and not lock.locked():
                    del self._locks[oldest]
            return Lookup(instances, "registry", 0.0)

    async def _ask_registry(self, query: dict[str, str]) -> list[dict[str, Any]]:
        if not self.registry_url:
            raise RegistryUnavailable("no service registry configured (SERVICE_REGISTRY_URL)")
        assert self.http is not None, "start() first"
        try:
            async with self.http.get(f"{self.registry_url}/registry/services", params=query) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200 or not isinstance(body, dict) or body.get("success") is not True:
                    raise RegistryUnavailable(f"service registry answered {resp.status}: {str(body)[:200]}")
            return [{**instance, "service_name": service.get("service_name")}
                    for service in body["data"]["services"] for instance in service["instances"]
                    if isinstance(instance, dict) and instance.get("url")]
        except RegistryUnavailable as exc:
            self._error(str(exc))
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError, TypeError) as exc:
            self._error(f"service registry unreachable: {type(exc).__name__}: {exc}")
            raise RegistryUnavailable(self.last_error) from None

    # -- by name (the orchestrator) -----------------------------------------------------------------
    async def resolve(self, name: str) -> Resolved:
        """One base URL of service `name`: discovered, or the configured fallback (see the docstring)."""
        try:
            found = await self.lookup(service_name=name)
        except RegistryUnavailable:
            return self._fallback(name)
        live = [i for i in found.instances if i.get("health_status") != "unhealthy"]
        fresh = [i for i in live if (i.get("age_s") or 0) < STALE_AFTER_S] or live
        if not fresh:
            return self._fallback(name)
        entry = self._cache[query_label({"service_name": name})]
        urls = sorted(i["url"] for i in fresh)
        return Resolved(urls[next(entry.turn) % len(urls)], found.source, round(found.age_s, 3))

    def _fallback(self, name: str) -> Resolved:
        label = query_label({"service_name": name})
        self.last_source[label] = "fallback"
        self.sources["fallback"] += 1
        return Resolved(self.fallbacks.get(name, ""), "fallback", None)

    # -- bookkeeping ---------------------------------------------------------------------------------
    def _fresh(self, label: str) -> _Entry | None:
        entry = self._cache.get(label)
        return entry if entry is not None and self._age(entry) < self.ttl_s else None

    @staticmethod
    def _age(entry: _Entry) -> float:
        return time.monotonic() - entry.fetched_at

    def _count(self, label: str, source: str) -> None:
        self.sources[source] += 1
        self.last_source[label] = source

    def _error(self, message: str) -> None:
        self.registry_errors += 1
        self.last_error = message[:300]

    def snapshot(self) -> dict[str, Any]:
        ordered = sorted(self.lookup_ms)

        def pct(q: float) -> float | None:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3) if ordered else None

        return {"registry": self.registry_url, "ttl_s": self.ttl_s, "sources": dict(self.sources),
                "degraded": sorted(q for q, s in self.last_source.items() if s in ("stale", "fallback", "unavailable")),
                "registry_errors": self.registry_errors, "last_error": self.last_error,
                "registry_breaker": self.breaker.snapshot(),
                "lookup_ms": {"p50": pct(0.5), "p95": pct(0.95), "max": ordered[-1] if ordered else None},
                "cache": {label: {"instances": len(e.instances), "age_s": round(self._age(e), 3)}
                          for label, e in self._cache.items()}}
