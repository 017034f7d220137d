"""Intelligence node: the downstream "OnexTree" analysis the orchestrator asks about each enriched workflow.

POST /analyze {"workflow_id", "file_hash", "namespace", "content"?, "content_type"?}
    → 200 {"file_hash", "analysis": {"classification", "confidence", "profile", "patterns"}}, or 503 when it "fails"
POST /tools/content_profile {"input_data": {"content": str}} → 200 {"output": profile} (a tool for the proxy)
GET/POST /admin/config {"latency_ms", "failure_rate"}

The answer is computed, not canned: `content_profile` measures the content
(size, Shannon entropy in bits per byte, share of printable characters,
lines, whether it is JSON) and classifies it — `json` when it parses as an
object or list (confidence 1), `text` when at least 95 % of it is printable
(confidence = that share), `binary` otherwise (confidence = the unprintable
share) — and `patterns` lists what the hook receiver's pipeline currently
knows of the workflow's namespace (`intelligence_patterns`, highest
confidence first). The orchestrator stores the whole answer with the workflow.

Latency and failure rate are knobs, so tests and scenarios can make it slow
or failing on purpose: `INTELLIGENCE_LATENCY_MS`, `INTELLIGENCE_FAILURE_RATE`
(0..1) at start, or POST /admin/config at run time.
"""
from __future__ import annotations

import asyncio
import math
import os
import random
from collections import Counter
from typing import Any

import orjson
from aiohttp import web

from nodes.service import Node, json_error, read_json_object

PROFILE_BYTES = 1 << 20  # longer content is profiled on its first MiB
PATTERNS_LISTED = 5
_PRINTABLE = frozenset(range(32, 127)) | {9, 10, 13}


def content_profile(content: str) -> dict[str, Any]:
    """What the content is and how sure we are: measured on its UTF-8 bytes."""
    data = content.encode("utf-8", "surrogatepass")[:PROFILE_BYTES]
    size = len(data)
    counts = Counter(data)
    entropy = -sum(n / size * math.log2(n / size) for n in counts.values()) if size else 0.0
    printable = sum(n for byte, n in counts.items() if byte in _PRINTABLE or byte >= 0x80) / size if size else 1.0
    try:
        is_json = isinstance(orjson.loads(data), (dict, list))
    except orjson.JSONDecodeError:
        is_json = False
    if is_json:
        classification, confidence = "json", 1.0
    elif printable >= 0.95:
        classification, confidence = "text", printable
    else:
        classification, confidence = "binary", 1 - printable
    return {"classification": classification, "confidence": round(confidence, 4), "size_bytes": size,
            "entropy_bits_per_byte": round(entropy, 4), "printable_ratio": round(printable, 4),
            "lines": data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)}


class IntelligenceNode(Node):
    kind = "intelligence"

    def __init__(self, settings):
        super().__init__(settings)
        self.latency_ms = float(os.environ.get("INTELLIGENCE_LATENCY_MS", "5"))
        self.failure_rate = float(os.environ.get("INTELLIGENCE_FAILURE_RATE", "0"))
        self.analyzed = 0
        self.failed = 0
        self.tool_calls = 0

    def setup_routes(self, app: web.Application) -> None:
        app.router.add_post("/analyze", self.handle_analyze)
        app.router.add_post("/tools/content_profile", self.handle_tool_profile)
        app.router.add_get("/admin/config", self.handle_get_config)
        app.router.add_post("/admin/config", self.handle_set_config)

    def capabilities(self) -> dict:
        return {"analysis": ["content-profile", "namespace-patterns"], "tools": ["content_profile"],
                "configurable": ["latency_ms", "failure_rate"]}

    def stats(self) -> dict:
        return {"analyzed": self.analyzed, "failed": self.failed, "tool_calls": self.tool_calls,
                "config": self._config()}

    def _config(self) -> dict:
        return {"latency_ms": self.latency_ms, "failure_rate": self.failure_rate}

    async def handle_analyze(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        content = body.get("content", "")
        namespace = body.get("namespace", "default")
        if not isinstance(content, str):
            return json_error(422, "field 'content' must be a string")
        if not isinstance(namespace, str) or not namespace:
            return json_error(422, "field 'namespace' must be a non-empty string")
        if self.latency_ms > 0:
            await asyncio.sleep(self.latency_ms / 1000)
        if random.random() < self.failure_rate:
            self.failed += 1
            return json_error(503, "intelligence failed (configured failure rate)")
        profile = content_profile(content)
        assert self.pool is not None
        rows = await self.pool.fetch(
            "SELECT pattern_type, subject, confidence_score, affected_services FROM intelligence_patterns"
            " WHERE namespace = $1 ORDER BY confidence_score DESC, updated_at DESC LIMIT $2",
            namespace, PATTERNS_LISTED)
        patterns = [{"pattern_type": r["pattern_type"], "subject": r["subject"],
                     "confidence_score": round(r["confidence_score"], 4),
                     "affected_services": r["affected_services"]} for r in rows]
        self.analyzed += 1
        return web.json_response({
            "file_hash": str(body.get("file_hash", "")),
            "analysis": {"classification": profile["classification"], "confidence": profile["confidence"],
                         "profile": profile, "patterns": patterns},
        })

    async def handle_tool_profile(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        input_data = body.get("input_data")
        if not isinstance(input_data, dict) or not isinstance(input_data.get("content"), str):
            return json_error(422, "field 'input_data.content' is required and must be a string")
        self.tool_calls += 1
        return web.json_response({"output": content_profile(input_data["content"])})

    async def handle_get_config(self, request: web.Request) -> web.Response:
        return web.json_response(self._config())

    async def handle_set_config(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        latency = body.get("latency_ms", self.latency_ms)
        rate = body.get("failure_rate", self.failure_rate)
        if not isinstance(latency, (int, float)) or latency < 0:
            return json_error(422, "field 'latency_ms' must be a number >= 0")
        if not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            return json_error(422, "field 'failure_rate' must be a number between 0 and 1")
        self.latency_ms, self.failure_rate = float(latency), float(rate)
        return web.json_response(self._config())
