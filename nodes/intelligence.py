"""Intelligence node: the optional downstream "OnexTree" analysis service.

Its latency and failure rate are knobs, so tests and scenarios can make it
slow or failing on purpose: `INTELLIGENCE_LATENCY_MS`,
`INTELLIGENCE_FAILURE_RATE` (0..1) at start, or POST /admin/config at run time.

POST /analyze {"file_hash", "namespace", ...} → 200 {"analysis": ...}, or 503 when it "fails"
GET/POST /admin/config {"latency_ms", "failure_rate"}
"""
from __future__ import annotations

import asyncio
import os
import random

from aiohttp import web

from nodes.service import Node, json_error, read_json_object


class IntelligenceNode(Node):
    kind = "intelligence"

    def __init__(self, settings):
        super().__init__(settings)
        self.latency_ms = float(os.environ.get("INTELLIGENCE_LATENCY_MS", "5"))
        self.failure_rate = float(os.environ.get("INTELLIGENCE_FAILURE_RATE", "0"))
        self.analyzed = 0
        self.failed = 0

    def setup_routes(self, app: web.Application) -> None:
        app.router.add_post("/analyze", self.handle_analyze)
        app.router.add_get("/admin/config", self.handle_get_config)
        app.router.add_post("/admin/config", self.handle_set_config)

    def capabilities(self) -> dict:
        return {"analysis": ["content-classification"], "configurable": ["latency_ms", "failure_rate"]}

    def stats(self) -> dict:
        return {"analyzed": self.analyzed, "failed": self.failed, "config": self._config()}

    def _config(self) -> dict:
        return {"latency_ms": self.latency_ms, "failure_rate": self.failure_rate}

    async def handle_analyze(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        if self.latency_ms > 0:
            await asyncio.sleep(self.latency_ms / 1000)
        if random.random() < self.failure_rate:
            self.failed += 1
            return json_error(503, "intelligence failed (configured failure rate)")
        self.analyzed += 1
        file_hash = str(body.get("file_hash", ""))
        return web.json_response(
            {
                "file_hash": file_hash,
                "analysis": {"classification": "document", "confidence": 0.93, "tree_depth": len(file_hash) % 7 + 1},
            }
        )

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
