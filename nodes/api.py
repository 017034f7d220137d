"""The response shape of the integration services (hook receiver, service registry, tool proxy).

Seed 004 fixes it: `{"success": true, "data": {...}}`, or `{"success": false,
"error": "..."}` with 400 (not JSON, not an object) or 422 (a field is wrong,
and the message names it). The older nodes answer `{"error", "status"}`;
their clients already depend on that, so each keeps its own.
"""
from __future__ import annotations

import json
from typing import Any

from aiohttp import web


def success(data: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response({"success": True, "data": data}, status=status)


def failure(status: int, error: str, **extra: Any) -> web.Response:
    return web.json_response({"success": False, "error": error, **extra}, status=status)


class BadRequest(Exception):
    """Raised by a handler's validation; `respond` turns it into the failure response."""

    def __init__(self, error: str, status: int = 422):
        super().__init__(error)
        self.status = status


async def read_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object, or BadRequest(400, or 413 over the size limit) saying what is wrong with it."""
    try:
        return await parse_object(request)
    except web.HTTPRequestEntityTooLarge as exc:
        raise BadRequest(f"body too large: {exc.text}", 413) from None


async def parse_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object, or BadRequest(400); a body over the limit raises aiohttp's own 413.

    Every node reads bodies with this (the older nodes through nodes.service.read_json_object).
    Python's JSON reader also fails outside JSONDecodeError: RecursionError for
    nesting deeper than its stack, ValueError for an integer of more than 4300
    digits; both are a bad body, not a server error.
    """
    try:
        body = await request.json()
    except RecursionError:
        raise BadRequest("body is not valid JSON: nested too deeply", 400) from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise BadRequest(f"body is not valid JSON: {exc}", 400) from None
    if not isinstance(body, dict):
        raise BadRequest(f"body must be a JSON object, not {type(body).__name__}", 400)
    return body


def field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], *, required: bool = True,
          default: Any = None, where: str = "") -> Any:
    """`body[name]` if it has the right type; BadRequest(422) naming the field otherwise."""
    label = f"{where}.{name}" if where else name
    if name not in body or body[name] is None:
        if required:
            raise BadRequest(f"field '{label}' is required")
        return default
    value = body[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:  # True is an int to Python, not to a JSON schema
        raise BadRequest(f"field '{label}' must be {_names(kinds)}, not a boolean")
    if not isinstance(value, kinds):
        raise BadRequest(f"field '{label}' must be {_names(kinds)}, not {type(value).__name__}")
    if isinstance(value, str) and not value:
        raise BadRequest(f"field '{label}' must not be empty")
    return value


def _names(kinds: tuple[type, ...]) -> str:
    words = {str: "a string", int: "a whole number", float: "a number", bool: "true or false",
             dict: "an object", list: "a list"}
    return " or ".join(words.get(k, k.__name__) for k in kinds)


@web.middleware
async def respond(request: web.Request, handler):
    """A BadRequest raised anywhere in a handler becomes its 400/422 failure response."""
    try:
        return await handler(request)
    except BadRequest as exc:
        return failure(exc.status, str(exc))
