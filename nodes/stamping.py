"""Stamping node: hashes content with BLAKE3, stores a stamp per (namespace, hash), publishes METADATA_STAMPED.

POST /stamp    {"content": str, "content_type": str, "namespace": str, "encoding": "utf-8"|"base64"}
               → 201 with the new stamp, or 200 with the existing one for the same namespace and hash
POST /hash     {"content": str, "encoding": ...} → {"file_hash", "hash_time_ms", "size_bytes"}
GET  /stamp/{hash}?namespace=ns → the stamp, or 404 (a stamp is only visible in its own namespace)
POST /tools/blake3_hash {"input_data": {"content", "encoding"?}} → {"output": {"file_hash", "size_bytes"}}
               (the hash as a tool, for the tool-capture proxy; nothing stored)
"""
from __future__ import annotations

import base64
import binascii
import os
import time
import uuid
from typing import Any

from aiohttp import web
from blake3 import blake3

from nodes.envelope import EventType, new_envelope
from nodes.service import Node, json_error, read_json_object

MAX_CONTENT_BYTES = int(os.environ.get("STAMP_MAX_BYTES", str(8 * 1024 * 1024)))


def hash_content(data: bytes) -> tuple[str, float]:
    """BLAKE3 hex digest and how long it took in milliseconds."""
    start = time.perf_counter()
    digest = blake3(data, max_threads=blake3.AUTO if len(data) > 1 << 20 else 1).hexdigest()
    return digest, (time.perf_counter() - start) * 1000


def _content_bytes(body: dict) -> bytes | web.Response:
    """The decoded content of a request body, or the 413/422 response that says what is wrong."""
    data = _decode_content(body)
    if isinstance(data, bytes) and len(data) > MAX_CONTENT_BYTES:
        return json_error(413, f"content is {len(data)} bytes, the limit is {MAX_CONTENT_BYTES}")
    return data


def _decode_content(body: dict) -> bytes | web.Response:
    content = body.get("content")
    if not isinstance(content, str):
        return json_error(422, "field 'content' is required and must be a string")
    encoding = body.get("encoding", "utf-8")
    if encoding == "utf-8":
        return content.encode("utf-8")
    if encoding == "base64":
        try:
            return base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError) as exc:
            return json_error(422, f"field 'content' is not valid base64: {exc}")
    return json_error(422, f"field 'encoding' must be 'utf-8' or 'base64', not {encoding!r}")


def _stamp_json(row: Any) -> dict:
    return {
        "stamp_id": str(row["stamp_id"]),
        "namespace": row["namespace"],
        "file_hash": row["file_hash"],
        "content_type": row["content_type"],
        "size_bytes": row["size_bytes"],
        "hash_time_ms": row["hash_time_ms"],
        "metadata": row["metadata"],
        "created_at": row["created_at"].isoformat(),
    }


class StampingNode(Node):
    kind = "stamping"
    max_body_bytes = MAX_CONTENT_BYTES * 2  # base64 and JSON overhead; content itself is checked below

    def setup_routes(self, app: web.Application) -> None:
        app.router.add_post("/stamp", self.handle_stamp)
        app.router.add_post("/hash", self.handle_hash)
        app.router.add_get("/stamp/{file_hash}", self.handle_get_stamp)
        app.router.add_post("/tools/blake3_hash", self.handle_tool_hash)

    def capabilities(self) -> dict:
        return {"hash": "blake3", "max_content_bytes": MAX_CONTENT_BYTES, "routes": ["/stamp", "/hash"],
                "tools": ["blake3_hash"]}

    async def handle_tool_hash(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        input_data = body.get("input_data")
        if not isinstance(input_data, dict):
            return json_error(422, "field 'input_data' is required and must be an object")
        data = _content_bytes(input_data)
        if isinstance(data, web.Response):
            return data
        digest, _ = hash_content(data)
        return web.json_response({"output": {"file_hash": digest, "size_bytes": len(data)}})

    async def handle_hash(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        data = _content_bytes(body)
        if isinstance(data, web.Response):
            return data
        digest, took_ms = hash_content(data)
        return web.json_response({"file_hash": digest, "hash_time_ms": took_ms, "size_bytes": len(data)})

    async def handle_stamp(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        data = _content_bytes(body)
        if isinstance(data, web.Response):
            return data
        namespace = body.get("namespace", "default")
        content_type = body.get("content_type", "application/octet-stream")
        metadata = body.get("metadata", {})
        for field, value, kind in (
            ("namespace", namespace, str),
            ("content_type", content_type, str),
            ("metadata", metadata, dict),
        ):
            if not isinstance(value, kind) or (kind is str and not value):
                return json_error(422, f"field '{field}' must be a non-empty {kind.__name__}")
        digest, took_ms = hash_content(data)
        correlation_id = request.headers.get("X-Correlation-ID")
        try:
            correlation_id = str(uuid.UUID(correlation_id)) if correlation_id else None
        except ValueError:
            return json_error(400, "header X-Correlation-ID must be a UUID")
        assert self.pool is not None and self.outbox is not None
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                row = await conn.fetchrow(
                    "INSERT INTO metadata_stamps (stamp_id, namespace, file_hash, content_type, size_bytes,"
                    " hash_time_ms, metadata) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                    " ON CONFLICT (namespace, file_hash) DO NOTHING RETURNING *",
                    uuid.uuid4(),
                    namespace,
                    digest,
                    content_type,
                    len(data),
                    took_ms,
                    metadata,
                )
                if row is None:  # stamped before: the same stamp, nothing published again
                    row = await conn.fetchrow(
                        "SELECT * FROM metadata_stamps WHERE namespace = $1 AND file_hash = $2", namespace, digest
                    )
                    return web.json_response({**_stamp_json(row), "created": False}, status=200)
                stamp = _stamp_json(row)
                env = new_envelope(
                    EventType.METADATA_STAMPED,
                    stamp,
                    source_node_id=self.settings.node_id,
                    namespace=namespace,
                    correlation_id=correlation_id,
                )
                await self.outbox.add(conn, self.settings.topics.stamped, digest, env)
        self.outbox.wake()
        return web.json_response(
            {**stamp, "created": True, "event_id": str(env.event_id), "correlation_id": str(env.correlation_id)},
            status=201,
        )

    async def handle_get_stamp(self, request: web.Request) -> web.Response:
        file_hash = request.match_info["file_hash"].lower()
        if len(file_hash) != 64 or any(c not in "0123456789abcdef" for c in file_hash):
            return json_error(400, "the hash must be 64 hexadecimal characters (BLAKE3-256)")
        namespace = request.query.get("namespace", "default")
        assert self.pool is not None
        row = await self.pool.fetchrow(
            "SELECT * FROM metadata_stamps WHERE namespace = $1 AND file_hash = $2", namespace, file_hash
        )
        if row is None:
            return json_error(404, f"no stamp for {file_hash} in namespace {namespace!r}")
        return web.json_response(_stamp_json(row))
