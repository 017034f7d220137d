"""Tool-capture proxy node (seed 004): routes tool calls to registered instances, caches, and captures every call.

POST /proxy/tool/{tool}  {"target_service"?: str, "input_data": {...},
                          "execution_options"?: {"timeout_seconds"?: > 0, "cache_policy"?: "adaptive"|"bypass",
                                                 "priority"?: str}}
    → 200 {"success": true, "data": {"tool", "output", "instance_id", "cache": "hit"|"miss"|"bypass"|"unavailable",
                                     "execution_id", "event_id", "upstream_ms", "proxy_overhead_ms", ...}}
    → 404 no registered instance offers the tool; 502 the instance failed; 503 every instance's breaker is open,
      every instance is unhealthy, or the registry is unreachable with nothing known; 504 the instance timed out
GET  /cache/stats        → {"cache_statistics": {...}, "adaptive_caching": {...}} (nodes/adaptive_cache.py)

Discovery asks the service registry (`GET /registry/services?capability={tool}`) through nodes/discovery.py,
as the orchestrator does: trusted for `discovery_ttl_s`; when the registry is down or errs the last known
instances keep serving (counted as `stale`), and the registry is left alone for a second after each error.
Instances take turns (round robin), each behind its own CircuitBreaker. An instance is called as
`POST {url}/tools/{tool}` with `{"input_data": ...}` and answers 200 `{"output": ...}`.

Capture: every call that passed validation adds one PROXY_REQUEST event (topic proxy_requests, keyed by tool)
to the outbox before the answer goes out, so every acknowledged call is on the bus (if the database cannot take
it, the call answers 503: acknowledged means captured).

Cache key: tool + sha256 of the canonical JSON of input_data (sorted keys); when the call names a
target_service, of [target_service, input_data], since its answer must be that service's.

The cache is Redis, and it is only an optimisation: any Redis error (or no REDIS_URL) means the call goes
upstream and answers `cache: "unavailable"`, never a stale or wrong result. Short socket timeouts and a
breaker (one failure opens it for a second) keep a dead Redis from slowing requests; redis-py reconnects by
itself once it is back.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar

import aiohttp
import asyncpg
from aiohttp import web
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from nodes.adaptive_cache import AdaptiveCache, ToolLearning, cache_key, canonical_json, fingerprint
from nodes.api import BadRequest, failure, field, read_object, respond, success
from nodes.discovery import RegistryUnavailable, ServiceDiscovery
from nodes.breaker import CircuitBreaker, CircuitOpen
from nodes.config import Settings, mask_url
from nodes.envelope import EventType, new_envelope
from nodes.service import Node

log = logging.getLogger(__name__)

T = TypeVar("T")

TOOL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
DEFAULT_TIMEOUT_S = 30.0
MAX_TIMEOUT_S = 300.0
CACHE_POLICIES = ("adaptive", "bypass")
REDIS_SOCKET_TIMEOUT_S = 0.2  # a dead or paused Redis costs a request at most this (twice: one retry)
REDIS_DEADLINE_S = 0.5  # and never more than this, whatever redis-py does inside
REDIS_RETRY_AFTER_S = 1.0  # after a Redis error, skip the cache this long before trying again


class ProxyError(Exception):
    """A call that cannot be answered with a result: the status and why."""

    def __init__(self, status: int, error: str, upstream_ms: float = 0.0, **extra: Any):
        super().__init__(error)
        self.status = status
        self.error = error
        self.upstream_ms = upstream_ms  # time spent on an instance that failed or timed out
        self.extra = extra


class InstanceFailed(Exception):
    """The instance failed (breaker counts it): connection error, 5xx, or not the expected answer."""


class CacheUnavailable(Exception):
    """Redis could not be used for this call (not configured, down, slow, or its breaker is open)."""


@dataclass
class Upstream:
    output: Any
    instance_id: str | None
    service_name: str | None
    upstream_ms: float


def instance_url(instance: dict[str, Any]) -> str | None:
    url = instance.get("url")
    if isinstance(url, str) and url:
        return url.rstrip("/")
    host, port = instance.get("host"), instance.get("port")
    return f"http://{host}:{port}" if host and port else None


class ToolCaptureProxyNode(Node):
    kind = "tool-capture-proxy"
    extra_middlewares = (respond,)

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.cache = AdaptiveCache(settings.cache_ttl_s, settings.adaptive_caching)
        self.redis: Redis | None = None
        self.redis_breaker = CircuitBreaker("redis", failure_threshold=1, reset_timeout_s=REDIS_RETRY_AFTER_S)
        self.redis_errors = 0
        self.redis_last_error: str | None = None
        self.http: aiohttp.ClientSession | None = None
        self.discovery = ServiceDiscovery(settings.service_registry_url, settings.discovery_ttl_s)
        self.breakers: dict[str, CircuitBreaker] = {}  # per instance URL
        self._turn: dict[tuple[str, str | None], int] = {}
        self.responses: dict[str, int] = {}  # status code -> count

    # -- lifecycle -------------------------------------------------------------------
    def setup_routes(self, app: web.Application) -> None:
        app.router.add_post("/proxy/tool/{tool}", self.handle_proxy)
        app.router.add_get("/cache/stats", self.handle_cache_stats)

    async def on_start(self) -> None:
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=500))
        await self.discovery.start()
        if self.settings.redis_url:
            self.redis = Redis.from_url(
                self.settings.redis_url,
                socket_timeout=REDIS_SOCKET_TIMEOUT_S,
                socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S,
                retry=Retry(NoBackoff(), 1),  # one immediate retry: a pooled connection Redis closed on restart
            )

    async def on_stop(self) -> None:
        if self.http is not None:
            await self.http.close()
        await self.discovery.stop()
        if self.redis is not None:
            await self.redis.aclose()

    def capabilities(self) -> dict[str, Any]:
        return {"routes": ["/proxy/tool/{tool}", "/cache/stats"], "cache": "redis" if self.redis else "none",
                "adaptive_caching": self.settings.adaptive_caching}

    # -- POST /proxy/tool/{tool} ----------------------------------------------------------
    async def handle_proxy(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        tool = request.match_info["tool"]
        if not TOOL_NAME.match(tool):
            raise BadRequest("the tool name must be 1-128 letters, digits or _ . : - (starting with a letter"
                             " or digit)", 400)
        try:
            body = await read_object(request)
            target, input_data, timeout_s, policy, priority = self._validate(body)
            input_fingerprint = fingerprint(input_data, target)
        except RecursionError:
            raise BadRequest("body is nested too deeply", 400) from None
        except ValueError as exc:  # NaN or Infinity: not JSON, cannot be forwarded or fingerprinted
            raise BadRequest(f"field 'input_data' must be plain JSON: {exc}") from None

        correlation_id = self._correlation_id(request)
        execution_id = str(uuid.uuid4())
        learning = self.cache.tool(tool)
        learning.observe(input_fingerprint)
        status, data, error = 200, None, None
        cache: str | None = None  # stays None when the call failed
        upstream: Upstream | None = None
        try:
            cache, upstream, output = await self._execute(tool, target, input_data, timeout_s, policy, learning,
                                                          input_fingerprint)
            data = {"tool": tool, "output": output, "instance_id": upstream.instance_id if upstream else None,
                    "service_name": upstream.service_name if upstream else None, "cache": cache,
                    "execution_id": execution_id}
        except ProxyError as exc:
            learning.errors += 1
            status, error = exc.status, exc
        upstream_ms = upstream.upstream_ms if upstream else error.upstream_ms if error else 0.0
        env = new_envelope(
            EventType.PROXY_REQUEST,
            {"tool": tool, "execution_id": execution_id,
             "instance_id": upstream.instance_id if upstream else error.extra.get("instance_id") if error else None,
             "target_service": target, "cache": cache, "status": status, "upstream_ms": round(upstream_ms, 3),
             "input_fingerprint": input_fingerprint, "priority": priority,
             "error": error.error if error else None},
            source_node_id=self.settings.node_id,
            namespace=self.settings.namespace,
            correlation_id=correlation_id,
        )
        assert self.outbox is not None
        event_id: str | None = str(env.event_id)
        try:
            await self.outbox.publish(self.settings.topics.proxy_requests, tool, env)  # one short transaction
        except (asyncpg.PostgresError, OSError) as exc:  # acknowledged means captured: not captured, not a 200
            log.warning("proxy request %s not captured: %r", execution_id, exc)
            status, error = 503, ProxyError(503, f"the call was not captured (database unavailable: "
                                                 f"{type(exc).__name__}); its result is withheld")
            data, event_id = None, None
        self.responses[str(status)] = self.responses.get(str(status), 0) + 1
        total_ms = (time.perf_counter() - started) * 1000
        timing = {"upstream_ms": round(upstream_ms, 3), "proxy_overhead_ms": round(max(total_ms - upstream_ms, 0), 3)}
        if error is not None:
            return failure(status, error.error, tool=tool, execution_id=execution_id, event_id=event_id,
                           **error.extra, **timing)
        assert data is not None
        return success({**data, "event_id": event_id, **timing})

    @staticmethod
    def _validate(body: dict[str, Any]) -> tuple[str | None, dict, float, str, str | None]:
        target = field(body, "target_service", str, required=False)
        input_data = field(body, "input_data", dict)
        options = field(body, "execution_options", dict, required=False, default={})
        where = "execution_options"
        timeout_s = float(field(options, "timeout_seconds", (int, float), required=False, default=DEFAULT_TIMEOUT_S,
                                where=where))
        if not 0 < timeout_s <= MAX_TIMEOUT_S:
            raise BadRequest(f"field '{where}.timeout_seconds' must be above 0 and at most {MAX_TIMEOUT_S:g}")
        policy = field(options, "cache_policy", str, required=False, default="adaptive", where=where)
        if policy not in CACHE_POLICIES:
            raise BadRequest(f"field '{where}.cache_policy' must be one of {', '.join(CACHE_POLICIES)}, not {policy!r}")
        priority = field(options, "priority", str, required=False, where=where)  # recorded, not acted upon
        return target, input_data, timeout_s, policy, priority

    @staticmethod
    def _correlation_id(request: web.Request) -> str | None:
        raw = request.headers.get("X-Correlation-ID")
        if not raw:
            return None
        try:
            return str(uuid.UUID(raw))
        except ValueError:
            raise BadRequest("header X-Correlation-ID must be a UUID", 400) from None

    async def _execute(self, tool: str, target: str | None, input_data: dict, timeout_s: float, policy: str,
                       learning: ToolLearning, input_fingerprint: str) -> tuple[str, Upstream | None, Any]:
        """The cache decision and the call: (cache label, the upstream call if one was made, the output)."""
        if policy == "bypass" or not learning.cacheable:
            learning.bypassed += 1
            upstream = await self._call_upstream(tool, target, input_data, timeout_s)
            return "bypass", upstream, upstream.output
        key = cache_key(tool, input_fingerprint)
        try:
            found, cached = await self._cache_get(key)
        except CacheUnavailable:
            learning.unavailable += 1
            upstream = await self._call_upstream(tool, target, input_data, timeout_s)
            return "unavailable", upstream, upstream.output
        if found:
            if not learning.record_hit():
                return "hit", None, cached
            # the determinism check: run it again; on an upstream failure the cached result (still valid) stands
            try:
                upstream = await self._call_upstream(tool, target, input_data, timeout_s)
            except ProxyError as exc:
                log.warning("revalidation of %s failed upstream (%s); answering from the cache", tool, exc.error)
                return "hit", None, cached
            if learning.record_revalidation(cached, upstream.output):
                return "hit", upstream, cached
            log.warning("tool %s is not deterministic (a cached result differs from a fresh one): not cached", tool)
            await self._cache_delete(key)
            return "miss", upstream, upstream.output
        learning.misses += 1
        upstream = await self._call_upstream(tool, target, input_data, timeout_s)
        if not learning.cacheable:  # learned meanwhile (a revalidation of another call found a mismatch)
            return "miss", upstream, upstream.output
        try:
            await self._cache_set(key, upstream.output, learning.ttl_s())
            learning.stores += 1
        except CacheUnavailable:
            learning.unavailable += 1
            return "unavailable", upstream, upstream.output
        return "miss", upstream, upstream.output

    # -- Redis -------------------------------------------------------------------------------
    async def _redis(self, op: Callable[[Redis], Awaitable[T]]) -> T:
        if self.redis is None:
            raise CacheUnavailable("no REDIS_URL configured")
        redis = self.redis
        try:
            return await self.redis_breaker.call(lambda: asyncio.wait_for(op(redis), REDIS_DEADLINE_S))
        except CircuitOpen as exc:
            raise CacheUnavailable(str(exc)) from None
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self.redis_errors += 1
            self.redis_last_error = f"{type(exc).__name__}: {exc}"
            log.warning("redis unavailable: %s", self.redis_last_error)
            raise CacheUnavailable(self.redis_last_error) from None

    async def _cache_get(self, key: str) -> tuple[bool, Any]:
        """(found, the cached output); an output may itself be null."""
        raw = await self._redis(lambda r: r.get(key))
        if raw is None:
            return False, None
        try:
            return True, json.loads(raw)
        except ValueError:  # not what we wrote: a miss, and the store overwrites it
            return False, None

    async def _cache_set(self, key: str, output: Any, ttl_s: float) -> None:
        value = canonical_json(output)
        await self._redis(lambda r: r.set(key, value, px=max(int(ttl_s * 1000), 1)))

    async def _cache_delete(self, key: str) -> None:
        try:
            await self._redis(lambda r: r.delete(key))
        except CacheUnavailable:
            pass  # the tool is marked not cacheable: the entry is never read again

    async def _redis_answers(self) -> bool:
        try:
            return bool(await self._redis(lambda r: r.ping()))
        except CacheUnavailable:
            return False

    def _breaker(self, url: str) -> CircuitBreaker:
        breaker = self.breakers.get(url)
        if breaker is None:
            breaker = self.breakers[url] = CircuitBreaker(
                url, self.settings.proxy_breaker_failure_threshold, self.settings.proxy_breaker_reset_timeout_s)
        return breaker

    # -- the call -----------------------------------------------------------------------------------
    async def _call_upstream(self, tool: str, target: str | None, input_data: dict, timeout_s: float) -> Upstream:
        """The next healthy instance whose breaker lets the call through, called once; ProxyError otherwise."""
        try:
            instances = (await self.discovery.lookup(capability=tool, service_name=target)).instances
        except RegistryUnavailable as exc:
            raise ProxyError(503, f"service registry unavailable ({exc}) and no instance of tool {tool} known yet"
                             ) from None
        where = f" of service {target!r}" if target else ""
        if not instances:
            raise ProxyError(404, f"no registered instance{where} offers tool {tool}")
        healthy = [i for i in instances if i.get("health_status") != "unhealthy"]
        if not healthy:
            raise ProxyError(503, f"every registered instance{where} of tool {tool} is unhealthy",
                             instances=len(instances))
        turn = self._turn.get((tool, target), 0)
        self._turn[(tool, target)] = turn + 1
        open_circuits = []
        for n in range(len(healthy)):
            instance = healthy[(turn + n) % len(healthy)]
            url = instance_url(instance)
            assert url is not None
            breaker = self._breaker(url)
            began = time.perf_counter()
            try:
                output = await breaker.call(lambda: self._forward(url, tool, input_data, timeout_s))
            except CircuitOpen:
                open_circuits.append(instance.get("instance_id") or url)
                continue
            except asyncio.TimeoutError:
                raise ProxyError(504, f"instance {instance.get('instance_id') or url} did not answer tool {tool}"
                                      f" within {timeout_s:g}s", (time.perf_counter() - began) * 1000,
                                 instance_id=instance.get("instance_id")) from None
            except InstanceFailed as exc:
                raise ProxyError(502, f"instance {instance.get('instance_id') or url} failed tool {tool}: {exc}",
                                 (time.perf_counter() - began) * 1000,
                                 instance_id=instance.get("instance_id")) from None
            return Upstream(output, instance.get("instance_id"), instance.get("service_name"),
                            (time.perf_counter() - began) * 1000)
        raise ProxyError(503, f"the circuit breaker of every instance of tool {tool} is open"
                              f" ({', '.join(map(str, open_circuits))}); retry after"
                              f" {self.settings.proxy_breaker_reset_timeout_s:g}s", open_circuits=open_circuits)

    async def _forward(self, url: str, tool: str, input_data: dict, timeout_s: float) -> Any:
        """POST {url}/tools/{tool}; the answer's output, or InstanceFailed / asyncio.TimeoutError."""
        assert self.http is not None
        try:
            async with self.http.post(f"{url}/tools/{tool}", json={"input_data": input_data},
                                      timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
                text = await resp.text()
                if resp.status != 200:
                    raise InstanceFailed(f"answered {resp.status}: {text[:200]}")
                body = json.loads(text)
        except asyncio.TimeoutError:  # before ClientError: aiohttp's timeouts are both
            raise
        except aiohttp.ClientError as exc:
            raise InstanceFailed(f"{type(exc).__name__}: {exc}") from None
        except ValueError:
            raise InstanceFailed(f"answered 200 with a body that is not JSON: {text[:200]}") from None
        if not isinstance(body, dict) or "output" not in body:
            raise InstanceFailed(f"answered 200 without an 'output': {text[:200]}")
        return body["output"]

    # -- GET /cache/stats and /stats ----------------------------------------------------------------
    def cache_statistics(self, available: bool) -> dict[str, Any]:
        return {
            "backend": "redis" if self.redis is not None else "none",
            "available": available,
            "url": mask_url(self.settings.redis_url) if self.settings.redis_url else None,
            **self.cache.totals(),
            "errors": self.redis_errors,
            "last_error": self.redis_last_error,
            "breaker": self.redis_breaker.snapshot(),
        }

    async def handle_cache_stats(self, request: web.Request) -> web.Response:
        available = await self._redis_answers()
        return success({"cache_statistics": self.cache_statistics(available),
                        "adaptive_caching": self.cache.snapshot()})

    def stats(self) -> dict[str, Any]:
        return {
            "responses": dict(self.responses),
            "cache_statistics": self.cache_statistics(self.redis is not None and self.redis_breaker.state == "closed"),
            "adaptive_caching": self.cache.snapshot(),
            "discovery": self.discovery.snapshot(),
            "breakers": {url: b.snapshot() for url, b in self.breakers.items()},
        }
