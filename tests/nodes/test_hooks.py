"""Seed 004's hook receiver and intelligence pipeline tests, against the real stack.

Each test is the counterpart of one test function of the seed (named in its
docstring) and asserts what the seed asserts. Two adaptations hold for all:
every test sends its hooks in a namespace of its own (patterns are found per
namespace, and the session's stack is shared, so earlier tests' start-ups
would otherwise join the trend), and correlation ids are UUIDs (the bus
contract: the seed's "test-correlation-123" is refused with a 400).
"""
from __future__ import annotations

import asyncio
import json
import uuid

from nodes.envelope import EventType


def _namespace() -> str:
    return f"hooks-{uuid.uuid4().hex[:8]}"


async def _post(http, url: str, body, headers=None) -> tuple[int, dict]:
    async with http.post(url, json=body, headers=headers or {}) as resp:
        return resp.status, await resp.json()


def _startup(name: str, ms: float, namespace: str, steps=None) -> dict:
    hook = {"hook_type": "service_started", "namespace": namespace,
            "service_info": {"name": name, "version": "1.0.0", "instance_id": f"{name}-001",
                             "startup_time_ms": ms}}
    if steps:
        hook["startup_info"] = {"initialization_steps": steps}
    return hook


async def test_hook_to_intelligence_pipeline(urls, http, watch, topics):
    """Seed: test_hook_to_intelligence_pipeline. One start-up hook with its initialization steps → 200 with
    a hook id and patterns discovered, and an intelligence.pattern.discovered event about it."""
    namespace = _namespace()
    hook = {
        "hook_type": "service_started", "namespace": namespace,
        "service_info": {"name": "test-service", "version": "1.0.0", "instance_id": "test-001",
                         "host": "localhost", "port": 8000, "capabilities": ["test_capability"]},
        "startup_info": {"startup_time_ms": 2500, "initialization_steps": [
            {"step": "load_config", "duration_ms": 200, "status": "success"},
            {"step": "init_database", "duration_ms": 300, "status": "success"}]},
    }
    status, result = await _post(http, f"{urls['HOOK_RECEIVER_URL']}/hooks/service/lifecycle", hook,
                                 {"Content-Type": "application/json"})
    assert status == 200, result
    assert result["success"] is True
    assert "hook_id" in result["data"]
    discovered = result["data"]["intelligence_analysis"]["patterns_discovered"]
    assert discovered
    init = next(p for p in discovered if p["pattern_type"] == "service_initialization")
    assert init["dominant_step"] == "init_database" and init["affected_services"] == ["test-service"]

    event = (await watch.wait_for(lambda e: e.event_type == EventType.PATTERN_DISCOVERED
                                  and e.namespace == namespace))[0]
    assert event.payload["pattern_info"]["pattern_type"] in ["startup_performance", "service_initialization"]
    assert event.payload["hook_id"] == result["data"]["hook_id"]
    assert str(event.correlation_id) == result["data"]["correlation_id"]


async def test_complete_event_pipeline(urls, http, watch, topics):
    """Seed: test_complete_event_pipeline. Three start-ups → lifecycle events on hooks.service_lifecycle
    (type service.lifecycle.started, with service_info) and a pattern event on intelligence.patterns.
    Adapted: the seed's hooks have rising start-up times but no steps and only three services; we add
    initialization steps so each hook finds a pattern of its own, as the seed's "at least one" expects."""
    namespace = _namespace()
    for i in range(3):
        hook = _startup(f"test-service-{i}", 2000 + i * 100, namespace,
                        steps=[{"step": "load_config", "duration_ms": 50}, {"step": "warm_cache", "duration_ms": 80}])
        status, body = await _post(http, f"{urls['HOOK_RECEIVER_URL']}/hooks/service/lifecycle", hook)
        assert status == 200, body

    lifecycle = await watch.wait_for(lambda e: e.event_type == EventType.SERVICE_STARTED and e.namespace == namespace,
                                     count=3)
    assert all("service_info" in e.payload for e in lifecycle)
    assert [e.payload["service_info"]["name"] for e in lifecycle] == [f"test-service-{i}" for i in range(3)]
    patterns = await watch.wait_for(lambda e: e.event_type == EventType.PATTERN_DISCOVERED and e.namespace == namespace)
    assert "pattern_info" in patterns[0].payload
    on_topic = {t for t, e in watch.seen if e.namespace == namespace}
    assert on_topic == {topics.service_lifecycle, topics.patterns}


async def test_event_ordering_and_correlation(urls, http, watch, topics):
    """Seed: test_event_ordering_and_correlation. A hook sent with X-Correlation-ID: every event it caused
    carries that id. The seed's ordering check compares arrival times of events on two topics, which no
    broker orders; here the order is causal: the pattern event names the lifecycle event as its cause
    and was stamped after it (per-key order within a topic is the outbox's, tests/nodes/test_workflow.py)."""
    namespace = _namespace()
    correlation_id = uuid.uuid4()
    hook = _startup("correlation-test-service", 1800, namespace,
                    steps=[{"step": "load_config", "duration_ms": 40}, {"step": "connect", "duration_ms": 90}])
    hook["correlation_id"] = str(correlation_id)
    status, body = await _post(http, f"{urls['HOOK_RECEIVER_URL']}/hooks/service/lifecycle", hook,
                               {"X-Correlation-ID": str(correlation_id)})
    assert status == 200, body
    await watch.wait_for(lambda e: e.correlation_id == correlation_id, count=2)
    await asyncio.sleep(0.5)  # and nothing else of this hook arrives with another id
    mine = [(t, e) for t, e in watch.seen if e.namespace == namespace]
    assert len(mine) >= 2
    assert all(e.correlation_id == correlation_id for _, e in mine)
    started = next(e for _, e in mine if e.event_type == EventType.SERVICE_STARTED)
    pattern = next(e for _, e in mine if e.event_type == EventType.PATTERN_DISCOVERED)
    assert pattern.causation_id == started.event_id
    assert started.timestamp <= pattern.timestamp

    status, body = await _post(http, f"{urls['HOOK_RECEIVER_URL']}/hooks/service/lifecycle",
                               _startup("x", 1, namespace), {"X-Correlation-ID": "test-correlation-123"})
    assert status == 400 and body["success"] is False and "UUID" in body["error"]


async def test_event_failure_and_retry_patterns(urls, http, db):
    """Seed: test_event_failure_and_retry_patterns. A malformed hook → 400/422 with success false and an
    error; the next valid hook → 200. Extended to every way a body can be wrong, and to nothing stored."""
    url = f"{urls['HOOK_RECEIVER_URL']}/hooks/service/lifecycle"
    status, body = await _post(http, url, {"hook_type": "invalid_hook_type",
                                           "invalid_payload": {"missing_required_fields": True}})
    assert status in [400, 422]
    assert body["success"] is False
    assert "error" in body and "hook_type" in body["error"]
    namespace = _namespace()
    for bad, expect in [
        ({"hook_type": "service_started", "namespace": namespace}, "service_info"),
        ({"hook_type": "service_started", "namespace": namespace, "service_info": {"name": "s", "version": "1"}},
         "service_info.instance_id"),
        ({**_startup("s", 10, namespace), "service_info": {"name": 5, "version": "1", "instance_id": "i"}},
         "service_info.name"),
        ({**_startup("s", -1, namespace)}, "service_info.startup_time_ms"),
        ({**_startup("s", 10, namespace), "startup_info": {"initialization_steps": ["x"]}},
         "initialization_steps[0]"),
        ([1, 2], "JSON object"),
    ]:
        status, body = await _post(http, url, bad)
        assert status in (400, 422) and body["success"] is False and expect in body["error"], (bad, body)
    async with http.post(url, data=b"{not json", headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 400 and "not valid JSON" in (await resp.json())["error"]
    assert await db.fetchval("SELECT count(*) FROM hook_events WHERE namespace = $1", namespace) == 0

    status, body = await _post(http, url, {"hook_type": "service_started", "service_info": {
        "name": "recovery-test-service", "version": "1.0.0", "instance_id": "recovery-001"}})
    assert status == 200
    assert body["success"] is True


async def test_pattern_discovery_across_multiple_hooks(urls, http):
    """Seed: test_pattern_discovery_across_multiple_hooks. Five services start with rising start-up times →
    a startup_performance pattern with confidence >= 0.7 and at least three affected services. The seed's
    0.5 s between hooks and 5 s of "analysis time" are left out: the pattern is found as each hook arrives."""
    namespace = _namespace()
    for i in range(5):
        hook = _startup(f"pattern-test-service-{i}", 2000 + i * 200, namespace, steps=[
            {"step": "load_config", "duration_ms": 100 + i * 20}, {"step": "init_database", "duration_ms": 200 + i * 30}])
        status, body = await _post(http, f"{urls['HOOK_RECEIVER_URL']}/hooks/service/lifecycle", hook)
        assert status == 200, body

    async with http.get(f"{urls['HOOK_RECEIVER_URL']}/intelligence/patterns",
                        params={"pattern_type": "startup_performance", "namespace": namespace}) as resp:
        result = await resp.json()
    assert resp.status == 200
    assert result["success"] is True
    assert len(result["data"]["patterns"]) >= 1
    pattern = result["data"]["patterns"][0]
    assert pattern["pattern_type"] == "startup_performance"
    assert pattern["confidence_score"] >= 0.7
    assert "affected_services" in pattern
    assert len(pattern["affected_services"]) >= 3
    assert pattern["trend"] == "degrading" and pattern["startups"] == 5


async def test_no_startup_pattern_without_a_trend(urls, http):
    """The check can fail: start-up times with no trend give no startup_performance pattern."""
    namespace = _namespace()
    for i, ms in enumerate([2400, 2000, 2600, 2100, 2500, 2200]):
        status, body = await _post(http, f"{urls['HOOK_RECEIVER_URL']}/hooks/service/lifecycle",
                                   _startup(f"flat-{i}", ms, namespace))
        assert status == 200, body
    async with http.get(f"{urls['HOOK_RECEIVER_URL']}/intelligence/patterns",
                        params={"pattern_type": "startup_performance", "namespace": namespace}) as resp:
        result = await resp.json()
    assert result["data"]["patterns"] == []


def _execution(tool: str, execution_id: str, ms: float, cpu: float, mb: float, namespace: str) -> dict:
    return {"hook_type": "tool_executed", "namespace": namespace,
            "execution_info": {"tool_name": tool, "execution_id": execution_id, "execution_time_ms": ms,
                               "executor_service": "perf-service"},
            "resource_usage": {"cpu_usage": {"peak_percent": cpu}, "memory_usage": {"peak_mb": mb}}}


async def test_performance_anomaly_detection(urls, http, watch):
    """Seed: test_performance_anomaly_detection. Three normal executions, then one at 2500 ms, 85 % CPU and
    450 MB → a performance_anomaly pattern with confidence >= 0.7. The seed checks the pattern only "if"
    one is found; here it must be, and the normal ones must not make one."""
    namespace = _namespace()
    url = f"{urls['HOOK_RECEIVER_URL']}/hooks/tool/execution"
    for i in range(3):
        status, body = await _post(http, url, _execution("performance_test_tool", f"normal_exec_{i}",
                                                         150 + i * 10, 30 + i * 2, 100 + i * 5, namespace))
        assert status == 200 and body["data"]["intelligence_analysis"]["patterns_discovered"] == [], body
    status, anomaly = await _post(http, url, _execution("performance_test_tool", "anomaly_exec_001",
                                                        2500, 85, 450, namespace))
    assert status == 200
    assert anomaly["data"]["intelligence_analysis"]["patterns_discovered"][0]["pattern_type"] == "performance_anomaly"

    async with http.get(f"{urls['HOOK_RECEIVER_URL']}/intelligence/patterns",
                        params={"pattern_type": "performance_anomaly", "namespace": namespace}) as resp:
        patterns = await resp.json()
    assert patterns["data"]["patterns"]
    pattern = patterns["data"]["patterns"][0]
    assert pattern["pattern_type"] == "performance_anomaly"
    assert pattern["confidence_score"] >= 0.7
    assert set(pattern["anomalous_metrics"]) == {"execution_time_ms", "cpu_peak_percent", "memory_peak_mb"}
    assert pattern["affected_services"] == ["perf-service"]
    event = (await watch.wait_for(lambda e: e.event_type == EventType.PATTERN_DISCOVERED
                                  and e.namespace == namespace))[0]
    assert event.payload["pattern_info"]["pattern_type"] == "performance_anomaly"

    # the anomaly stays out of the baseline: the next normal execution is normal again
    status, body = await _post(http, url, _execution("performance_test_tool", "normal_exec_9", 165, 31, 104, namespace))
    assert body["data"]["intelligence_analysis"]["patterns_discovered"] == []


async def test_tool_execution_hook_completes(urls, http, watch, db):
    """Seed: step 3 of test_tool_registration_and_execution_flow. A tool-execution hook with its timeline
    and resource usage → 200, processing_status "completed", a tool.execution.completed event keyed by the
    tool, and its row in hook_events. A retried hook (same hook_id) counts once."""
    namespace = _namespace()
    hook_id = uuid.uuid4()
    hook = {
        "hook_type": "tool_executed", "namespace": namespace, "hook_id": str(hook_id),
        "execution_info": {"tool_name": "integration_test_tool", "tool_version": "1.0.0",
                           "execution_id": "integration_exec_001", "requester_service": "test_client",
                           "executor_service": "integration-test-service"},
        "execution_timeline": {"requested_at": "2024-01-15T10:30:00Z", "started_at": "2024-01-15T10:30:00.5Z",
                               "completed_at": "2024-01-15T10:30:02.5Z", "total_duration_ms": 2000,
                               "execution_time_ms": 1500},
        "execution_result": {"status": "success", "result_type": "test_result", "output_size_bytes": 1024},
        "resource_usage": {"cpu_usage": {"peak_percent": 35.0, "average_percent": 25.0},
                           "memory_usage": {"peak_mb": 128, "average_mb": 96}},
    }
    status, result = await _post(http, f"{urls['HOOK_RECEIVER_URL']}/hooks/tool/execution", hook)
    assert status == 200
    assert result["success"] is True
    assert result["data"]["processing_status"] == "completed"
    event = await watch.wait(uuid.UUID(result["data"]["correlation_id"]), EventType.TOOL_EXECUTED)
    assert event.payload["execution_info"]["tool_name"] == "integration_test_tool"
    row = await db.fetchrow("SELECT subject, measures FROM hook_events WHERE hook_id = $1", hook_id)
    assert row["subject"] == "integration_test_tool"
    measures = json.loads(row["measures"])
    assert measures["execution_time_ms"] == 1500 and measures["cpu_peak_percent"] == 35.0

    status, again = await _post(http, f"{urls['HOOK_RECEIVER_URL']}/hooks/tool/execution", hook)
    assert status == 200 and again["data"]["processing_status"] == "duplicate"
    assert await db.fetchval("SELECT count(*) FROM hook_events WHERE hook_id = $1", hook_id) == 1
