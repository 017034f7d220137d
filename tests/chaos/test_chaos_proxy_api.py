"""The proxy server's Toxiproxy API contract, through raw HTTP and through toxiproxy-python."""
from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest

from chaos.probes import tcp_answers


def http(url: str, method: str = "GET", body=None) -> tuple[int, object]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw.strip() else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw.strip() else None


def test_raw_http_contract(proxy_url, toxiproxy, echo):
    upstream = f"127.0.0.1:{echo.port}"
    status, body = http(proxy_url + "/version")
    assert status == 200 and body["version"].startswith("2.")

    status, proxy = http(proxy_url + "/proxies", "POST", {"name": "echo", "listen": "127.0.0.1:0", "upstream": upstream})
    assert status == 201
    assert proxy["name"] == "echo" and proxy["enabled"] is True and proxy["toxics"] == []
    assert not proxy["listen"].endswith(":0"), "port 0 is replaced by the port picked"
    assert http(proxy_url + "/proxies", "POST", {"name": "echo", "upstream": upstream}) == (
        409, {"error": "proxy already exists", "status": 409})
    assert http(proxy_url + "/proxies", "POST", {"upstream": upstream})[0] == 400
    assert http(proxy_url + "/proxies/nope") == (404, {"error": "proxy not found", "status": 404})
    assert http(proxy_url + "/proxies")[1]["echo"]["upstream"] == upstream

    status, toxic = http(proxy_url + "/proxies/echo/toxics", "POST", {"type": "latency", "attributes": {"latency": 10}})
    assert status == 200
    assert toxic == {"name": "latency_downstream", "type": "latency", "stream": "downstream", "toxicity": 1.0,
                     "attributes": {"latency": 10, "jitter": 0}}
    assert http(proxy_url + "/proxies/echo/toxics", "POST", {"type": "latency"})[0] == 409
    assert http(proxy_url + "/proxies/echo/toxics", "POST", {"type": "latency", "stream": "sideways"}) == (
        400, {"error": "stream was invalid, can be either upstream or downstream", "status": 400})
    assert http(proxy_url + "/proxies/echo/toxics", "POST", {"type": "nonsense"}) == (
        400, {"error": "invalid toxic type", "status": 400})
    status, up = http(proxy_url + "/proxies/echo/toxics", "POST",
                      {"type": "bandwidth", "stream": "upstream", "toxicity": 0.5, "attributes": {"rate": 100}})
    assert status == 200 and up["name"] == "bandwidth_upstream"

    status, patched = http(proxy_url + "/proxies/echo/toxics/latency_downstream", "PATCH", {"attributes": {"jitter": 5}})
    assert status == 200 and patched["attributes"] == {"latency": 10, "jitter": 5}
    assert http(proxy_url + "/proxies/echo/toxics/latency_downstream")[1]["attributes"]["jitter"] == 5
    assert [t["name"] for t in http(proxy_url + "/proxies/echo/toxics")[1]] == ["bandwidth_upstream", "latency_downstream"]
    assert http(proxy_url + "/proxies/echo/toxics/nope")[0] == 404
    assert http(proxy_url + "/proxies/echo/toxics/latency_downstream", "DELETE") == (204, None)
    assert http(proxy_url + "/proxies/echo/toxics/latency_downstream", "DELETE")[0] == 404

    # disable: listener closed; enable: back on the same port
    listen = proxy["listen"]
    status, off = http(proxy_url + "/proxies/echo", "POST", {"enabled": False})
    assert status == 200 and off["enabled"] is False
    assert not tcp_answers(listen)
    status, on = http(proxy_url + "/proxies/echo", "PATCH", {"enabled": True})
    assert on["enabled"] is True and on["listen"] == listen and tcp_answers(listen)

    # reset: every proxy enabled, every toxic gone
    http(proxy_url + "/proxies/echo", "POST", {"enabled": False})
    assert http(proxy_url + "/reset", "POST") == (204, None)
    shown = http(proxy_url + "/proxies/echo")[1]
    assert shown["enabled"] is True and shown["toxics"] == []

    # populate: 201, keeps an unchanged proxy, creates new ones; validates all first
    status, body = http(proxy_url + "/populate", "POST", [
        {"name": "echo", "listen": listen, "upstream": upstream},
        {"name": "echo2", "listen": "127.0.0.1:0", "upstream": upstream, "enabled": False},
    ])
    assert status == 201 and [p["name"] for p in body["proxies"]] == ["echo", "echo2"]
    assert body["proxies"][0]["listen"] == listen and body["proxies"][1]["enabled"] is False
    assert http(proxy_url + "/populate", "POST", [{"name": "x"}])[0] == 400
    assert "x" not in http(proxy_url + "/proxies")[1]

    assert http(proxy_url + "/proxies/echo2", "DELETE") == (204, None)
    assert http(proxy_url + "/proxies/echo2")[0] == 404

    # faults stay on loopback
    assert http(proxy_url + "/proxies", "POST", {"name": "far", "upstream": "10.1.2.3:80"})[0] == 400


def test_disable_closes_open_connections(toxiproxy, echo):
    proxy = toxiproxy.create_proxy("echo", "127.0.0.1:0", f"127.0.0.1:{echo.port}")
    host, port = proxy["listen"].rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.sendall(b"ping")
    assert sock.recv(4) == b"ping"
    toxiproxy.set_enabled("echo", False)
    sock.settimeout(2)
    try:
        assert sock.recv(4) == b""
    except ConnectionResetError:
        pass
    sock.close()


def test_toxiproxy_python_client(proxy_url, toxiproxy, echo):
    from toxiproxy import Toxiproxy
    from toxiproxy.exceptions import NotFound, ProxyExists

    host, port = proxy_url.removeprefix("http://").rsplit(":", 1)
    server = Toxiproxy()
    server.update_api_consumer(host, int(port))
    assert server.running()
    assert b"version" in server.version()
    proxy = server.create(upstream=f"127.0.0.1:{echo.port}", name="py_echo")
    assert proxy.enabled is True and proxy.listen.startswith("127.0.0.1:")
    with pytest.raises(ProxyExists):
        server.create(upstream=f"127.0.0.1:{echo.port}", name="py_echo")
    assert "py_echo" in server.proxies()

    proxy.add_toxic(type="latency", attributes={"latency": 50})
    proxy.add_toxic(type="timeout", stream="upstream", name="hold", toxicity=0.3, attributes={"timeout": 0})
    toxics = proxy.toxics()
    assert set(toxics) == {"latency_downstream", "hold"}
    assert toxics["hold"].stream == "upstream" and toxics["hold"].toxicity == pytest.approx(0.3)
    proxy.destroy_toxic("latency_downstream")
    assert set(proxy.toxics()) == {"hold"}

    with proxy.down():
        assert not tcp_answers(proxy.listen)
    assert tcp_answers(proxy.listen)
    assert server.reset()
    assert proxy.toxics() == {}

    populated = server.populate([{"name": "py_echo2", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{echo.port}"}])
    assert [p.name for p in populated] == ["py_echo2"]
    server.destroy_all()
    assert server.proxies() == {}
    with pytest.raises(NotFound):
        proxy.destroy_toxic("nope")
