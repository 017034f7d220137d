"""A Toxiproxy link: add and remove toxics, take the proxy down and up again.

Works against any server that speaks the Toxiproxy API (the real one or
`stack.proxy`). Toxics bridgestorm adds are named `bridgestorm-...`
so `chaos heal` can find and remove exactly those.
"""
from __future__ import annotations

from chaos.probes import tcp_answers
from chaos.targets import FaultType, TargetContext, TargetError, TargetKind
from stack.proxy.client import ToxiproxyClient, ToxiproxyError
from stack.proxy.toxics import STREAMS, TOXIC_ATTRIBUTES

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


# ----------------------------------------------------------------- the kind

def build(name: str, context: TargetContext) -> ProxyTarget:
    return ProxyTarget(name, context.proxy_url())


def sweep(context: TargetContext) -> list[str]:
    """Every `bridgestorm-*` toxic removed and every disabled proxy enabled, on the Toxiproxy server."""
    client = ToxiproxyClient(context.proxy_url())
    try:
        proxies = client.proxies()
    except ToxiproxyError:
        return []
    done = []
    for name, proxy in proxies.items():
        for toxic in proxy.get("toxics", []):
            if toxic["name"].startswith(TOXIC_PREFIX):
                try:
                    client.remove_toxic(name, toxic["name"])
                    done.append(f"removed toxic {toxic['name']} from proxy {name}")
                except ToxiproxyError:
                    pass
        if not proxy.get("enabled", True):
            client.set_enabled(name, True)
            done.append(f"enabled proxy {name}")
    return done


def check_stream(value: object) -> str | None:
    return None if value in STREAMS else "must be upstream or downstream"


def check_toxicity(value: object) -> str | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1
    return None if ok else "must be a number from 0 to 1"


def toxic_fault(toxic: str) -> FaultType:
    """A Toxiproxy toxic as a fault: added under `bridgestorm-<fault id>`, healed by removing it."""
    attributes = TOXIC_ATTRIBUTES[toxic]

    def inject(target: ProxyTarget, params: dict, fault_id: str) -> dict:
        given = {k: params[k] for k in attributes}
        name = target.add_toxic(toxic, given, params["stream"], params["toxicity"], name=f"{TOXIC_PREFIX}{fault_id}")
        return {"toxic": name}

    def heal(target: ProxyTarget, params: dict, token: dict) -> None:
        target.remove_toxic(token["toxic"])

    return FaultType("proxy", toxic, f"Toxiproxy {toxic} toxic ({', '.join(attributes)})",
                     {**attributes, "stream": "downstream", "toxicity": 1.0}, "remove the toxic", inject, heal,
                     checks={"stream": check_stream, "toxicity": check_toxicity},
                     watched=False)  # a toxic leaves the link answering


KIND = TargetKind(
    name="proxy",
    summary="a link through the Toxiproxy API (the stack's proxy server, or --toxiproxy-url), by proxy name",
    faults=(
        FaultType("proxy", "down", "disable the proxy: its listener and connections close", {}, "enable the proxy",
                  inject=lambda t, p, f: t.down(), heal=lambda t, p, tok: t.up()),
        *[toxic_fault(toxic) for toxic in TOXIC_ATTRIBUTES],
    ),
    build=build,
    sweep=sweep,
)
