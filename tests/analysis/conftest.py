"""Fixtures for the analysis tests: generated run directories with known answers (see rungen.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import rungen

from analysis.analyse import Analysis, analyse


@pytest.fixture(scope="session")
def chaos_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The known-answer run; read-only for tests (copy it to damage it)."""
    return rungen.make_chaos_run(tmp_path_factory.mktemp("runs") / "chaos")


@pytest.fixture(scope="session")
def chaos_analysis(chaos_run: Path) -> Analysis:
    return analyse(chaos_run)
