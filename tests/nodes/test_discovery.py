"""The orchestrator finds stamping and intelligence through the service registry, and keeps going without it.

Seed 000: the orchestrator discovers its downstream services (< 10 ms); seed 004:
the intelligence answer is used, not thrown away. Against the real stack: the
registry learns the nodes from their introspections, the orchestrator asks it
(cached for DISCOVERY_TTL_SECONDS), and with the registry killed it routes on
what it discovered last and says so in /stats.
"""
from __future__ import annotations

import asyncio
import time
import uuid

import orjson

from chaos.targets.process import ProcessTarget
from nodes.config import Settings


async def _workflow(http, urls, content: str, use_intelligence: bool = True, timeout: float = 20.0) -> dict:
    async with http.post(f"{urls['ORCHESTRATOR_URL']}/workflows",
                         json={"content": content, "use_intelligence": use_intelligence,
                               "namespace": f"disc-{uuid.uuid4().hex[:6]}"}) as resp:
        assert resp.status == 202, await resp.text()
        workflow_id = (await resp.json())["workflow_id"]
    deadline = time.monotonic() + timeout
    while True:
        async with http.get(f"{urls['ORCHESTRATOR_URL']}/workflows/{workflow_id}") as resp:
            row = await resp.json()
        if row["state"] in ("completed", "failed"):
            return row
        assert time.monotonic() < deadline, f"workflow {workflow_id} still {row['state']} after {timeout}s"
        await asyncio.sleep(0.05)


async def _discovery(http, urls) -> dict:
    async with http.get(f"{urls['ORCHESTRATOR_URL']}/stats") as resp:
        return (await resp.json())["discovery"]


async def test_the_intelligence_answer_is_stored_with_the_workflow(http, urls):
    content = orjson.dumps({"report": "quarterly", "rows": list(range(20))}).decode()
    row = await _workflow(http, urls, content)
    assert row["state"] == "completed" and row["intelligence"] == "used", row
    analysis = row["analysis"]
    assert analysis["classification"] == "json" and analysis["confidence"] == 1.0
    assert analysis["profile"]["size_bytes"] == len(content.encode())
    assert 0 < analysis["profile"]["entropy_bits_per_byte"] < 8
    assert isinstance(analysis["patterns"], list)

    text = await _workflow(http, urls, "plain words, nothing else\n" * 10)
    assert text["analysis"]["classification"] == "text"
    skipped = await _workflow(http, urls, "no intelligence asked", use_intelligence=False)
    assert skipped["intelligence"] == "skipped" and skipped["analysis"] is None


async def test_the_orchestrator_discovers_stamping_and_intelligence_through_the_registry(http, urls):
    async with http.get(f"{urls['SERVICE_REGISTRY_URL']}/registry/services",
                        params={"service_name": "stamping"}) as resp:
        instances = (await resp.json())["data"]["services"][0]["instances"]
    assert [i["url"] for i in instances] == [urls["STAMPING_URL"]]

    row = await _workflow(http, urls, "discovered " + uuid.uuid4().hex)
    assert row["state"] == "completed"
    discovery = await _discovery(http, urls)
    assert discovery["sources"].get("registry", 0) + discovery["sources"].get("cache", 0) >= 2
    assert set(discovery["cache"]) >= {"service_name=stamping", "service_name=intelligence"}
    assert discovery["degraded"] == []
    assert discovery["lookup_ms"]["p95"] is not None


async def test_with_the_registry_down_workflows_route_on_what_was_discovered_last(http, urls, stack_state_path):
    await _workflow(http, urls, "before the registry dies " + uuid.uuid4().hex)
    registry = ProcessTarget("service-registry", stack_state_path)
    registry.kill()
    try:
        await asyncio.sleep(Settings.from_env("orchestrator").discovery_ttl_s + 0.5)  # every cached answer aged out
        rows = [await _workflow(http, urls, f"registry down {i} " + uuid.uuid4().hex) for i in range(3)]
        assert all(r["state"] == "completed" and r["intelligence"] == "used" for r in rows), rows
        discovery = await _discovery(http, urls)
        assert discovery["sources"].get("stale", 0) >= 1
        assert "service_name=stamping" in discovery["degraded"]
        assert discovery["registry_errors"] >= 1
    finally:
        registry.start()
    deadline = time.monotonic() + 30
    while True:  # the registry answers again, and the orchestrator goes back to it
        await asyncio.sleep(1.0)
        await _workflow(http, urls, "registry back " + uuid.uuid4().hex)
        if (await _discovery(http, urls))["degraded"] == []:
            break
        assert time.monotonic() < deadline, "the orchestrator never went back to the registry"
