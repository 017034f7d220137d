"""The service registry node (seed 004): services and tools over HTTP, rows in PostgreSQL, events on the bus,
and our own nodes registered from their introspections.

The stack is shared by the whole session, so every test uses names with a uuid suffix of its own.
"""
from __future__ import annotations

import asyncio
import functools
import json
import time
import uuid
from datetime import datetime
from typing import Any

import pytest

from nodes.config import GROUP_SERVICE_REGISTRY
from nodes.envelope import EventType, new_envelope


def suffix() -> str:
    return uuid.uuid4().hex[:10]


async def call(http, method: str, url: str, **kwargs) -> tuple[int, dict[str, Any]]:
    async with http.request(method, url, **kwargs) as resp:
        return resp.status, await resp.json()


def service_body(name: str, instance_id: str, port: int = 9000, **extra) -> dict[str, Any]:
    return {"service_name": name, "version": "1.0.0", "instance_id": instance_id, "host": "localhost", "port": port,
            "health_check_url": f"http://localhost:{port}/health", **extra}


def tool_body(name: str, category: str = "testing", **extra) -> dict[str, Any]:
    return {
        "tool_name": name,
        "version": "1.0.0",
        "service_source": "integration-test-service",
        "category": category,
        "description": "Tool for integration testing",
        "input_schema": {"type": "object",
                         "properties": {"test_data": {"type": "string"},
                                        "test_mode": {"type": "string", "enum": ["fast", "thorough"]}},
                         "required": ["test_data"]},
        "output_schema": {"type": "object", "properties": {"result": {"type": "string"},
                                                           "execution_time_ms": {"type": "number"}}},
        "execution_requirements": {"max_execution_time_ms": 30000, "memory_limit_mb": 256},
        **extra,
    }


async def register(http, urls, body: dict, headers: dict | None = None) -> dict[str, Any]:
    status, answer = await call(http, "POST", f"{urls['SERVICE_REGISTRY_URL']}/registry/services", json=body,
                                headers=headers)
    assert status == 200 and answer["success"] is True, answer
    return answer["data"]


async def services(http, urls, **params) -> list[dict[str, Any]]:
    status, answer = await call(http, "GET", f"{urls['SERVICE_REGISTRY_URL']}/registry/services", params=params)
    assert status == 200 and answer["success"] is True, answer
    assert answer["data"]["count"] == len(answer["data"]["services"])
    return answer["data"]["services"]


def at(instance: dict[str, Any]) -> datetime:
    """An instance's last heartbeat as a time (ISO strings do not compare: a whole second has no fraction)."""
    return datetime.fromisoformat(instance["last_heartbeat"])


async def poll(check, timeout: float = 15.0, interval: float = 0.1):
    """`await check()` until it returns something truthy; AssertionError with the last value after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: last value {value!r}")
        await asyncio.sleep(interval)


async def test_service_registration_and_discovery_flow(http, urls):
    """The seed's flow: register → listed with exactly one instance → PUT health and metadata → the filtered
    listing shows it → DELETE → gone.

    Adapted: names carry a suffix (the stack is shared); the seed's sleep(2) "for registration processing" is
    gone, since a registration is stored before it is answered; and the seed stops at DELETE's 200, where this
    also checks the instance is no longer listed nor found.
    """
    base = urls["SERVICE_REGISTRY_URL"]
    name, instance_id = f"test-integration-service-{suffix()}", f"integration-test-001-{suffix()}"
    body = service_body(name, instance_id, capabilities=["integration_test_capability"],
                        metadata={"test_type": "integration", "framework": "pytest"})
    created = await register(http, urls, body)
    assert created["status"] == "registered" and created["created"] is True
    assert created["service_name"] == name and created["instance_id"] == instance_id
    registration_id = created["registration_id"]
    uuid.UUID(registration_id)

    listed = [s for s in await services(http, urls) if s["service_name"] == name]
    assert len(listed) == 1 and len(listed[0]["instances"]) == 1
    instance = listed[0]["instances"][0]
    assert instance["instance_id"] == instance_id and instance["registration_id"] == registration_id
    assert instance["url"] == "http://localhost:9000" and instance["health_status"] == "unknown"
    assert instance["capabilities"] == ["integration_test_capability"] and instance["version"] == "1.0.0"
    assert 0 <= instance["age_s"] < 60

    update = {"health_status": "healthy", "load_factor": 0.45,
              "metadata": {"current_connections": 10, "avg_response_time_ms": 120, "test_update": True}}
    status, updated = await call(http, "PUT", f"{base}/registry/services/{registration_id}", json=update)
    assert status == 200 and updated["success"] is True, updated
    assert updated["data"]["health_status"] == "healthy" and updated["data"]["load_factor"] == 0.45

    found = await services(http, urls, service_name=name)
    assert [s["service_name"] for s in found] == [name]
    instance = found[0]["instances"][0]
    assert instance["health_status"] == "healthy" and instance["metadata"]["test_update"] is True
    assert instance["metadata"]["framework"] == "pytest", "PUT metadata is merged into what was registered"
    assert [s["service_name"] for s in await services(http, urls, service_name=name, health_status="healthy")] == [name]
    assert await services(http, urls, service_name=name, health_status="unhealthy") == []
    assert [s["service_name"] for s in await services(http, urls, capability="integration_test_capability")
            if s["service_name"] == name] == [name]

    status, gone = await call(http, "DELETE", f"{base}/registry/services/{registration_id}")
    assert status == 200 and gone["success"] is True, gone
    assert gone["data"] == {"registration_id": registration_id, "service_name": name, "instance_id": instance_id,
                            "status": "deregistered"}
    assert await services(http, urls, service_name=name) == []
    status, answer = await call(http, "GET", f"{base}/registry/services/{registration_id}")
    assert status == 404 and answer["success"] is False and registration_id in answer["error"]
    status, answer = await call(http, "DELETE", f"{base}/registry/services/{registration_id}")
    assert status == 404 and answer["success"] is False


async def test_tool_registration_and_discovery(http, urls):
    """Steps 1–2 of the seed's test_tool_registration_and_execution_flow: a tool registered is listed with the
    same tool_id and its category. Adapted: the tool name has a suffix, no sleep(1) (stored before answered).
    Added: the category and name filters, GET by id, and a registration again keeps the tool_id.
    """
    base = urls["SERVICE_REGISTRY_URL"]
    name, category = f"integration_test_tool_{suffix()}", f"testing-{suffix()}"
    status, answer = await call(http, "POST", f"{base}/registry/tools", json=tool_body(name, category))
    assert status == 200 and answer["success"] is True, answer
    tool_id = answer["data"]["tool_id"]
    assert answer["data"]["status"] == "registered" and answer["data"]["created"] is True

    status, answer = await call(http, "GET", f"{base}/registry/tools")
    assert status == 200 and answer["success"] is True
    tool = next((t for t in answer["data"]["tools"] if t["tool_name"] == name), None)
    assert tool is not None and tool["tool_id"] == tool_id and tool["category"] == category
    assert tool["input_schema"]["required"] == ["test_data"]
    assert tool["execution_requirements"]["memory_limit_mb"] == 256

    other = f"other_tool_{suffix()}"
    status, _ = await call(http, "POST", f"{base}/registry/tools", json=tool_body(other, f"elsewhere-{suffix()}"))
    assert status == 200
    status, answer = await call(http, "GET", f"{base}/registry/tools", params={"category": category})
    assert status == 200 and [t["tool_name"] for t in answer["data"]["tools"]] == [name]
    assert answer["data"]["count"] == 1
    status, answer = await call(http, "GET", f"{base}/registry/tools", params={"tool_name": other})
    assert [t["tool_name"] for t in answer["data"]["tools"]] == [other]

    status, answer = await call(http, "GET", f"{base}/registry/tools/{tool_id}")
    assert status == 200 and answer["data"]["tool_name"] == name
    again = tool_body(name, category, description="changed")
    status, answer = await call(http, "POST", f"{base}/registry/tools", json=again)
    assert status == 200 and answer["data"]["tool_id"] == tool_id and answer["data"]["created"] is False
    status, answer = await call(http, "GET", f"{base}/registry/tools/{tool_id}")
    assert answer["data"]["description"] == "changed"
    status, answer = await call(http, "GET", f"{base}/registry/tools/{uuid.uuid4()}")
    assert status == 404 and answer["success"] is False
    status, answer = await call(http, "GET", f"{base}/registry/tools/not-a-uuid")
    assert status == 400 and answer["success"] is False


GOOD_SERVICE = service_body("svc", "inst")
GOOD_TOOL = tool_body("tool")


def without(body: dict, name: str) -> bytes:
    return json.dumps({k: v for k, v in body.items() if k != name}).encode()


def with_(body: dict, **changes) -> bytes:
    return json.dumps({**body, **changes}).encode()


NESTED_100 = functools.reduce(lambda v, _: {"a": v}, range(100), 1)
BAD_BODIES = [  # (route, what, body, status, what the error must name)
    ("services", "not-json", b"{not json", 400, "JSON"),
    ("services", "a-list", b"[1, 2]", 400, "object"),
    ("services", "integer-of-5000-digits", b'{"port": ' + b"9" * 5000 + b"}", 400, "JSON"),
    ("services", "over-the-size-limit", b"[" + b" " * (1024 * 1024) + b"]", 413, "too large"),
    ("services", "nested-too-deeply-for-json", b"[" * 100_000 + b"]" * 100_000, 400, "JSON"),
    ("services", "missing-host", without(GOOD_SERVICE, "host"), 422, "'host'"),
    ("services", "port-a-string", with_(GOOD_SERVICE, port="9000"), 422, "'port'"),
    ("services", "port-out-of-range", with_(GOOD_SERVICE, port=70000), 422, "'port'"),
    ("services", "port-a-boolean", with_(GOOD_SERVICE, port=True), 422, "'port'"),
    ("services", "empty-name", with_(GOOD_SERVICE, service_name=""), 422, "'service_name'"),
    ("services", "long-name", with_(GOOD_SERVICE, service_name="x" * 300), 422, "'service_name'"),
    ("services", "capabilities-a-string", with_(GOOD_SERVICE, capabilities="tool"), 422, "'capabilities'"),
    ("services", "capability-a-number", with_(GOOD_SERVICE, capabilities=["ok", 3]), 422, "'capabilities[1]'"),
    ("services", "metadata-a-list", with_(GOOD_SERVICE, metadata=[1]), 422, "'metadata'"),
    ("services", "metadata-nul", with_(GOOD_SERVICE, metadata={"a": "nul\u0000"}), 422, "'metadata.a'"),
    ("services", "metadata-lone-surrogate", with_(GOOD_SERVICE, metadata={"a": "\ud800"}), 422, "'metadata.a'"),
    ("services", "metadata-nan", with_(GOOD_SERVICE, metadata={"x": float("nan")}), 422, "'metadata.x'"),
    ("services", "metadata-nested-100", with_(GOOD_SERVICE, metadata=NESTED_100), 422, "'metadata'"),
    ("services", "unknown-health", with_(GOOD_SERVICE, health_status="great"), 422, "'health_status'"),
    ("tools", "empty", b"", 400, "JSON"),
    ("tools", "a-string", b'"a string"', 400, "object"),
    ("tools", "missing-input-schema", without(GOOD_TOOL, "input_schema"), 422, "'input_schema'"),
    ("tools", "output-schema-a-string", with_(GOOD_TOOL, output_schema="object"), 422, "'output_schema'"),
    ("tools", "category-a-number", with_(GOOD_TOOL, category=5), 422, "'category'"),
    ("update", "not-json", b"nope", 400, "JSON"),
    ("update", "a-list", b"[]", 400, "object"),
    ("update", "nothing-to-update", b"{}", 422, "at least one"),
    ("update", "unknown-health", b'{"health_status": "great"}', 422, "'health_status'"),
    ("update", "load-a-string", b'{"load_factor": "high"}', 422, "'load_factor'"),
    ("update", "load-negative", b'{"load_factor": -1}', 422, "'load_factor'"),
    ("update", "load-too-large", b'{"load_factor": 1' + b"0" * 400 + b"}", 422, "'load_factor'"),
    ("update", "metadata-a-string", b'{"metadata": "x"}', 422, "'metadata'"),
]


@pytest.mark.parametrize(("route", "raw", "status", "names"),
                         [pytest.param(route, raw, status, names, id=f"{route}-{what}")
                          for route, what, raw, status, names in BAD_BODIES])
async def test_bad_bodies_are_refused_and_the_next_request_works(http, urls, route, raw, status, names):
    """Not JSON or not an object: 400; a field missing or wrong: 422 naming it. Nothing is stored, and the next
    good request is answered as usual."""
    base = urls["SERVICE_REGISTRY_URL"]
    headers = {"Content-Type": "application/json"}
    if route == "update":
        target = await register(http, urls, service_body(f"bad-update-{suffix()}", f"inst-{suffix()}"))
        url = f"{base}/registry/services/{target['registration_id']}"
        method = "PUT"
    else:
        url, method = f"{base}/registry/{route}", "POST"
    got, answer = await call(http, method, url, data=raw, headers=headers)
    assert got == status and answer["success"] is False, answer
    assert names in answer["error"], answer

    if route == "tools":
        good = tool_body(f"after_bad_{suffix()}")
        got, answer = await call(http, "POST", url, json=good)
        assert got == 200 and answer["data"]["tool_name"] == good["tool_name"], answer
    elif route == "update":
        got, answer = await call(http, "PUT", url, json={"health_status": "degraded"})
        assert got == 200 and answer["data"]["health_status"] == "degraded", answer
    else:
        good = service_body(f"after-bad-{suffix()}", f"inst-{suffix()}")
        assert (await register(http, urls, good))["created"] is True


async def test_ids_that_are_unknown_or_not_uuids(http, urls):
    base = urls["SERVICE_REGISTRY_URL"]
    unknown = uuid.uuid4()
    for method, kwargs in (("GET", {}), ("PUT", {"json": {"health_status": "healthy"}}), ("DELETE", {})):
        status, answer = await call(http, method, f"{base}/registry/services/{unknown}", **kwargs)
        assert status == 404 and answer["success"] is False and str(unknown) in answer["error"], (method, answer)
        status, answer = await call(http, method, f"{base}/registry/services/integration-test-001", **kwargs)
        assert status == 400 and "UUID" in answer["error"], (method, answer)
    status, answer = await call(http, "POST", f"{base}/registry/services", json=service_body("s", f"i-{suffix()}"),
                                headers={"X-Correlation-ID": "not-a-uuid"})
    assert status == 400 and "X-Correlation-ID" in answer["error"]
    status, answer = await call(http, "GET", f"{base}/registry/services", params={"health_status": "great"})
    assert status == 422 and "health_status" in answer["error"]


async def test_several_instances_of_one_service_and_registering_again(http, urls):
    """Three instances of one name are listed under it; registering an instance_id again updates that
    instance in place (same registration_id, new address), it does not add a fourth."""
    name = f"multi-{suffix()}"
    ids = [f"{name}-{i}" for i in range(3)]
    made = [await register(http, urls, service_body(name, instance_id, port=9100 + i))
            for i, instance_id in enumerate(ids)]
    assert len({m["registration_id"] for m in made}) == 3

    [listed] = await services(http, urls, service_name=name)
    assert [i["instance_id"] for i in listed["instances"]] == ids
    assert [i["url"] for i in listed["instances"]] == [f"http://localhost:{9100 + i}" for i in range(3)]

    again = await register(http, urls, service_body(name, ids[1], port=9200, version="1.1.0"))
    assert again["registration_id"] == made[1]["registration_id"] and again["created"] is False
    [listed] = await services(http, urls, service_name=name)
    assert len(listed["instances"]) == 3
    second = next(i for i in listed["instances"] if i["instance_id"] == ids[1])
    assert second["port"] == 9200 and second["version"] == "1.1.0"


async def test_rows_are_in_postgresql(http, urls, db):
    name = f"rows-{suffix()}"
    made = await register(http, urls, service_body(name, f"{name}-a", capabilities=["rows_cap"], metadata={"k": 1}))
    row = await db.fetchrow("SELECT * FROM service_registrations WHERE registration_id = $1",
                            uuid.UUID(made["registration_id"]))
    assert row["service_name"] == name and row["instance_id"] == f"{name}-a" and row["port"] == 9000
    assert json.loads(row["capabilities"]) == ["rows_cap"] and json.loads(row["metadata"]) == {"k": 1}
    # the capability filter's operator, on the stored row, as the node uses it
    assert await db.fetchval("SELECT count(*) FROM service_registrations WHERE capabilities ? 'rows_cap'"
                             " AND service_name = $1", name) == 1

    status, _ = await call(http, "PUT", f"{urls['SERVICE_REGISTRY_URL']}/registry/services/{made['registration_id']}",
                           json={"load_factor": 2, "metadata": {"j": 2}})
    assert status == 200
    row = await db.fetchrow("SELECT * FROM service_registrations WHERE registration_id = $1",
                            uuid.UUID(made["registration_id"]))
    assert row["load_factor"] == 2.0 and json.loads(row["metadata"]) == {"k": 1, "j": 2}

    tool = tool_body(f"rows_tool_{suffix()}")
    status, answer = await call(http, "POST", f"{urls['SERVICE_REGISTRY_URL']}/registry/tools", json=tool)
    row = await db.fetchrow("SELECT * FROM tool_registrations WHERE tool_id = $1", uuid.UUID(answer["data"]["tool_id"]))
    assert row["tool_name"] == tool["tool_name"] and row["version"] == "1.0.0" and row["category"] == "testing"
    assert json.loads(row["input_schema"]) == tool["input_schema"]

    status, _ = await call(http, "DELETE",
                           f"{urls['SERVICE_REGISTRY_URL']}/registry/services/{made['registration_id']}")
    assert status == 200
    assert await db.fetchval("SELECT count(*) FROM service_registrations WHERE service_name = $1", name) == 0


async def test_every_change_is_an_event_with_the_request_correlation_id(http, urls, watch, topics):
    """REGISTERED, UPDATED (registered again, and a PUT), DEREGISTERED on the service registry topic, keyed by
    service name; TOOL_REGISTERED on the tool registration topic; each with its request's X-Correlation-ID."""
    base = urls["SERVICE_REGISTRY_URL"]
    name = f"events-{suffix()}"
    cid = [uuid.uuid4() for _ in range(5)]
    made = await register(http, urls, service_body(name, f"{name}-1"), headers={"X-Correlation-ID": str(cid[0])})
    assert made["correlation_id"] == str(cid[0])
    await register(http, urls, service_body(name, f"{name}-1", port=9001), headers={"X-Correlation-ID": str(cid[1])})
    url = f"{base}/registry/services/{made['registration_id']}"
    status, _ = await call(http, "PUT", url, json={"health_status": "degraded"},
                           headers={"X-Correlation-ID": str(cid[2])})
    assert status == 200
    status, _ = await call(http, "DELETE", url, headers={"X-Correlation-ID": str(cid[3])})
    assert status == 200
    tool = tool_body(f"events_tool_{suffix()}")
    status, answer = await call(http, "POST", f"{base}/registry/tools", json=tool,
                                headers={"X-Correlation-ID": str(cid[4])})
    assert status == 200

    services_topic = topics.service_registry
    expected = [(EventType.SERVICE_REGISTERED, services_topic), (EventType.SERVICE_UPDATED, services_topic),
                (EventType.SERVICE_UPDATED, services_topic), (EventType.SERVICE_DEREGISTERED, services_topic),
                (EventType.TOOL_REGISTERED, topics.tool_registration)]
    for correlation, (event_type, topic) in zip(cid, expected):
        env = await watch.wait(correlation, event_type, timeout=15)
        assert [t for t, e in watch.seen if e.event_id == env.event_id] == [topic]
        if topic == topics.service_registry:
            assert env.payload["service_name"] == name and env.payload["registration_id"] == made["registration_id"]
    registered = await watch.wait(cid[0], EventType.SERVICE_REGISTERED)
    assert str(registered.event_id) == made["event_id"] and registered.payload["port"] == 9000
    assert (await watch.wait(cid[1], EventType.SERVICE_UPDATED)).payload["port"] == 9001
    assert (await watch.wait(cid[2], EventType.SERVICE_UPDATED)).payload["health_status"] == "degraded"
    tool_event = await watch.wait(cid[4], EventType.TOOL_REGISTERED)
    assert tool_event.payload["tool_id"] == answer["data"]["tool_id"]
    assert tool_event.payload["input_schema"] == tool["input_schema"]
    # no correlation id given: a new one, told in the answer, on the event
    made = await register(http, urls, service_body(name, f"{name}-2"))
    fresh = await watch.wait(uuid.UUID(made["correlation_id"]), EventType.SERVICE_REGISTERED)
    assert str(fresh.event_id) == made["event_id"]


async def test_stack_nodes_are_services_found_by_name(http, urls):
    """Every node introspects on start; the registry registers it as a service of its node type at its api
    address, healthy, and its heartbeats keep last_heartbeat moving (the test stack beats every second)."""

    async def one(service_name: str):
        found = await services(http, urls, service_name=service_name)
        return found[0]["instances"] if found else None

    for kind, variable in (("stamping", "STAMPING_URL"), ("service-registry", "SERVICE_REGISTRY_URL"),
                           ("reducer", "REDUCER_URL")):
        instances = await poll(lambda: one(kind))
        [instance] = instances
        assert instance["url"] == urls[variable] and instance["health_status"] == "healthy"
        assert instance["metadata"]["node"] is True and instance["health_check_url"] == f"{urls[variable]}/health"
        assert instance["instance_id"].startswith(kind)
        # its capabilities are the tools its introspection named (the node registry keeps what it announced)
        async def announced(node_id: str = instance["instance_id"]):
            async with http.get(f"{urls['REGISTRY_URL']}/nodes/{node_id}") as resp:
                return (await resp.json())["capabilities"] if resp.status == 200 else None

        assert instance["capabilities"] == (await poll(announced)).get("tools", [])

    [first] = await one("stamping")

    async def beat_moved():
        [now] = await one("stamping")
        return at(now) > at(first) and now

    moved = await poll(beat_moved, timeout=10)
    assert moved["registration_id"] == first["registration_id"] and moved["age_s"] < 5


async def test_introspection_registers_tools_as_capabilities_and_publishes_only_changes(http, urls, producer, topics,
                                                                                      watch):
    """An introspection's `capabilities.tools` become the instance's capabilities (found with `capability=`);
    its other capabilities are not tools. A new node is SERVICE_REGISTERED with the introspection's correlation
    id; the same introspection again publishes nothing, a changed one SERVICE_UPDATED; a heartbeat moves
    last_heartbeat. (Events of one node are on one partition and applied in order: once the changed one's
    event is out, the identical one before it was applied without one.)"""
    node_id, node_type, tool = f"sim-{suffix()}", f"simulated-tools-{suffix()}", f"sim_tool_{suffix()}"

    def introspection(version: str):
        payload = {"node_id": node_id, "node_type": node_type, "version": version,
                   "capabilities": {"tools": [tool], "hash": {"algo": "blake3"}},
                   "endpoints": {"api": "http://127.0.0.1:4711", "health": "http://127.0.0.1:4711/health"}}
        return new_envelope(EventType.NODE_INTROSPECTION, payload, source_node_id=node_id)  # the nodes' namespace

    async def send(topic: str, env) -> None:
        await producer.send_and_wait(topic, env.to_bytes(), key=node_id.encode())

    first = introspection("2.0.0")
    await send(topics.introspection, first)
    registered = await watch.wait(first.correlation_id, EventType.SERVICE_REGISTERED, timeout=15)
    assert registered.causation_id == first.event_id and registered.payload["instance_id"] == node_id

    found = await services(http, urls, capability=tool)
    assert [s["service_name"] for s in found] == [node_type]
    [instance] = found[0]["instances"]
    assert instance["instance_id"] == node_id and instance["host"] == "127.0.0.1" and instance["port"] == 4711
    assert instance["capabilities"] == [tool] and instance["version"] == "2.0.0"
    assert instance["metadata"] == {"node": True} and instance["health_status"] == "healthy"
    assert all(s["service_name"] != node_type for s in await services(http, urls, capability="hash"))

    beat = new_envelope(EventType.NODE_HEARTBEAT, {"node_id": node_id, "node_type": node_type, "uptime_s": 1.0},
                        source_node_id=node_id)
    await send(topics.heartbeat, beat)

    async def beaten():
        [s] = await services(http, urls, service_name=node_type)
        return at(s["instances"][0]) > at(instance)

    await poll(beaten)

    same, changed = introspection("2.0.0"), introspection("2.1.0")
    await send(topics.introspection, same)
    await send(topics.introspection, changed)
    updated = await watch.wait(changed.correlation_id, EventType.SERVICE_UPDATED, timeout=15)
    assert updated.payload["version"] == "2.1.0" and updated.payload["registration_id"] == instance["registration_id"]
    assert [e for _, e in watch.seen if e.correlation_id == same.correlation_id
            and e.event_type in (EventType.SERVICE_REGISTERED, EventType.SERVICE_UPDATED)] == []


async def test_introspections_it_cannot_use_are_skipped_not_dead_lettered(http, urls, producer, topics, watch, db):
    """A node type that is not text, no api address, one that is not a URL, a port out of range: the node
    registry takes those (it stores what was announced), this registry cannot make an instance of them. They
    are counted and skipped, the consumer neither fails on them nor dead-letters them, and a good one behind
    them on the same partition is registered. (No NUL characters here: the database adapter would
    dead-letter those, which is test_fuzz's business.)"""
    node_id = f"odd-{suffix()}"
    good_type = f"after-odd-{suffix()}"
    api = {"api": "http://127.0.0.1:4712"}
    payloads = [
        {"node_id": node_id, "node_type": 42, "endpoints": api},
        {"node_id": node_id, "node_type": "t"},
        {"node_id": node_id, "node_type": "t", "endpoints": {"api": "not a url"}},
        {"node_id": node_id, "node_type": "t", "endpoints": {"api": "http://127.0.0.1:99999"}},
    ]

    async def stats() -> dict:
        async with http.get(f"{urls['SERVICE_REGISTRY_URL']}/stats") as resp:
            return await resp.json()

    failed = "SELECT count(*) FROM dead_letters WHERE consumer = $1 AND class <> 'invalid'"
    before_failed = await db.fetchval(failed, GROUP_SERVICE_REGISTRY)
    before = await stats()
    for payload in payloads:
        env = new_envelope(EventType.NODE_INTROSPECTION, payload, source_node_id=node_id)
        await producer.send_and_wait(topics.introspection, env.to_bytes(), key=node_id.encode())
    good = new_envelope(EventType.NODE_INTROSPECTION, {"node_id": node_id, "node_type": good_type, "endpoints": api,
                                                       "capabilities": {"tools": "not a list"}},
                        source_node_id=node_id)
    await producer.send_and_wait(topics.introspection, good.to_bytes(), key=node_id.encode())
    registered = await watch.wait(good.correlation_id, EventType.SERVICE_REGISTERED, timeout=15)
    assert registered.payload["service_name"] == good_type and registered.payload["capabilities"] == []
    assert registered.payload["version"] == "unknown" and registered.payload["port"] == 4712
    after = await stats()
    assert after["introspections_skipped"] - before["introspections_skipped"] >= len(payloads)
    assert await db.fetchval(failed, GROUP_SERVICE_REGISTRY) == before_failed


async def test_stats_count_what_was_done(http, urls):
    base = urls["SERVICE_REGISTRY_URL"]

    async def stats() -> dict:
        async with http.get(f"{base}/stats") as resp:
            assert resp.status == 200
            return await resp.json()

    before = await stats()
    name = f"stats-{suffix()}"
    made = await register(http, urls, service_body(name, f"{name}-1"))
    await register(http, urls, service_body(name, f"{name}-1"))
    await services(http, urls, service_name=name)
    await call(http, "DELETE", f"{base}/registry/services/{made['registration_id']}")
    await call(http, "POST", f"{base}/registry/tools", json=tool_body(f"stats_tool_{suffix()}"))
    after = await stats()
    assert after["node_type"] == "service-registry"
    for key, at_least in (("registrations", 1), ("updates", 1), ("deregistrations", 1), ("tools_registered", 1),
                          ("queries", 1)):
        assert after[key] - before[key] >= at_least, key
    assert after["introspections"] > 0 and after["heartbeats"] > 0


async def test_another_namespaces_nodes_are_never_registered(http, urls, producer, topics, watch):
    """A node of another tenant (a load test's simulated "stamping" with an api address) is passed over: were it
    registered, the orchestrator's discovery by name could route workflows to it."""
    node_id = f"other-tenant-{suffix()}"
    payload = {"node_id": node_id, "node_type": "stamping", "version": "9.9.9", "capabilities": {"tools": ["x"]},
               "endpoints": {"api": "http://127.0.0.1:4712"}}
    foreign = new_envelope(EventType.NODE_INTROSPECTION, payload, source_node_id=node_id, namespace=f"tenant-{suffix()}")
    mine = new_envelope(EventType.NODE_INTROSPECTION, {**payload, "node_id": f"{node_id}-mine",
                                                       "node_type": f"own-{suffix()}"}, source_node_id=node_id)
    await producer.send_and_wait(topics.introspection, foreign.to_bytes(), key=node_id.encode())
    await producer.send_and_wait(topics.introspection, mine.to_bytes(), key=node_id.encode())
    await watch.wait(mine.correlation_id, EventType.SERVICE_REGISTERED, timeout=15)  # same partition: read after it
    stamping = await services(http, urls, service_name="stamping")
    assert all(i["instance_id"] != node_id for s in stamping for i in s["instances"])
    assert [e for _, e in watch.seen if e.correlation_id == foreign.correlation_id
            and e.event_type in (EventType.SERVICE_REGISTERED, EventType.SERVICE_UPDATED)] == []
