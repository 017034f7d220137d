"""Service discovery through the service registry, cached, with the configured URL as the way out.

`ServiceDiscovery.resolve("stamping")` answers a base URL and where it came
from: `cache` (asked the registry less than `ttl_s` ago), `registry` (asked
now), `stale` (the registry did not answer; the last instances it gave are
used, however old) or `fallback` (the registry never answered for this name,
or knows no live instance: the URL the node was configured with). The
registry is asked with a short timeout, so a registry that is down costs a
lookup at most `REGISTRY_TIMEOUT_S` once per `ttl_s`, never a workflow.

Instances whose last heartbeat is older than `STALE_AFTER_S` are passed over
while fresher ones exist; among the rest the lookups go round robin.
`snapshot()` is what the node's /stats shows: counts per source, the names
whose last lookup was degraded (stale or fallback), the registry's errors, lookup latency percentiles and each name's cache age.
"""
from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter, deque
from dataclasses import dataclass

import aiohttp

REGISTRY_TIMEOUT_S = 0.5
STALE_AFTER_S = 30.0
LATENCY_WINDOW = 2000


@dataclass(frozen=True)
class Resolved:
    url: str
    source: str  # cache | registry | stale | fallback
    age_s: float | None  # how old the registry's answer is; None for a fallback


@dataclass
class _Entry:
    urls: list[str]
    fetched_at: float  # monotonic
    turn: itertools.count


class ServiceDiscovery:
    def __init__(self, registry_url: str, ttl_s: float, fallbacks: dict[str, str]):
        self.registry_url = registry_url.rstrip("/")
        self.ttl_s = ttl_s
        self.fallbacks = fallbacks
        self.http: aiohttp.ClientSession | None = None
        self._cache: dict[str, _Entry] = {}
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

    async def resolve(self, name: str) -> Resolved:
        started = time.perf_counter()
        try:
            resolved = await self._resolve(name)
        finally:
            self.lookup_ms.append((time.perf_counter() - started) * 1000)
        self.sources[resolved.source] += 1
        self.last_source[name] = resolved.source
        return resolved

    async def _resolve(self, name: str) -> Resolved:
        entry = self._cache.get(name)
        if entry and time.monotonic() - entry.fetched_at < self.ttl_s:
            return self._pick(entry, "cache")
        async with self._locks.setdefault(name, asyncio.Lock()):  # one registry call per name at a time
            entry = self._cache.get(name)
            if entry and time.monotonic() - entry.fetched_at < self.ttl_s:
                return self._pick(entry, "cache")
            try:
                urls = await self._ask_registry(name)
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError, TypeError) as exc:
                self.registry_errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                if entry:
                    return self._pick(entry, "stale")
                return Resolved(self.fallbacks[name], "fallback", None)
            if not urls:
                return Resolved(self.fallbacks[name], "fallback", None)
            entry = _Entry(urls, time.monotonic(), itertools.count())
            self._cache[name] = entry
            return self._pick(entry, "registry")

    async def _ask_registry(self, name: str) -> list[str]:
        assert self.http is not None
        async with self.http.get(f"{self.registry_url}/registry/services", params={"service_name": name}) as resp:
            body = await resp.json(content_type=None)
            if resp.status != 200 or not body.get("success"):
                raise ValueError(f"registry answered {resp.status}")
        instances = [i for s in body["data"]["services"] for i in s["instances"]
                     if i.get("health_status") != "unhealthy"]
        fresh = [i for i in instances if (i.get("age_s") or 0) < STALE_AFTER_S]
        return sorted(i["url"] for i in (fresh or instances))

    def _pick(self, entry: _Entry, source: str) -> Resolved:
        url = entry.urls[next(entry.turn) % len(entry.urls)]
        return Resolved(url, source, round(time.monotonic() - entry.fetched_at, 3))

    def snapshot(self) -> dict:
        ordered = sorted(self.lookup_ms)

        def pct(q: float) -> float | None:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3) if ordered else None

        now = time.monotonic()
        return {"registry": self.registry_url, "ttl_s": self.ttl_s, "sources": dict(self.sources),
                "degraded": sorted(n for n, s in self.last_source.items() if s in ("stale", "fallback")),
                "registry_errors": self.registry_errors, "last_error": self.last_error,
                "lookup_ms": {"p50": pct(0.5), "p95": pct(0.95), "max": ordered[-1] if ordered else None},
                "cache": {name: {"instances": len(e.urls), "age_s": round(now - e.fetched_at, 3)}
                          for name, e in self._cache.items()}}
