"""Shared test fixtures: the real embedded stack, started once per session.

In CI (`CI=true`) a skipped test is a failure: every test here needs real
infrastructure and must run, not skip.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which counts as a failure: {reason}"


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """The embedded stack (broker, PostgreSQL, Redis, every node) with fast heartbeats; stopped after the session."""
    from stack.embedded import StackOptions, down, up

    state_path = str(tmp_path_factory.mktemp("stack") / "stack.json")
    state = up(StackOptions(state_path=state_path, heartbeat_interval_s=1.0))
    state.extra_state_path = state_path  # type: ignore[attr-defined]
    try:
        yield state
    finally:
        down(state_path)


@pytest.fixture(scope="session")
def stack_state_path(stack) -> str:
    return stack.extra_state_path


@pytest.fixture(scope="session")
def project_root() -> Path:
    return Path(__file__).resolve().parents[1]
