"""Why a batch failed, in the three classes a consumer treats differently.

- ``TRANSIENT``: the store or the network is in trouble (connection lost or
  refused, a timeout, the server restarting or out of resources, a
  serialization failure or deadlock). Nothing is wrong with the messages:
  retry the same batch, with backoff and jitter, for as long as it lasts.
- ``REFUSED``: the store refused what a message contains (PostgreSQL's data
  exceptions, class 22, e.g. a ``\\u0000`` in a JSON string; constraint
  violations, class 23; limits, class 54, e.g. a value too large for an
  index; an argument asyncpg cannot encode). Retrying cannot help: isolate
  the message and dead-letter it with the database's error.
  A handler says the same of a message it cannot apply by raising
  ``Unprocessable`` (e.g. a workflow event without a usable workflow id).
- ``HANDLER``: anything else, i.e. a bug in the node's code met by some
  message (a ``KeyError``, a ``TypeError``, an SQL error of the node's own
  making). It may be a passing condition, so it gets a few retries, then
  the message is dead-lettered with the attempt count.

The SQLSTATE classes are PostgreSQL's (Appendix A of its manual); asyncpg
exposes them as ``exc.sqlstate``.
"""
from __future__ import annotations

import asyncio

import asyncpg

TRANSIENT = "transient"
REFUSED = "refused"
HANDLER = "handler"

_TRANSIENT_SQLSTATE_CLASSES = {"08", "40", "53", "57", "58"}
_REFUSED_SQLSTATE_CLASSES = {"22", "23", "54"}


class Unprocessable(Exception):
    """Raised by a handler for a message it can never apply: dead-letter it at once, with this reason."""


def classify(exc: BaseException) -> str:
    """TRANSIENT, REFUSED or HANDLER for an exception a batch's transaction raised."""
    if isinstance(exc, Unprocessable):
        return REFUSED
    if isinstance(exc, (OSError, asyncio.TimeoutError, ConnectionError)):
        return TRANSIENT
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = getattr(exc, "sqlstate", None) or ""
        if sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES:
            return TRANSIENT
        if sqlstate[:2] in _REFUSED_SQLSTATE_CLASSES:
            return REFUSED
        return HANDLER
    if isinstance(exc, asyncpg.InterfaceError):
        if isinstance(exc, ValueError):  # asyncpg's own DataError: an argument it cannot encode
            return REFUSED
        return TRANSIENT  # "connection is closed", "another operation is in progress" after a lost connection
    return HANDLER


def describe(exc: BaseException) -> str:
    """One line for logs and the dead-letter row: the type, the SQLSTATE when there is one, the message."""
    sqlstate = getattr(exc, "sqlstate", None)
    text = str(exc).replace("\x00", "\\0").splitlines()[0] if str(exc) else ""
    head = f"{type(exc).__name__}" + (f" [{sqlstate}]" if sqlstate else "")
    return f"{head}: {text}"[:1000] if text else head
