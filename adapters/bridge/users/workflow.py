"""WorkflowUser: submits workflows (202), follows them to completion on the bus and through GET.

``workflow→completed`` runs from the submit to the WORKFLOW_COMPLETED event
with our correlation id (WORKFLOW_FAILED or a timeout is a failure); a
workflow that asks the intelligence service is ``workflow→completed with
intelligence``, since the seeds hold the two to different limits (50 ms and
150 ms). ``workflow→completed*`` selects both. The
workflow id is chosen here, so the ledger knows it even when no 202 came back.
"""
from __future__ import annotations

import random
import time
import uuid

from typing import Any

from locust import FastHttpUser, events, task

from adapters.bridge.adapter import EventType
from harness.arrivals import arrivals
from harness.context import option
from harness.users import RunMixin


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--intelligence", type=float, default=0.5,
                        help="WorkflowUser: share of workflows that call the intelligence service")


class WorkflowUser(RunMixin, FastHttpUser):
    """Submit (POST /workflows), wait for completion on the bus, confirm with GET /workflows/{id}."""

    abstract = False
    intelligence_ratio: float = 0.5  # share of workflows that call the intelligence service
    check_with_get: bool = True
    e2e_timeout_s: float = 15.0
    host = "http://127.0.0.1"  # replaced by the stack's ORCHESTRATOR_URL at start
    wait_time = arrivals  # open model with --rate (harness/arrivals.py)
    network_timeout = 10.0  # a stuck node is a failed request after this, not a user stuck for a minute
    connection_timeout = 5.0

    def on_start(self) -> None:
        self.run_start()
        self.base = self.service_url("ORCHESTRATOR_URL")
        ratio = option(self.environment, "intelligence")
        if ratio is not None:
            self.intelligence_ratio = float(ratio)
        self.bus = self.run.bus()

    def on_stop(self) -> None:
        self.run_stop()

    @task
    def workflow(self) -> None:
        ts_intended = self.intended()
        workflow_id, corr = str(uuid.uuid4()), str(uuid.uuid4())
        use_intelligence = random.random() < self.intelligence_ratio
        waiting = self.bus.observer.expect(corr, [EventType.WORKFLOW_COMPLETED.value],
                                           [EventType.WORKFLOW_FAILED.value])
        ts = time.time()
        t0 = time.perf_counter()
        acked = False
        body = {"content": f"load {workflow_id}", "namespace": self.run.namespace,
                "use_intelligence": use_intelligence, "workflow_id": workflow_id, "correlation_id": corr}
        try:  # the ledger row is written even when the run stops mid-request (stored later = recovered)
            with self.client.post(f"{self.base}/workflows", json=body, name="POST /workflows", catch_response=True,
                                  context=self.sample_context(ts, corr, ts_intended)) as resp:
                if resp.status_code != 202:
                    resp.failure(f"status {resp.status_code}: {(resp.text or '')[:200]}")
                else:
                    acked = True
                    resp.success()
        finally:
            self.ledger("workflow", workflow_id, ts, acked)
        name = "workflow→completed with intelligence" if use_intelligence else "workflow→completed"
        self.follow_e2e(self.bus, waiting, corr, name, ts, t0, ts_intended, self.e2e_timeout_s,
                        error=None if acked else "workflow not accepted",
                        then=(lambda _: self.confirm(workflow_id, corr)) if self.check_with_get else None)

    def confirm(self, workflow_id: str, corr: str) -> None:
        """GET /workflows/{id} after the completion event: the orchestrator says completed too."""
        with self.client.get(f"{self.base}/workflows/{workflow_id}", name="GET /workflows/{id}",
                             catch_response=True, context={"ts_start": time.time(), "key": corr}) as resp:
            state = None
            try:
                state = resp.json().get("state")
            except Exception:  # noqa: BLE001
                pass
            if resp.status_code != 200 or state != "completed":
                resp.failure(f"status {resp.status_code}, state {state!r}")
            else:
                resp.success()
