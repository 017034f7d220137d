"""Web UI tabs (placeholder until the Chaos and Thresholds tabs are built)."""
from __future__ import annotations

from typing import Any


def install(environment: Any, state: Any) -> None:
    return None
