"""The Toxiproxy HTTP API over the proxies of ``stack/proxy/wire.py``.

Why we write our own server: no ``toxiproxy-server`` binary or image can be
installed here (no package registry carries it and no image registry is
reachable), yet network faults between the nodes and the broker or database
need a proxy that speaks Toxiproxy's HTTP API, so the same experiments,
clients (``toxiproxy-python``, our ``ToxiproxyClient``) and compose setups
work against either server. When the real ``toxiproxy-server`` is on PATH,
``server_argv()`` (stack/proxy/process.py) prefers it.

The contract follows Toxiproxy 2.x (api.go): the endpoints, 201 on proxy
create and populate, 200 on toxic create, 204 on delete and reset, errors as
``{"error": ..., "status": ...}`` with 400/404/409, toxic defaults (name
``<type>_<stream>``, stream ``downstream``, toxicity 1.0 drawn once per
connection), and disabling a proxy closes its listener and connections.
"""
from __future__ import annotations

import json

from aiohttp import web

from stack.proxy.addresses import ApiError, require_loopback
from stack.proxy.toxics import ToxicError, ToxicSpec
from stack.proxy.wire import Proxy

VERSION = "2.0.0+bridgestorm.0.1.0"


class ProxyServer:
    """The HTTP API and all proxies, on one asyncio loop."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8474):
        self.host, self.port = host, port
        self.proxies: dict[str, Proxy] = {}
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors])
        r = app.router
        r.add_post("/reset", self.reset)
        r.add_get("/proxies", self.proxy_index)
        r.add_post("/proxies", self.proxy_create)
        r.add_post("/populate", self.populate)
        r.add_get("/proxies/{proxy}", self.proxy_show)
        r.add_post("/proxies/{proxy}", self.proxy_update)
        r.add_patch("/proxies/{proxy}", self.proxy_update)
        r.add_delete("/proxies/{proxy}", self.proxy_delete)
        r.add_get("/proxies/{proxy}/toxics", self.toxic_index)
        r.add_post("/proxies/{proxy}/toxics", self.toxic_create)
        r.add_get("/proxies/{proxy}/toxics/{toxic}", self.toxic_show)
        r.add_post("/proxies/{proxy}/toxics/{toxic}", self.toxic_update)
        r.add_patch("/proxies/{proxy}/toxics/{toxic}", self.toxic_update)
        r.add_delete("/proxies/{proxy}/toxics/{toxic}", self.toxic_delete)
        r.add_get("/version", self.version)
        return app

    async def start(self) -> None:
        require_loopback("API listen", f"{self.host}:{self.port}")
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        for proxy in self.proxies.values():
            proxy.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- helpers
    @web.middleware
    async def _errors(self, request: web.Request, handler):
        if request.headers.get("User-Agent", "").startswith("Mozilla/"):
            return web.Response(status=403, text="User agent not allowed\n")
        try:
            return await handler(request)
        except ApiError as exc:
            return _error(exc.message, exc.status)
        except ToxicError as exc:
            return _error(str(exc), exc.status)

    def _proxy(self, request: web.Request) -> Proxy:
        try:
            return self.proxies[request.match_info["proxy"]]
        except KeyError:
            raise ApiError("proxy not found", 404) from None

    @staticmethod
    async def _body(request: web.Request) -> object:
        try:
            return json.loads(await request.read() or b"null")
        except ValueError as exc:
            raise ApiError(f"bad request body: {exc}", 400) from None

    # -- proxies
    async def proxy_index(self, request):
        return _json({name: p.to_json() for name, p in self.proxies.items()})

    async def proxy_create(self, request):
        body = await self._body(request)
        if not isinstance(body, dict):
            raise ApiError("bad request body: expected a JSON object", 400)
        proxy = await self._add(body, replace=False)
        return _json(proxy.to_json(), status=201)

    async def _add(self, body: dict, replace: bool, label: str = "") -> Proxy:
        name, upstream = body.get("name") or "", body.get("upstream") or ""
        if not name:
            raise ApiError(f"missing required field: name{label}", 400)
        if not upstream:
            raise ApiError(f"missing required field: upstream{label}", 400)
        listen = body.get("listen") or "127.0.0.1:0"
        enabled = body.get("enabled", True)
        existing = self.proxies.get(name)
        if existing is not None:
            if not replace:
                raise ApiError("proxy already exists", 409)
            if existing.upstream == upstream and existing.listen == listen:
                await self._set_enabled(existing, bool(enabled))
                return existing
            existing.stop()
            del self.proxies[name]
        proxy = Proxy(name, listen, upstream)
        require_loopback("listen", listen)
        require_loopback("upstream", upstream)
        if enabled:
            await proxy.start()
        self.proxies[name] = proxy
        return proxy

    async def populate(self, request):
        body = await self._body(request)
        if isinstance(body, dict) and "proxies" in body:
            body = body["proxies"]
        if not isinstance(body, list):
            raise ApiError("bad request body: expected a list of proxies", 400)
        names = set()
        for i, item in enumerate(body, 1):  # validate everything before changing anything
            if not isinstance(item, dict):
                raise ApiError(f"bad request body: proxy {i} is not an object", 400)
            if not item.get("name"):
                raise ApiError(f"missing required field: name at proxy {i}", 400)
            if not item.get("upstream"):
                raise ApiError(f"missing required field: upstream at proxy {i}", 400)
            if item["name"] in names:
                raise ApiError(f"duplicate proxy name {item['name']!r}", 400)
            names.add(item["name"])
            require_loopback("upstream", item["upstream"])
            require_loopback("listen", item.get("listen") or "127.0.0.1:0")
        proxies = []
        for item in body:
            try:
                proxies.append(await self._add(item, replace=True))
            except ApiError as exc:
                return _json({"error": exc.message, "status": exc.status,
                              "proxies": [p.to_json() for p in proxies]}, status=exc.status)
        return _json({"proxies": [p.to_json() for p in proxies]}, status=201)

    async def proxy_show(self, request):
        return _json(self._proxy(request).to_json())

    async def proxy_update(self, request):
        proxy = self._proxy(request)
        body = await self._body(request)
        if not isinstance(body, dict):
            raise ApiError("bad request body: expected a JSON object", 400)
        listen = body.get("listen") or proxy.listen
        upstream = body.get("upstream") or proxy.upstream
        enabled = bool(body.get("enabled", proxy.enabled))
        if listen != proxy.listen or upstream != proxy.upstream:
            require_loopback("listen", listen)
            require_loopback("upstream", upstream)
            proxy.stop()
            proxy.listen, proxy.upstream = listen, upstream
        await self._set_enabled(proxy, enabled)
        return _json(proxy.to_json())

    @staticmethod
    async def _set_enabled(proxy: Proxy, enabled: bool) -> None:
        if enabled and not proxy.enabled:
            await proxy.start()
        elif not enabled and proxy.enabled:
            proxy.stop()

    async def proxy_delete(self, request):
        proxy = self._proxy(request)
        proxy.stop()
        del self.proxies[proxy.name]
        return web.Response(status=204)

    async def reset(self, request):
        for proxy in self.proxies.values():
            await self._set_enabled(proxy, True)
            proxy.remove_all_toxics()
        return web.Response(status=204)

    # -- toxics
    async def toxic_index(self, request):
        return _json([t.to_json() for t in self._proxy(request).ordered_toxics()])

    async def toxic_create(self, request):
        proxy = self._proxy(request)
        spec = ToxicSpec.from_json(await self._body(request))
        proxy.add_toxic(spec)
        return _json(spec.to_json())

    async def toxic_show(self, request):
        return _json(self._proxy(request).toxic(request.match_info["toxic"]).to_json())

    async def toxic_update(self, request):
        proxy = self._proxy(request)
        name = request.match_info["toxic"]
        proxy.toxic(name)
        spec = proxy.update_toxic(name, await self._body(request))
        return _json(spec.to_json())

    async def toxic_delete(self, request):
        self._proxy(request).remove_toxic(request.match_info["toxic"])
        return web.Response(status=204)

    async def version(self, request):
        return web.Response(text=json.dumps({"version": VERSION}) + "\n",
                            content_type="application/json", charset="utf-8")


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data), status=status, content_type="application/json")


def _error(message: str, status: int) -> web.Response:
    return _json({"error": message, "status": status}, status=status)
