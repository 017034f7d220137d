"""A thin, synchronous client of the Toxiproxy HTTP API.

Why not only `toxiproxy-python`: it cannot name the server per instance (its
host and port are class attributes), does not expose toxic updates, and
swallows status codes. This client works against the real
`toxiproxy-server` and bridgestorm's own (`stack.proxy`) alike, uses
only the standard library (so it is safe inside gevent-patched Locust
processes), and raises `ToxiproxyError` carrying the server's status and
message.
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8474"
URL_ENV = "TOXIPROXY_URL"


class ToxiproxyError(Exception):
    """An error answer from the server (`status` is the HTTP status)."""

    def __init__(self, status: int, message: str, url: str):
        super().__init__(f"{message} (HTTP {status} from {url})")
        self.status, self.message, self.url = status, message, url


def default_url() -> str:
    """`$TOXIPROXY_URL`, else the default address."""
    return os.environ.get(URL_ENV) or DEFAULT_URL


class ToxiproxyClient:
    """`ToxiproxyClient("http://127.0.0.1:8474").create_proxy("broker", "127.0.0.1:0", "127.0.0.1:9092")`."""

    def __init__(self, url: str | None = None, timeout: float = 5.0):
        self.url = (url or default_url()).rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: object = None) -> object:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json",
                                                  "User-Agent": "bridgestorm-chaos"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                message = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                message = raw.decode(errors="replace").strip() or exc.reason
            raise ToxiproxyError(exc.code, message, self.url + path) from None
        except OSError as exc:
            raise ToxiproxyError(0, f"no Toxiproxy server answers: {exc}", self.url + path) from None
        return json.loads(raw) if raw.strip() else None

    # -- server
    def version(self) -> str:
        answer = self._call("GET", "/version")
        return answer["version"] if isinstance(answer, dict) else str(answer)

    def reset(self) -> None:
        """Enable every proxy and remove every toxic."""
        self._call("POST", "/reset")

    # -- proxies
    def proxies(self) -> dict[str, dict]:
        return self._call("GET", "/proxies")  # type: ignore[return-value]

    def proxy(self, name: str) -> dict:
        return self._call("GET", f"/proxies/{name}")  # type: ignore[return-value]

    def create_proxy(self, name: str, listen: str, upstream: str, enabled: bool = True) -> dict:
        return self._call("POST", "/proxies", {"name": name, "listen": listen,
                                               "upstream": upstream, "enabled": enabled})  # type: ignore[return-value]

    def populate(self, proxies: list[dict]) -> list[dict]:
        """Create or replace proxies in one call (kept when listen and upstream are unchanged)."""
        return self._call("POST", "/populate", proxies)["proxies"]  # type: ignore[index]

    def update_proxy(self, name: str, **fields: object) -> dict:
        return self._call("POST", f"/proxies/{name}", fields)  # type: ignore[return-value]

    def set_enabled(self, name: str, enabled: bool) -> dict:
        return self.update_proxy(name, enabled=enabled)

    def delete_proxy(self, name: str) -> None:
        self._call("DELETE", f"/proxies/{name}")

    # -- toxics
    def toxics(self, proxy: str) -> list[dict]:
        return self._call("GET", f"/proxies/{proxy}/toxics")  # type: ignore[return-value]

    def add_toxic(self, proxy: str, type: str, attributes: dict | None = None, stream: str = "downstream",
                  toxicity: float = 1.0, name: str | None = None) -> dict:
        body = {"type": type, "stream": stream, "toxicity": toxicity, "attributes": attributes or {}}
        if name:
            body["name"] = name
        return self._call("POST", f"/proxies/{proxy}/toxics", body)  # type: ignore[return-value]

    def update_toxic(self, proxy: str, name: str, attributes: dict | None = None,
                     toxicity: float | None = None) -> dict:
        body: dict = {"attributes": attributes or {}}
        if toxicity is not None:
            body["toxicity"] = toxicity
        return self._call("PATCH", f"/proxies/{proxy}/toxics/{name}", body)  # type: ignore[return-value]

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._call("DELETE", f"/proxies/{proxy}/toxics/{name}")
