"""The Locust side of benchmarks/arrival_accuracy.py: open-model users against a trivial HTTP server.

The server (``TARGET_URL``) answers at once, so what is measured is the
generator: how close to the offered rate it starts requests, and how late.
"""
import sys
import time
from pathlib import Path

from locust import FastHttpUser, task

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.adapter import SystemAdapter  # noqa: E402
from harness.arrivals import arrivals  # noqa: E402
from harness.lifecycle import install  # noqa: E402
from harness.users import RunMixin  # noqa: E402


class TrivialTarget(SystemAdapter):
    name = "trivial-http"
    env_keys = ("TARGET_URL",)


install(TrivialTarget())


class ArrivalUser(RunMixin, FastHttpUser):
    wait_time = arrivals
    host = "http://127.0.0.1"

    def on_start(self) -> None:
        self.run_start()
        self.base = self.service_url("TARGET_URL")

    def on_stop(self) -> None:
        self.run_stop()

    @task
    def get(self) -> None:
        ts_intended = self.intended()
        self.client.get(f"{self.base}/", name="GET /", context=self.sample_context(time.time(), None, ts_intended))
