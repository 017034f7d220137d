"""The tool-capture proxy on the real stack: a real tool server, the real registry, the real Redis.

Every test starts its own tiny aiohttp tool server on a free loopback port
(POST /tools/<tool> answers a deterministic output and counts its calls) and
registers it in the service registry under a tool name of its own (the stack
is shared by the session).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections import Counter
from typing import Any

import pytest_asyncio
from aiohttp import web

from chaos.targets.process import ProcessTarget
from nodes.envelope import EventType


class ToolServer:
    """A real tool provider: output = the tool name and the sha256 of the canonical input."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.fail = False  # answer 500 while set
        self.drift = False  # while set, the output also carries the call count: not deterministic
        self.runner: web.AppRunner | None = None
        self.port = 0

    @staticmethod
    def output(tool: str, input_data: dict) -> dict:
        digest = hashlib.sha256(json.dumps(input_data, sort_keys=True).encode()).hexdigest()
        return {"tool": tool, "digest": digest}

    async def handle(self, request: web.Request) -> web.Response:
        tool = request.match_info["tool"]
        self.calls[tool] += 1
        if self.fail:
            return web.json_response({"error": "failing on demand"}, status=500)
        body = await request.json()
        output = self.output(tool, body["input_data"])
        if self.drift:
            output["call"] = self.calls[tool]
        return web.json_response({"output": output})

    async def start(self) -> "ToolServer":
        app = web.Application()
        app.router.add_post("/tools/{tool}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest_asyncio.fixture
async def tool_servers():
    """`await make()` starts another tool server; all stop after the test."""
    started: list[ToolServer] = []

    async def make() -> ToolServer:
        server = await ToolServer().start()
        started.append(server)
        return server

    yield make
    for server in started:
        await server.stop()


def unique(name: str) -> str:
    return f"{name}_{uuid.uuid4().hex[:8]}"


async def register(http, urls, server: ToolServer, service_name: str, tool: str, instance_id: str | None = None,
                   health_status: str | None = None) -> str:
    body: dict[str, Any] = {"service_name": service_name, "version": "1.0.0",
                            "instance_id": instance_id or unique("instance"), "host": "127.0.0.1",
                            "port": server.port, "capabilities": [tool]}
    if health_status:
        body["health_status"] = health_status
    async with http.post(f"{urls['SERVICE_REGISTRY_URL']}/registry/services", json=body) as resp:
        assert resp.status == 200, await resp.text()
        return (await resp.json())["data"]["registration_id"]


async def proxy(http, urls, tool: str, body: Any, **kwargs) -> tuple[int, dict]:
    async with http.post(f"{urls['TOOL_CAPTURE_PROXY_URL']}/proxy/tool/{tool}", json=body, **kwargs) as resp:
        return resp.status, await resp.json()


async def cache_stats(http, urls) -> dict:
    async with http.get(f"{urls['TOOL_CAPTURE_PROXY_URL']}/cache/stats") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["success"] is True
    return body["data"]


async def node_stats(http, urls) -> dict:
    async with http.get(f"{urls['TOOL_CAPTURE_PROXY_URL']}/stats") as resp:
        assert resp.status == 200
        return await resp.json()


async def test_proxy_routing_and_caching_integration(http, urls, tool_servers):
    """Seed 004's test, adapted: its target was not real (it accepted 200, 404 or 500); ours is a real
    tool server, so the routed answer, the call it received and the cache statistics are asserted."""
    server = await tool_servers()
    tool, service = unique("mock_tool"), unique("mock-target-service")
    await register(http, urls, server, service, tool, instance_id="mock-target-001")
    proxy_request = {
        "target_service": service,
        "input_data": {"test_input": "cache_test_data", "request_id": "cache_test_001"},
        "execution_options": {"timeout_seconds": 30, "cache_policy": "adaptive", "priority": "normal"},
    }
    status, first = await proxy(http, urls, tool, proxy_request)
    assert status == 200, first
    data = first["data"]
    assert first["success"] is True and data["tool"] == tool
    assert data["output"] == ToolServer.output(tool, proxy_request["input_data"])
    assert data["instance_id"] == "mock-target-001" and data["cache"] == "miss"
    assert data["upstream_ms"] > 0 and data["proxy_overhead_ms"] >= 0
    uuid.UUID(data["execution_id"])
    assert server.calls[tool] == 1

    # a target service that does not offer the tool: nothing to route to
    status, other = await proxy(http, urls, tool, {**proxy_request, "target_service": unique("nobody")})
    assert status == 404 and other["success"] is False and tool in other["error"]

    stats = await cache_stats(http, urls)
    assert "cache_statistics" in stats
    cache = stats["cache_statistics"]
    assert cache["backend"] == "redis" and cache["available"] is True
    for key in ("hits", "misses", "bypassed", "unavailable", "hit_ratio"):
        assert key in cache
    learned = stats["adaptive_caching"]["tools"][tool]
    assert learned["requests"] == 2 and learned["misses"] == 2 and learned["upstream_errors"] == 1


async def test_adaptive_caching_intelligence(http, urls, tool_servers):
    """Seed 004's test, with a real target: five identical requests one second apart (the seed's pacing)
    are learned as worth caching; the tool server runs once, the later answers are hits."""
    server = await tool_servers()
    tool, service = unique("caching_test_tool"), unique("caching-test-service")
    await register(http, urls, server, service, tool, instance_id="caching-001")
    consistent_request = {"target_service": service, "input_data": {"consistent": "data", "cache_test": True},
                          "execution_options": {"cache_policy": "adaptive"}}
    labels = []
    for i in range(5):
        status, result = await proxy(http, urls, tool, consistent_request)
        assert status == 200, result
        assert result["data"]["output"] == ToolServer.output(tool, consistent_request["input_data"])
        labels.append(result["data"]["cache"])
        if i < 4:
            await asyncio.sleep(1)  # the seed's pacing: the repeat interval the TTL is learned from
    assert labels == ["miss", "hit", "hit", "hit", "hit"]
    assert server.calls[tool] == 1

    stats = await cache_stats(http, urls)
    adaptive_caching = stats["adaptive_caching"]
    assert adaptive_caching["learning_enabled"] is True
    assert adaptive_caching["confidence_score"] > 0.5
    learned = adaptive_caching["tools"][tool]
    assert learned["confidence_score"] > 0.5 and learned["cacheable"] is True
    assert learned["hits"] == 4 and learned["misses"] == 1 and learned["hit_ratio"] == 0.8
    assert 1.0 <= learned["ttl_s"] <= 4.0  # 2 × the ~1 s repeat interval


async def test_all_unique_inputs_are_learned_not_worth_caching(http, urls, tool_servers):
    server = await tool_servers()
    tool = unique("unique_tool")
    await register(http, urls, server, unique("unique-service"), tool)
    labels = []
    for i in range(8):
        status, result = await proxy(http, urls, tool, {"input_data": {"n": i}})
        assert status == 200 and result["data"]["output"] == ToolServer.output(tool, {"n": i})
        labels.append(result["data"]["cache"])
    assert labels[0] == "miss" and labels[-1] == "bypass"  # cached while learning, then not any more
    assert server.calls[tool] == 8
    learned = (await cache_stats(http, urls))["adaptive_caching"]["tools"][tool]
    assert learned["cacheable"] is False and learned["confidence_score"] < 0.5
    assert learned["first_sightings"] == 8 and learned["repeats"] == 0


async def test_a_tool_whose_results_change_is_caught_by_revalidation(http, urls, tool_servers):
    """Every 10th hit is executed again and compared: a difference stops caching the tool for good."""
    server = await tool_servers()
    server.drift = True
    tool = unique("drifting_tool")
    await register(http, urls, server, unique("drifting-service"), tool)
    labels, outputs = [], []
    for _ in range(12):
        status, result = await proxy(http, urls, tool, {"input_data": {"same": "input"}})
        assert status == 200, result
        labels.append(result["data"]["cache"])
        outputs.append(result["data"]["output"])
    # 1 miss, hits 1-9 from the cache, hit 10 revalidated: it differs, so the fresh result is answered
    assert labels == ["miss"] + ["hit"] * 9 + ["miss", "bypass"]
    assert outputs[10]["call"] == 2 and outputs[11]["call"] == 3 and server.calls[tool] == 3
    learned = (await cache_stats(http, urls))["adaptive_caching"]["tools"][tool]
    assert learned["deterministic"] is False and learned["cacheable"] is False
    assert learned["mismatches"] == 1 and learned["revalidations"] == 1


async def test_bypass_round_robin_and_unhealthy_instances_skipped(http, urls, tool_servers):
    a, b, sick = await tool_servers(), await tool_servers(), await tool_servers()
    tool, service = unique("rr_tool"), unique("rr-service")
    await register(http, urls, a, service, tool, instance_id="rr-a")
    await register(http, urls, b, service, tool, instance_id="rr-b")
    await register(http, urls, sick, service, tool, instance_id="rr-sick", health_status="unhealthy")
    instances = []
    for _ in range(6):
        status, result = await proxy(http, urls, tool, {"input_data": {"same": 1},
                                                        "execution_options": {"cache_policy": "bypass"}})
        assert status == 200 and result["data"]["cache"] == "bypass"
        instances.append(result["data"]["instance_id"])
    assert Counter(instances) == {"rr-a": 3, "rr-b": 3}
    assert instances[0] != instances[1]  # they take turns
    assert a.calls[tool] == 3 and b.calls[tool] == 3 and sick.calls[tool] == 0


async def test_breaker_opens_after_five_failures_and_fails_fast(http, urls, tool_servers):
    server = await tool_servers()
    server.fail = True
    tool = unique("failing_tool")
    await register(http, urls, server, unique("failing-service"), tool)
    for _ in range(5):
        status, result = await proxy(http, urls, tool, {"input_data": {"x": 1}})
        assert status == 502 and result["success"] is False and "500" in result["error"]
    assert server.calls[tool] == 5
    began = time.monotonic()
    status, result = await proxy(http, urls, tool, {"input_data": {"x": 1}})
    assert status == 503 and "circuit breaker" in result["error"], result
    assert time.monotonic() - began < 1.0
    assert server.calls[tool] == 5  # the open breaker kept the call from the tool server
    breakers = (await node_stats(http, urls))["breakers"]
    assert breakers[f"http://127.0.0.1:{server.port}"]["state"] == "open"


async def test_redis_killed_answers_stay_correct_and_caching_resumes(http, urls, tool_servers, stack_state_path):
    server = await tool_servers()
    tool = unique("redis_chaos_tool")
    await register(http, urls, server, unique("redis-chaos-service"), tool)
    hot = {"input_data": {"hot": "input"}}
    labels = [(await proxy(http, urls, tool, hot))[1]["data"]["cache"] for _ in range(2)]
    assert labels == ["miss", "hit"]
    redis = ProcessTarget("redis", stack_state_path)
    redis.kill()
    try:
        for i in range(6):
            payload = hot if i % 2 == 0 else {"input_data": {"cold": i}}
            calls = server.calls[tool]
            began = time.monotonic()
            status, result = await proxy(http, urls, tool, payload)
            assert status == 200, result
            assert result["data"]["cache"] == "unavailable"
            assert result["data"]["output"] == ToolServer.output(tool, payload["input_data"])
            assert server.calls[tool] == calls + 1  # answered by the tool, never from a stale cache
            assert time.monotonic() - began < 2.0  # a dead Redis does not hang a request
        stats = await cache_stats(http, urls)
        assert stats["cache_statistics"]["available"] is False
        assert stats["adaptive_caching"]["tools"][tool]["unavailable"] >= 6
    finally:
        redis.start()
    # Redis is back (empty): the proxy reconnects by itself, stores again, and hits
    deadline = time.monotonic() + 20
    seen = []
    while True:
        status, result = await proxy(http, urls, tool, hot)
        assert status == 200 and result["data"]["output"] == ToolServer.output(tool, hot["input_data"])
        seen.append(result["data"]["cache"])
        if seen[-1] == "hit":
            break
        assert time.monotonic() < deadline, f"no hit within 20 s of the restart: {seen}"
        await asyncio.sleep(0.2)
    assert (await cache_stats(http, urls))["cache_statistics"]["available"] is True


async def test_registry_down_keeps_routing_with_the_last_known_instances(http, urls, tool_servers,
                                                                          stack_state_path):
    server = await tool_servers()
    tool = unique("stale_tool")
    await register(http, urls, server, unique("stale-service"), tool)
    request = {"input_data": {"k": 1}, "execution_options": {"cache_policy": "bypass"}}
    assert (await proxy(http, urls, tool, request))[0] == 200
    before = (await node_stats(http, urls))["discovery"]
    registry = ProcessTarget("service-registry", stack_state_path)
    registry.kill()
    try:
        deadline = time.monotonic() + 20  # until the discovery TTL (5 s) has run out and the registry is asked
        while True:
            status, result = await proxy(http, urls, tool, request)
            assert status == 200, result
            discovery = (await node_stats(http, urls))["discovery"]
            if discovery["sources"].get("stale", 0) > before["sources"].get("stale", 0):
                break
            assert time.monotonic() < deadline, discovery
            await asyncio.sleep(0.25)
        assert discovery["registry_errors"] > before["registry_errors"]
        assert discovery["cache"][f"capability={tool}"]["age_s"] > 0
        assert f"capability={tool}" in discovery["degraded"]
        # a tool nobody asked for before: nothing known, so no route
        status, result = await proxy(http, urls, unique("never_seen"), request)
        assert status == 503 and "registry" in result["error"]
    finally:
        registry.start()
        deadline = time.monotonic() + 60
        while not registry.answers():
            assert time.monotonic() < deadline, "the service registry did not come back"
            await asyncio.sleep(0.2)


async def test_bad_requests_are_refused_and_the_proxy_keeps_working(http, urls, tool_servers):
    server = await tool_servers()
    tool = unique("strict_tool")
    await register(http, urls, server, unique("strict-service"), tool)
    base = f"{urls['TOOL_CAPTURE_PROXY_URL']}/proxy/tool/{tool}"
    raw_cases = [
        (b"not json", 400),
        (b"[1, 2]", 400),
        (b'{"input_data": {"x": NaN}}', 422),
        (b'{"input_data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400),
    ]
    for raw, expected in raw_cases:
        async with http.post(base, data=raw, headers={"Content-Type": "application/json"}) as resp:
            body = await resp.json()
            assert resp.status == expected, (raw[:40], body)
            assert body["success"] is False and body["error"]
    json_cases = [
        ({}, "input_data"),
        ({"input_data": "text"}, "input_data"),
        ({"input_data": {}, "target_service": 5}, "target_service"),
        ({"input_data": {}, "execution_options": []}, "execution_options"),
        ({"input_data": {}, "execution_options": {"timeout_seconds": 0}}, "timeout_seconds"),
        ({"input_data": {}, "execution_options": {"timeout_seconds": -1}}, "timeout_seconds"),
        ({"input_data": {}, "execution_options": {"timeout_seconds": "soon"}}, "timeout_seconds"),
        ({"input_data": {}, "execution_options": {"timeout_seconds": True}}, "timeout_seconds"),
        ({"input_data": {}, "execution_options": {"cache_policy": "always"}}, "cache_policy"),
    ]
    for body, named in json_cases:
        status, result = await proxy(http, urls, tool, body)
        assert status == 422 and named in result["error"], (body, result)
    status, result = await proxy(http, urls, "bad%20tool!", {"input_data": {}})
    assert status == 400
    status, result = await proxy(http, urls, tool, {"input_data": {}}, headers={"X-Correlation-ID": "nope"})
    assert status == 400 and "X-Correlation-ID" in result["error"]
    assert server.calls[tool] == 0  # nothing invalid reached the tool
    status, result = await proxy(http, urls, unique("unknown_tool"), {"input_data": {}})
    assert status == 404 and "no registered instance" in result["error"]
    status, result = await proxy(http, urls, tool, {"input_data": {"fine": True}})
    assert status == 200 and result["data"]["output"] == ToolServer.output(tool, {"fine": True})


async def test_every_call_is_captured_as_a_proxy_request_event(http, urls, tool_servers, watch, topics, wait_db):
    server = await tool_servers()
    tool = unique("captured_tool")
    await register(http, urls, server, unique("captured-service"), tool, instance_id="captured-001")
    correlation = uuid.uuid4()
    answers = []
    for body in ({"input_data": {"a": 1}}, {"input_data": {"a": 1}}, {"input_data": {"a": 2}}):
        status, result = await proxy(http, urls, tool, body, headers={"X-Correlation-ID": str(correlation)})
        assert status == 200
        answers.append(result["data"])
    server.fail = True
    status, failed = await proxy(http, urls, tool, {"input_data": {"a": 3}})
    assert status == 502
    execution_ids = [a["execution_id"] for a in answers] + [failed["execution_id"]]
    events = await watch.wait_for(lambda e: e.event_type == EventType.PROXY_REQUEST
                                  and e.payload.get("execution_id") in execution_ids, count=4)
    by_id = {e.payload["execution_id"]: e for e in events}
    assert len(by_id) == 4
    for answer in answers:
        event = by_id[answer["execution_id"]]
        assert str(event.event_id) == answer["event_id"] and event.correlation_id == correlation
        assert event.payload["tool"] == tool and event.payload["status"] == 200
        assert event.payload["cache"] == answer["cache"] and event.payload["instance_id"] == answer["instance_id"]
    assert [by_id[a["execution_id"]].payload["cache"] for a in answers] == ["miss", "hit", "miss"]
    assert by_id[answers[1]["execution_id"]].payload["instance_id"] is None  # a hit reached no instance
    assert by_id[failed["execution_id"]].payload["status"] == 502
    assert {topic for topic, e in watch.seen if e.event_id in {x.event_id for x in events}} == {topics.proxy_requests}
    await wait_db("SELECT count(*) FROM event_logs WHERE topic = $1 AND key = $2", topics.proxy_requests, tool,
                  expect=lambda v: v == 4, timeout=15)
