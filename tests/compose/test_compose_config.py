"""compose/docker-compose.yml: the compose tool's own `config` check, and the embedded stack's contract.

Images cannot be pulled here, so the stack is not started: `docker-compose
config` (Debian's docker-compose 1.29; no engine or image needed) validates
and resolves the file, and the resolved YAML is checked against what the
nodes, Locust, the chaos module and compose/README.md expect. In CI a missing
`docker-compose` is a failure (`.ci/run` installs it); locally the tests skip.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose"
COMPOSE_FILE = COMPOSE / "docker-compose.yml"
ENV_EXAMPLE = COMPOSE / ".env.example"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

NODE_KINDS = ["registry", "database-adapter", "reducer", "intelligence", "stamping", "service-registry",
              "hook-receiver", "tool-capture-proxy", "orchestrator"]
NODE_ENV = ["KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "HTTP_HOST", "HTTP_PORT", "NODE_ID", "STAMPING_URL",
            "INTELLIGENCE_URL", "CONSUL_HTTP_ADDR", "HEARTBEAT_INTERVAL_SECONDS", "TOPIC_PARTITIONS"]
BROKERS = ["redpanda-0", "redpanda-1", "redpanda-2"]
INFRA = BROKERS + ["postgres", "consul", "redis", "toxiproxy"]
LOCUST = ["locust-master", "locust-worker"]
CHAOS_TARGETS = BROKERS + ["postgres", "consul", "redis"] + NODE_KINDS
LABEL = "bridgestorm.managed"


def _url_var(kind: str) -> str:
    return kind.upper().replace("-", "_") + "_URL"


def _compose_binary() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        message = "docker-compose is not installed (Debian: apt-get install -y docker-compose)"
        if IN_CI:
            pytest.fail(message + "; .ci/run must install it")
        pytest.skip(message)
    return binary


def _run_config(*extra: str, env_file: Path) -> subprocess.CompletedProcess:
    # a clean environment: only the env file decides the interpolated values
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [_compose_binary(), "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "--profile", "load",
         "config", *extra],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.fixture(scope="module")
def config() -> dict:
    """The file as compose resolves it, with compose/.env.example's values."""
    result = _run_config(env_file=ENV_EXAMPLE)
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def services(config) -> dict:
    return config["services"]


@pytest.fixture(scope="module")
def proxies() -> dict:
    return {p["name"]: p for p in json.loads((COMPOSE / "toxiproxy" / "toxiproxy.json").read_text())}


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _command(service: dict) -> list[str]:
    cmd = service.get("command")
    return cmd.split() if isinstance(cmd, str) else list(cmd or [])


def _published(service: dict) -> list[tuple[str | None, int, int]]:
    """(host ip, published port, container port) for each published port, short or long syntax."""
    out = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            out.append((port.get("host_ip"), int(port["published"]), int(port["target"])))
            continue
        spec = str(port).split("/")[0]
        parts = spec.rsplit(":", 2)
        if len(parts) == 3:
            out.append((parts[0], int(parts[1]), int(parts[2])))
        elif len(parts) == 2:
            out.append((None, int(parts[0]), int(parts[1])))
        else:
            out.append((None, 0, int(parts[0])))
    return out


def _hostport(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    """'internal://0.0.0.0:9092,proxied://toxiproxy:9092' -> {'internal': ('0.0.0.0', 9092), ...}"""
    out = {}
    for item in value.split(","):
        name, _, address = item.partition("://")
        out[name] = _hostport(address)
    return out


def _redpanda_flag(service: dict, flag: str) -> str:
    command = service["command"]
    for item in ([command] if isinstance(command, str) else command):
        words = str(item).split(None, 1)
        if words and words[0] == flag:
            return words[1] if len(words) > 1 else ""
    raise AssertionError(f"{flag} missing from the command")


# ----------------------------------------------------------------- the compose tool's own check

def test_compose_config_accepts_the_file(config):
    assert set(config["services"]) == set(INFRA + NODE_KINDS + LOCUST)


def test_compose_refuses_to_run_without_a_postgres_password(tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = _run_config("-q", env_file=empty)
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr


def test_node_kinds_are_the_ones_the_nodes_know():
    from nodes.kinds import NODE_KINDS as known

    assert sorted(known) == sorted(NODE_KINDS)


# ----------------------------------------------------------------- the contract

def test_every_node_runs_its_kind_from_the_repository_image(services):
    for kind in NODE_KINDS:
        svc = services[kind]
        assert _command(svc) == ["python", "-m", "nodes", "run", kind], kind
        assert svc["build"]["dockerfile"] == "Dockerfile" and Path(svc["build"]["context"]) == ROOT, kind
    assert (ROOT / "Dockerfile").is_file()
    images = {services[name]["image"] for name in NODE_KINDS + LOCUST}
    assert len(images) == 1, f"nodes and Locust must share one image, got {images}"


def test_every_node_has_the_embedded_stacks_environment(services, proxies):
    node_ids = set()
    for kind in NODE_KINDS:
        env = _env(services[kind])
        missing = [v for v in NODE_ENV if not env.get(v)]
        assert not missing, f"{kind} lacks {missing}"
        # the node listens on all interfaces at the port its URL names, and publishes that port
        assert env["HTTP_HOST"] == "0.0.0.0"
        url = urlsplit(env[_url_var(kind)])
        assert (url.hostname, url.port) == (kind, int(env["HTTP_PORT"])), kind
        assert [(p, t) for _, p, t in _published(services[kind])] == [(url.port, url.port)], kind
        node_ids.add(env["NODE_ID"])
        float(env["HEARTBEAT_INTERVAL_SECONDS"]), int(env["TOPIC_PARTITIONS"])
        # downstreams point at the services that exist
        for var, target in (("STAMPING_URL", "stamping"), ("INTELLIGENCE_URL", "intelligence")):
            u = urlsplit(env[var])
            assert u.hostname == target and u.port == int(_env(services[target])["HTTP_PORT"]), var
        consul_host, consul_port = _hostport(env["CONSUL_HTTP_ADDR"].replace("http://", ""))
        assert consul_host == "consul" and consul_port == 8500
    assert len(node_ids) == len(NODE_KINDS), "NODE_ID must differ per node"


def test_nodes_and_locust_reach_broker_and_database_through_the_proxies(services, proxies):
    by_listen = {_hostport(p["listen"])[1]: p for p in proxies.values()}
    for name in NODE_KINDS + LOCUST:
        env = _env(services[name])
        for address in env["KAFKA_BOOTSTRAP_SERVERS"].split(","):
            host, port = _hostport(address)
            assert host == "toxiproxy" and port in by_listen, f"{name}: {address} is not a Toxiproxy proxy"
            assert by_listen[port]["upstream"].startswith("redpanda-"), address
        db = urlsplit(env["DATABASE_URL"])
        assert db.scheme == "postgresql" and (db.hostname, db.port) == ("toxiproxy", 5432), name
        assert by_listen[5432]["name"] == "postgres" and by_listen[5432]["upstream"] == "postgres:5432"
        assert env["TOXIPROXY_URL"] == "http://toxiproxy:8474"


def test_locust_gets_every_address_stackenv_reads(services):
    from adapters.bridge.adapter import BridgeAdapter
    from harness.stackenv import KEYS as HARNESS_KEYS

    KEYS = (*HARNESS_KEYS, *BridgeAdapter.env_keys)

    node_env = _env(services["orchestrator"])
    for name in LOCUST:
        env = _env(services[name])
        missing = [k for k in KEYS if not env.get(k)]
        assert not missing, f"{name} lacks {missing}"
        for key in KEYS:  # the same values the nodes see
            if key in node_env:
                assert env[key] == node_env[key], (name, key)
    for kind in NODE_KINDS:
        url = urlsplit(_env(services["locust-master"])[_url_var(kind)])
        assert url.hostname == kind and url.port == int(_env(services[kind])["HTTP_PORT"])


def test_locust_master_and_workers_commands(services):
    master, worker = _command(services["locust-master"]), _command(services["locust-worker"])
    assert master[:4] == ["locust", "-f", "locustfiles/bridge.py", "--master"]
    assert "--stack" in master and master[master.index("--stack") + 1] == "external"
    assert worker == ["locust", "-f", "locustfiles/bridge.py", "--worker", "--master-host", "locust-master"]
    assert "container_name" not in services["locust-worker"], "workers must scale"
    for name in LOCUST:
        assert "load" in services[name].get("profiles", [])
        assert any(":/app/reports" in str(v) or (isinstance(v, dict) and v.get("target") == "/app/reports")
                   for v in services[name]["volumes"]), f"{name} must share the run directory"


def test_redpanda_advertises_the_proxies_so_clients_cannot_bypass_them(services, proxies):
    by_listen = {_hostport(p["listen"])[1]: p for p in proxies.values()}
    for i, name in enumerate(BROKERS):
        svc = services[name]
        assert svc["image"].startswith(("docker.redpanda.com/redpandadata/redpanda:v", "redpandadata/redpanda:v"))
        listen = _listeners(_redpanda_flag(svc, "--kafka-addr"))
        advertised = _listeners(_redpanda_flag(svc, "--advertise-kafka-addr"))
        assert set(listen) == set(advertised) == {"internal", "proxied", "external"}, name
        assert advertised["internal"] == (name, listen["internal"][1])
        # the proxied listener advertises the Toxiproxy proxy whose upstream is this very listener
        host, port = advertised["proxied"]
        assert host == "toxiproxy" and port in by_listen, name
        proxy = by_listen[port]
        assert proxy["name"] == ("broker" if i == 0 else f"broker-{i}")
        assert _hostport(proxy["upstream"]) == (name, listen["proxied"][1]), name
        # the external listener is what the host reaches, on the port published for it
        ext_port = advertised["external"][1]
        assert (ext_port, listen["external"][1]) in [(p, t) for _, p, t in _published(svc)], name
        if i:
            assert _redpanda_flag(svc, "--seeds") == "redpanda-0:33145"
    assert {"broker", "postgres"} <= set(proxies)


def test_every_chaos_target_is_labelled_and_named(services):
    for name in CHAOS_TARGETS:
        svc = services[name]
        assert (svc.get("labels") or {}).get(LABEL) == "true", f"{name} lacks {LABEL}=true"
        assert svc.get("container_name") == f"bridgestorm-{name}", name
    for name in LOCUST + ["toxiproxy"]:
        assert LABEL not in (services[name].get("labels") or {}), f"{name} is not a chaos target"


def test_compose_experiments_target_labelled_containers_and_existing_proxies(services, proxies):
    from chaos.experiment import load

    labelled = {s["container_name"] for s in services.values() if (s.get("labels") or {}).get(LABEL) == "true"}
    files = sorted((COMPOSE / "experiments").glob("*.yaml"))
    assert files
    for path in files:
        for planned in load(path).plan().faults:
            fault = planned.fault
            if fault.target_kind == "container":
                assert fault.target in labelled, f"{path.name}: {fault.target} is not a labelled container"
            else:
                assert fault.target_kind == "proxy" and fault.target in proxies, f"{path.name}: {fault.target}"


def test_every_service_has_a_healthcheck(services):
    for name, svc in services.items():
        test = (svc.get("healthcheck") or {}).get("test")
        assert test and not (svc["healthcheck"].get("disable")), f"{name} has no healthcheck"
    for kind in NODE_KINDS:
        assert "/ready" in " ".join(services[kind]["healthcheck"]["test"]), kind
        deps = services[kind]["depends_on"]
        assert all(deps[d]["condition"] == "service_healthy" for d in INFRA), kind


def test_published_ports_bind_loopback_only(services):
    for name, svc in services.items():
        for host_ip, published, _ in _published(svc):
            assert host_ip == "127.0.0.1", f"{name} publishes {published} on {host_ip or 'every interface'}"


def test_readme_table_matches_the_file(services):
    """compose/README.md's service table: names, container names and published ports are the file's."""
    rows = {}
    for line in (COMPOSE / "README.md").read_text().splitlines():
        m = re.match(r"\|\s*`([a-z0-9-]+)`\s*\|(.*)\|\s*$", line)
        if m and m.group(1) in services:
            rows[m.group(1)] = [c.strip() for c in m.group(2).split("|")]
    assert set(rows) == set(services), f"README table rows differ: {set(rows) ^ set(services)}"
    for name, (container, in_network, published, chaos) in rows.items():
        svc = services[name]
        if "container_name" in svc:
            assert container == f"`{svc['container_name']}`", name
        documented = {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", published)}
        assert documented == {p for _, p, _ in _published(svc)}, name
        targets = {t for _, _, t in _published(svc)}
        assert targets <= {int(p) for p in re.findall(r"\d{4,5}", in_network)}, name
        assert chaos.startswith("yes") == (name in CHAOS_TARGETS), name
    for kind in NODE_KINDS:
        assert f"| `{kind}` |" in (COMPOSE / "README.md").read_text()


def test_env_example_sets_every_variable_the_file_requires():
    text = COMPOSE_FILE.read_text()
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    given = {line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines()
             if line and not line.startswith("#") and "=" in line}
    assert required and required <= given
    referenced = set(re.findall(r"\$\{([A-Z_]+)", text))
    assert referenced - given == set(), f"undocumented in .env.example: {referenced - given}"
    assert not (COMPOSE / ".env").exists() or ".env" in (ROOT / ".dockerignore").read_text()


def test_dockerfile_builds_the_project_on_python_311_slim():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\s*$", dockerfile, re.M)
    assert re.search(r"pip install (--no-deps )?\.", dockerfile)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and "compose/.env" in ignored and "reports" in ignored
