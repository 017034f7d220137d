"""Passwords and secret-looking values masked, for run.json, logs and reports.

A URL's password (``postgresql://user:pw@host``) is replaced wherever a URL
appears in a text; a mapping's values under keys that look like secrets
(password, token, api_key, ...) are replaced whole.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# scheme://user:password@ -> scheme://user:***@, wherever a URL appears in a text
# (the scheme starts where no scheme character is before it, and is matched possessively: a search stays
# linear in a long run of letters, which once took 130 s over a 256 KiB value in a journal line)
_URL_PASSWORD = re.compile(r"(?P<head>(?<![a-zA-Z0-9+.\-])[a-zA-Z][a-zA-Z0-9+.\-]*+://[^:/@\s]*+:)(?P<pw>[^@\s/]*+)(?P<at>@)")
_SECRET_KEY = re.compile(r"(password|passwd|secret|token|api[_-]?key)", re.IGNORECASE)


def mask_url(text: str) -> str:
    """Passwords in URLs replaced by ``***`` (a URL alone, or URLs inside a text)."""
    if "://" not in text or "@" not in text:
        return text
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}***{m['at']}", text)


def mask_secrets(value: Any) -> Any:
    """Mask passwords in URLs, and the values of keys that look like secrets, recursively."""
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, Mapping):
        return {
            k: ("***" if isinstance(k, str) and _SECRET_KEY.search(k) and v not in (None, "") else mask_secrets(v))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [mask_secrets(v) for v in value]
    return value
