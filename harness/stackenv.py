"""Where the stack is: environment variables first, else the stack's state file.

Every process reads this when it joins the run, so a worker finds the same
stack as its master (an embedded stack's state file is passed to workers
through Locust's custom options). Which variables count: the harness's own
(broker, database, Toxiproxy) and the adapter's ``env_keys``.
"""
from __future__ import annotations

import os
from collections.abc import Iterable

from stack.state import StateFile

KEYS = ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "TOXIPROXY_URL")


def stack_env(state_path: str | None = None, keys: Iterable[str] = ()) -> dict[str, str]:
    """The stack's addresses: the state file's env, overridden by the same names set in the environment."""
    env: dict[str, str] = {}
    sf = StateFile(state_path)
    if sf.exists():
        env.update(sf.read().env)
    for k in (*KEYS, *keys):
        if os.environ.get(k):
            env[k] = os.environ[k]
    return env


def require(env: dict[str, str], key: str) -> str:
    if not env.get(key):
        raise RuntimeError(f"{key} is unknown: start the stack (`python -m stack up`, or --stack embedded) "
                           "or set it in the environment")
    return env[key]
