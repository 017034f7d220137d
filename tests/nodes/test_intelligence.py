"""Cross-service coordination: intelligence on, off and failing, with the orchestrator's circuit breaker."""
from __future__ import annotations

import asyncio
import time
import uuid


async def run_workflow(http, urls, use_intelligence: bool, timeout: float = 10.0) -> dict:
    async with http.post(f"{urls['ORCHESTRATOR_URL']}/workflows",
                         json={"content": f"c {uuid.uuid4()}", "namespace": "intel",
                               "use_intelligence": use_intelligence}) as resp:
        assert resp.status == 202
        wid = (await resp.json())["workflow_id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with http.get(f"{urls['ORCHESTRATOR_URL']}/workflows/{wid}") as resp:
            body = await resp.json()
        if body["state"] in ("completed", "failed"):
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"workflow {wid} did not finish: {body}")


async def configure_intelligence(http, urls, **config) -> None:
    async with http.post(f"{urls['INTELLIGENCE_URL']}/admin/config", json=config) as resp:
        assert resp.status == 200, await resp.text()


async def breaker(http, urls) -> dict:
    async with http.get(f"{urls['ORCHESTRATOR_URL']}/stats") as resp:
        return (await resp.json())["breakers"]["intelligence"]


async def test_with_and_without_intelligence(http, urls):
    await configure_intelligence(http, urls, latency_ms=5, failure_rate=0)
    without = await run_workflow(http, urls, use_intelligence=False)
    with_ = await run_workflow(http, urls, use_intelligence=True)
    assert (without["state"], without["intelligence"], without["sequence"]) == ("completed", "skipped", 3)
    # the enriched path has one more step: processing, stamped, enriched, completed
    assert (with_["state"], with_["intelligence"], with_["sequence"]) == ("completed", "used", 4)


async def test_breaker_opens_after_five_failures_fails_fast_falls_back_and_recovers(http, urls):
    await configure_intelligence(http, urls, latency_ms=0, failure_rate=1.0)
    opened_before = (await breaker(http, urls))["opened_count"]
    try:
        for i in range(5):
            result = await run_workflow(http, urls, use_intelligence=True)
            assert (result["state"], result["intelligence"]) == ("completed", "fallback")
            state = await breaker(http, urls)
            assert state["state"] == ("open" if i == 4 else "closed"), (i, state)
        assert state["opened_count"] == opened_before + 1

        # open: no call reaches intelligence; the workflow completes unenriched at once
        async with http.get(f"{urls['INTELLIGENCE_URL']}/stats") as resp:
            failed_calls = (await resp.json())["failed"]
        rejected_before = state["rejected_count"]
        started = time.monotonic()
        result = await run_workflow(http, urls, use_intelligence=True)
        assert (result["state"], result["intelligence"]) == ("completed", "fallback")
        assert time.monotonic() - started < state["reset_timeout_s"], "fail-fast took longer than the cool-down"
        async with http.get(f"{urls['INTELLIGENCE_URL']}/stats") as resp:
            assert (await resp.json())["failed"] == failed_calls, "a call went through an open breaker"
        assert (await breaker(http, urls))["rejected_count"] == rejected_before + 1
    finally:
        await configure_intelligence(http, urls, failure_rate=0.0, latency_ms=5)

    # after the cool-down, a probe goes through, succeeds and closes the breaker
    await asyncio.sleep((await breaker(http, urls))["reset_timeout_s"] + 0.2)
    result = await run_workflow(http, urls, use_intelligence=True)
    assert (result["state"], result["intelligence"]) == ("completed", "used")
    assert (await breaker(http, urls))["state"] == "closed"


async def test_slow_intelligence_times_out_into_fallback(http, urls):
    await configure_intelligence(http, urls, latency_ms=2000, failure_rate=0.0)
    try:
        started = time.monotonic()
        result = await run_workflow(http, urls, use_intelligence=True)
        assert (result["state"], result["intelligence"]) == ("completed", "fallback")
        assert time.monotonic() - started < 1.9, "the orchestrator waited for the slow service"
    finally:
        await configure_intelligence(http, urls, latency_ms=5)
    async with http.post(f"{urls['INTELLIGENCE_URL']}/admin/config", json={"failure_rate": 3}) as resp:
        assert resp.status == 422
