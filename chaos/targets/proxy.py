"""A Toxiproxy link: add and remove toxics, take the proxy down and up again.

Works against any server that speaks the Toxiproxy API (the real one or
`stack.proxy`). Toxics bridgestorm adds are named `bridgestorm-...`
so `chaos heal` can find and remove exactly those.
"""
from __future__ import annotations

from chaos.probes import tcp_answers
from chaos.targets import TargetError
from stack.proxy.client import ToxiproxyClient, ToxiproxyError

TOXIC_PREFIX = "bridgestorm-"


class ProxyTarget:
    """`ProxyTarget("broker", url).add_toxic("latency", {"latency": 200, "jitter": 50})`."""

    kind = "proxy"

    def __init__(self, proxy: str, url: str | None = None):
        self.name = proxy
        self.client = ToxiproxyClient(url)
        try:
            self.client.proxy(proxy)
        except ToxiproxyError as exc:
            if exc.status == 404:
                names = ", ".join(sorted(self.client.proxies())) or "none"
                raise TargetError(f"no proxy {proxy!r} at {self.client.url} (proxies: {names})") from None
            raise TargetError(str(exc)) from None

    def add_toxic(self, type: str, attributes: dict | None = None, stream: str = "downstream",
                  toxicity: float = 1.0, name: str | None = None) -> str:
        name = name or f"{TOXIC_PREFIX}{type}_{stream}"
        try:
            self.client.add_toxic(self.name, type, attributes or {}, stream, toxicity, name)
        except ToxiproxyError as exc:
            raise TargetError(f"proxy {self.name!r}: cannot add {type} toxic: {exc.message}") from None
        return name

    def remove_toxic(self, name: str) -> None:
        try:
            self.client.remove_toxic(self.name, name)
        except ToxiproxyError as exc:
            if exc.status != 404:  # already gone is healed
                raise

    def down(self) -> None:
        self.client.set_enabled(self.name, False)

    def up(self) -> None:
        self.client.set_enabled(self.name, True)

    def listen(self) -> str:
        return self.client.proxy(self.name)["listen"]

    def answers(self) -> bool:
        """Enabled and accepting connections on its listen address."""
        try:
            proxy = self.client.proxy(self.name)
        except ToxiproxyError:
            return False
        return bool(proxy["enabled"]) and tcp_answers(proxy["listen"])

    def our_toxics(self) -> list[str]:
        return [t["name"] for t in self.client.toxics(self.name) if t["name"].startswith(TOXIC_PREFIX)]
