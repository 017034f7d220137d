"""StampingUser: stamps content over HTTP and checks the node's BLAKE3 hash with its own.

A wrong hash is a failed request, whatever the status code said. Each stamp is
also followed on the bus (METADATA_STAMPED with our X-Correlation-ID):
``stamp→stamped``.
"""
from __future__ import annotations

import os
import random
import time
import uuid

from typing import Any

from blake3 import blake3
from locust import FastHttpUser, events, task

from adapters.bridge.adapter import EventType
from harness.arrivals import arrivals
from harness.context import option
from harness.users import RunMixin


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--stamp-sizes", default="256,4096,65536", help="StampingUser: content sizes in bytes")


class StampingUser(RunMixin, FastHttpUser):
    """Stamp (POST /stamp), query by hash (GET /stamp/{hash}), follow the stamp on the bus."""

    abstract = False
    sizes: list[int] = [256, 4096, 65536]
    follow_bus: bool = True
    e2e_timeout_s: float = 10.0
    host = "http://127.0.0.1"  # replaced by the stack's STAMPING_URL at start
    wait_time = arrivals  # open model with --rate (harness/arrivals.py)
    network_timeout = 10.0  # a stuck node is a failed request after this, not a user stuck for a minute
    connection_timeout = 5.0

    def on_start(self) -> None:
        self.run_start()
        self.base = self.service_url("STAMPING_URL")
        sizes = option(self.environment, "stamp_sizes")
        if sizes:
            self.sizes = [int(s) for s in str(sizes).split(",") if s.strip()]
        self.bus = self.run.bus() if self.follow_bus else None
        self.hashes: list[str] = []

    def on_stop(self) -> None:
        self.run_stop()

    @task(3)
    def stamp(self) -> None:
        ts_intended = self.intended()
        content = os.urandom(random.choice(self.sizes) // 2).hex()  # text content of the chosen size
        data = content.encode()
        digest = blake3(data).hexdigest()
        corr = str(uuid.uuid4())
        waiting = self.bus.observer.expect(corr, [EventType.METADATA_STAMPED.value]) if self.bus else None
        ts = time.time()
        t0 = time.perf_counter()
        acked = False
        try:  # the ledger row is written even when the run stops mid-request (stored later = recovered)
            with self.client.post(f"{self.base}/stamp", name="POST /stamp", catch_response=True,
                                  json={"content": content, "content_type": "text/plain",
                                        "namespace": self.run.namespace},
                                  headers={"X-Correlation-ID": corr},
                                  context=self.sample_context(ts, corr, ts_intended)) as resp:
                if resp.status_code not in (200, 201):
                    resp.failure(f"status {resp.status_code}: {(resp.text or '')[:200]}")
                else:
                    try:
                        body = resp.json()
                    except Exception:  # noqa: BLE001
                        body = {}
                    if body.get("file_hash") != digest:
                        resp.failure(f"hash mismatch: node {body.get('file_hash')!r}, BLAKE3 {digest!r}")
                    else:
                        acked = True
                        resp.success()
        finally:
            self.ledger("stamp", digest, ts, acked)
        if acked:
            self.hashes.append(digest)
            del self.hashes[:-100]
        if waiting is not None:
            self.follow_e2e(self.bus, waiting, corr, "stamp→stamped", ts, t0, ts_intended, self.e2e_timeout_s,
                            error=None if acked else "stamp not acknowledged")

    @task(1)
    def query(self) -> None:
        if not self.hashes:
            return
        ts_intended = self.intended()
        digest = random.choice(self.hashes)
        with self.client.get(f"{self.base}/stamp/{digest}", params={"namespace": self.run.namespace},
                             name="GET /stamp/{hash}", catch_response=True,
                             context=self.sample_context(time.time(), digest, ts_intended)) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}")
            else:
                try:
                    got = resp.json().get("file_hash")
                except Exception:  # noqa: BLE001
                    got = None
                if got != digest:
                    resp.failure(f"hash mismatch: asked {digest}, got {got}")
                else:
                    resp.success()
