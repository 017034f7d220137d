"""PostgreSQL access on asyncpg: a pool that waits for the server, and versioned migrations.

Migrations are the numbered `.sql` files in `nodes/migrations/`, applied in
order at node start. Several nodes start at once against one database, so the
runner takes a transaction-scoped advisory lock and each file is applied in
its own transaction, recorded in `schema_migrations`.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import asyncpg

from nodes.config import mask_url

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_MIGRATION_LOCK_ID = 0x6272_6964  # "brid"


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _reset_connection(conn: asyncpg.Connection) -> None:
    """Make a released connection safe for the next user, without a round trip when it already is.

    asyncpg's default reset runs `SELECT pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL;` on every release: one server round trip per
    acquire, for session state the nodes never create (no LISTEN, no SET, only
    transaction-scoped locks). An abandoned transaction is still rolled back.
    """
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def create_pool(url: str, *, min_size: int = 2, max_size: int = 10, wait_s: float = 30.0) -> asyncpg.Pool:
    """A connection pool; retries until the server answers or `wait_s` has passed."""
    deadline = time.monotonic() + wait_s
    delay = 0.1
    while True:
        try:
            return await asyncpg.create_pool(
                url, min_size=min_size, max_size=max_size, init=_init_connection, reset=_reset_connection,
                command_timeout=30,
            )
        except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise ConnectionError(f"PostgreSQL at {mask_url(url)} did not answer within {wait_s:.0f}s: {exc}")
            log.info("waiting for PostgreSQL at %s: %s", mask_url(url), exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


def migration_files() -> list[tuple[int, Path]]:
    files = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        version = int(path.name.split("_", 1)[0])
        files.append((version, path))
    return files


async def migrate(pool: asyncpg.Pool) -> list[int]:
    """Apply the migrations not applied yet; returns the versions applied now."""
    applied_now: list[int] = []
    async with pool.acquire() as conn:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK_ID)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for version, path in migration_files():
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(path.read_text())
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, path.name
                    )
                applied_now.append(version)
    if applied_now:
        log.info("applied migrations %s", applied_now)
    return applied_now
