"""The integration services under load: hook bursts, registry churn and proxied tool calls (seed 004).

- ``HookUser`` sends service start-ups whose start-up time degrades over the
  run (2 s plus ``--startup-drift`` ms per second, with noise): a trend that
  is really there, which the hook receiver's pattern discovery must find.
  It also sends tool executions: normal ones around 150 ms, and one in
  ``--anomaly-every`` an injected anomaly (2.5 s, 85 % CPU, 450 MB). A
  response is judged by what the pipeline said: an injected anomaly it did
  not report fails ``POST /hooks/tool/execution (anomaly)``; a normal one it
  called anomalous fails ``POST /hooks/tool/execution``. Every hook carries
  its own ``hook_id``, the ledger's item (kind ``hook``).
- ``RegistryUser`` registers instances (ledger kind ``registration``),
  updates their health, deregisters the oldest, and looks up the stamping
  service as the orchestrator does (``discovery stamping``: the seed's
  discovery < 10 ms is held on it).
- ``ProxyUser`` calls the stamping node's ``blake3_hash`` tool through the
  tool-capture proxy, with inputs that repeat (so the adaptive cache has
  something to learn) and new ones; every answer's hash is checked against
  our own BLAKE3, so a cache that served a wrong answer fails the request.
  The proxy's own overhead per call is a sample too (``proxy overhead``).
"""
from __future__ import annotations

import random
import time
import uuid
from typing import Any

from blake3 import blake3
from locust import FastHttpUser, events, task

from harness.arrivals import arrivals
from harness.context import option
from harness.users import RunMixin

SERVICES = 12  # service names the start-ups come from
TOOLS = 3  # tool names the executions come from
BASELINE_FIRST = 5  # normal executions of a tool this user sends before it injects an anomaly
REPEATED_INPUTS = 16  # the proxy's inputs that repeat


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--startup-drift", type=float, default=20.0,
                        help="HookUser: start-up time added per second of the run, in ms (the trend to find)")
    parser.add_argument("--anomaly-every", type=int, default=20,
                        help="HookUser: one tool execution in this many is an injected anomaly")
    parser.add_argument("--repeat-share", type=float, default=0.9,
                        help="ProxyUser: share of proxied calls whose input was sent before (cacheable)")


class _IntegrationUser(RunMixin, FastHttpUser):
    abstract = True
    host = "http://127.0.0.1"  # replaced by the stack's URLs at start
    wait_time = arrivals  # open model with --rate (harness/arrivals.py)
    network_timeout = 10.0
    connection_timeout = 5.0

    def on_stop(self) -> None:
        self.run_stop()

    def _post(self, url: str, name: str, body: dict, ts_intended: float | None, key: str,
              judge) -> tuple[bool, dict]:
        """POST and judge the answer: ``judge(data)`` returns an error or None. (acknowledged, data)."""
        ts = time.time()
        data: dict = {}
        with self.client.post(url, name=name, json=body, catch_response=True,
                              context=self.sample_context(ts, key, ts_intended)) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}: {(resp.text or '')[:200]}")
                return False, data
            try:
                answer = resp.json()
            except Exception:  # noqa: BLE001
                answer = {}
            if not isinstance(answer, dict) or answer.get("success") is not True:
                resp.failure(f"not a success: {(resp.text or '')[:200]}")
                return False, data
            data = answer.get("data") or {}
            error = judge(data)
            if error:
                resp.failure(error)
            else:
                resp.success()
            return True, data


class HookUser(_IntegrationUser):
    """Service start-ups that degrade over the run, and tool executions with injected anomalies."""

    abstract = False

    def on_start(self) -> None:
        self.run_start()
        self.base = self.service_url("HOOK_RECEIVER_URL")
        self.drift = float(option(self.environment, "startup_drift", 20.0))
        self.anomaly_every = max(2, int(option(self.environment, "anomaly_every", 20)))
        self.normal_sent: dict[str, int] = {}
        self.started = time.time()

    @task(2)
    def startup(self) -> None:
        ts_intended = self.intended()
        hook_id = str(uuid.uuid4())
        service = f"service-{random.randrange(SERVICES)}"
        elapsed = time.time() - (self.run.started_at or self.started)
        startup_ms = max(1.0, 2000 + self.drift * elapsed + random.gauss(0, 100))
        body = {"hook_type": "service_started", "hook_id": hook_id, "namespace": self.run.namespace,
                "service_info": {"name": service, "version": "1.0.0", "instance_id": f"{service}-{hook_id[:8]}",
                                 "startup_time_ms": round(startup_ms, 1)},
                "startup_info": {"initialization_steps": [
                    {"step": "load_config", "duration_ms": round(random.uniform(20, 60), 1)},
                    {"step": "init_database", "duration_ms": round(random.uniform(100, 300), 1)}]}}
        acked = False
        try:
            acked, _ = self._post(f"{self.base}/hooks/service/lifecycle", "POST /hooks/service/lifecycle", body,
                                  ts_intended, hook_id,
                                  lambda data: None if data.get("hook_id") == hook_id else "another hook id")
        finally:
            self.ledger("hook", hook_id, time.time(), acked)

    @task(3)
    def tool_execution(self) -> None:
        ts_intended = self.intended()
        hook_id = str(uuid.uuid4())
        tool = f"tool-{random.randrange(TOOLS)}"
        anomaly = self.normal_sent.get(tool, 0) >= BASELINE_FIRST and random.randrange(self.anomaly_every) == 0
        if anomaly:
            ms, cpu, mb = 2500.0, 85.0, 450.0
        else:
            ms, cpu, mb = random.gauss(150, 10), random.gauss(30, 2), random.gauss(100, 5)
            self.normal_sent[tool] = self.normal_sent.get(tool, 0) + 1
        body = {"hook_type": "tool_executed", "hook_id": hook_id, "namespace": self.run.namespace,
                "execution_info": {"tool_name": tool, "execution_id": hook_id, "execution_time_ms": round(ms, 2),
                                   "executor_service": f"executor-{tool}"},
                "resource_usage": {"cpu_usage": {"peak_percent": round(cpu, 2)},
                                   "memory_usage": {"peak_mb": round(mb, 2)}}}

        def judge(data: dict) -> str | None:
            found = any(p.get("pattern_type") == "performance_anomaly"
                        for p in (data.get("intelligence_analysis") or {}).get("patterns_discovered", []))
            if anomaly and not found:
                return "injected anomaly not reported"
            if found and not anomaly:
                return "a normal execution reported as an anomaly"
            return None

        name = "POST /hooks/tool/execution (anomaly)" if anomaly else "POST /hooks/tool/execution"
        acked = False
        try:
            acked, _ = self._post(f"{self.base}/hooks/tool/execution", name, body, ts_intended, hook_id, judge)
        finally:
            self.ledger("hook", hook_id, time.time(), acked)


class RegistryUser(_IntegrationUser):
    """Instances registered, updated and deregistered; the stamping service looked up as discovery does."""

    abstract = False
    keep = 5  # registrations this user holds before it deregisters the oldest

    def on_start(self) -> None:
        self.run_start()
        self.base = self.service_url("SERVICE_REGISTRY_URL")
        self.mine: list[str] = []  # registration ids, oldest first

    @task
    def churn(self) -> None:
        ts_intended = self.intended()
        instance_id = f"churn-{uuid.uuid4()}"
        body = {"service_name": f"churn-service-{random.randrange(4)}", "version": "1.0.0",
                "instance_id": instance_id, "host": "127.0.0.1", "port": random.randrange(20000, 30000),
                "capabilities": ["churn_tool"], "metadata": {"namespace": self.run.namespace}}
        acked, data = False, {}
        try:
            acked, data = self._post(f"{self.base}/registry/services", "POST /registry/services", body, ts_intended,
                                     instance_id, lambda d: None if d.get("registration_id") else "no registration_id")
        finally:
            self.ledger("registration", instance_id, time.time(), acked)
        if acked:
            self.mine.append(data["registration_id"])
        self._discover()
        if self.mine:
            self._update(random.choice(self.mine))
        if len(self.mine) > self.keep:
            self._deregister(self.mine.pop(0))

    def _discover(self) -> None:
        with self.client.get(f"{self.base}/registry/services", params={"service_name": "stamping"},
                             name="discovery stamping", catch_response=True) as resp:
            try:
                services = resp.json()["data"]["services"]
            except Exception:  # noqa: BLE001
                services = None
            if resp.status_code != 200 or services is None:
                resp.failure(f"status {resp.status_code}")
            elif not any(s["instances"] for s in services):
                resp.failure("the stamping service is not registered")
            else:
                resp.success()

    def _update(self, registration_id: str) -> None:
        with self.client.put(f"{self.base}/registry/services/{registration_id}", name="PUT /registry/services/{id}",
                             json={"health_status": random.choice(["healthy", "degraded"]),
                                   "load_factor": round(random.random(), 3)}, catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}: {(resp.text or '')[:200]}")

    def _deregister(self, registration_id: str) -> None:
        with self.client.delete(f"{self.base}/registry/services/{registration_id}",
                                name="DELETE /registry/services/{id}", catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}: {(resp.text or '')[:200]}")


class ProxyUser(_IntegrationUser):
    """The stamping node's blake3_hash tool through the tool-capture proxy; every answer checked."""

    abstract = False
    tool = "blake3_hash"

    def on_start(self) -> None:
        self.run_start()
        self.base = self.service_url("TOOL_CAPTURE_PROXY_URL")
        self.repeat_share = float(option(self.environment, "repeat_share", 0.9))
        self.inputs = [f"{self.run.namespace} repeated input {i}" for i in range(REPEATED_INPUTS)]

    @task
    def call(self) -> None:
        ts_intended = self.intended()
        if random.random() < self.repeat_share:
            content = random.choice(self.inputs)
        else:
            content = f"{self.run.namespace} new input {uuid.uuid4()}"
        digest = blake3(content.encode()).hexdigest()
        ts = time.time()

        def judge(data: dict) -> str | None:
            got = (data.get("output") or {}).get("file_hash")
            return None if got == digest else f"wrong answer ({data.get('cache')}): {got!r}, BLAKE3 {digest!r}"

        acked, data = self._post(f"{self.base}/proxy/tool/{self.tool}", f"POST /proxy/tool/{self.tool}",
                                 {"input_data": {"content": content}, "execution_options": {"cache_policy": "adaptive"}},
                                 ts_intended, digest, judge)
        overhead = data.get("proxy_overhead_ms")
        if acked and isinstance(overhead, (int, float)):
            self.fire("proxy", "proxy overhead", ts, float(overhead), key=digest)
