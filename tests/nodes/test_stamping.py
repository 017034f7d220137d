"""Metadata stamping: BLAKE3 stamps stored, queried by hash, kept apart per namespace."""
from __future__ import annotations

import base64
import uuid

from blake3 import blake3

from nodes.envelope import EventType


async def stamp(http, urls, content: str, namespace: str, expect: int = 201) -> dict:
    async with http.post(f"{urls['STAMPING_URL']}/stamp",
                         json={"content": content, "content_type": "text/plain", "namespace": namespace}) as resp:
        assert resp.status == expect, await resp.text()
        return await resp.json()


async def test_stamp_then_query_by_hash(http, urls, watch, db, wait_db):
    content = f"document {uuid.uuid4()}"
    created = await stamp(http, urls, content, "stamp-q")
    assert created["file_hash"] == blake3(content.encode()).hexdigest()
    assert created["created"] is True
    async with http.get(f"{urls['STAMPING_URL']}/stamp/{created['file_hash']}", params={"namespace": "stamp-q"}) as r:
        assert r.status == 200
        found = await r.json()
    assert found["stamp_id"] == created["stamp_id"] and found["size_bytes"] == len(content)
    # stamping the same content again returns the same stamp and publishes nothing new
    again = await stamp(http, urls, content, "stamp-q", expect=200)
    assert again["stamp_id"] == created["stamp_id"] and again["created"] is False
    event = (await watch.wait_for(lambda e: e.event_type == EventType.METADATA_STAMPED
                                  and e.payload["stamp_id"] == created["stamp_id"]))[0]
    assert event.namespace == "stamp-q" and str(event.event_id) == created["event_id"]
    await wait_db("SELECT count(*) FROM event_logs WHERE event_id = $1", event.event_id, expect=lambda v: v == 1)


async def test_hash_endpoint_and_binary_content(http, urls):
    data = bytes(range(256)) * 4096  # 1 MiB
    async with http.post(f"{urls['STAMPING_URL']}/hash",
                         json={"content": base64.b64encode(data).decode(), "encoding": "base64"}) as resp:
        body = await resp.json()
    assert body["file_hash"] == blake3(data).hexdigest() and body["size_bytes"] == len(data)
    assert body["hash_time_ms"] > 0


async def test_four_namespaces_five_stamps_no_leakage(http, urls, db):
    run = uuid.uuid4().hex[:6]
    namespaces = [f"tenant-{run}-{i}" for i in range(4)]
    made: dict[str, list[str]] = {ns: [] for ns in namespaces}
    for ns in namespaces:
        for i in range(5):
            made[ns].append((await stamp(http, urls, f"{ns} doc {i}", ns))["file_hash"])
    for ns in namespaces:
        rows = await db.fetch("SELECT file_hash FROM metadata_stamps WHERE namespace = $1", ns)
        assert sorted(r["file_hash"] for r in rows) == sorted(made[ns])
        for other in namespaces:
            if other == ns:
                continue
            async with http.get(f"{urls['STAMPING_URL']}/stamp/{made[other][0]}", params={"namespace": ns}) as r:
                assert r.status == 404, "a stamp is visible from another namespace"


async def test_bad_stamp_requests(http, urls):
    url = f"{urls['STAMPING_URL']}/stamp"
    cases = [
        ({"namespace": "x"}, 422, "content"),
        ({"content": 5}, 422, "content"),
        ({"content": "x", "encoding": "rot13"}, 422, "encoding"),
        ({"content": "%%%", "encoding": "base64"}, 422, "base64"),
        ({"content": "x", "namespace": ""}, 422, "namespace"),
    ]
    for body, status, words in cases:
        async with http.post(url, json=body) as resp:
            assert resp.status == status, (body, await resp.text())
            assert words in (await resp.json())["error"]
    async with http.post(url, data=b"\xff\xfe", headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 400
    too_big = "x" * (17 * 1024 * 1024)
    async with http.post(url, json={"content": too_big}) as resp:
        assert resp.status == 413
        assert "limit" in (await resp.json())["error"]
    async with http.get(f"{urls['STAMPING_URL']}/stamp/abc") as resp:
        assert resp.status == 400
