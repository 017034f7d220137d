"""The catalogue of bad messages: seeded mutations of one real message, by class.

A consumer meets garbage in a few recognisable shapes, and each shape broke
some consumer once (nodes/consumer.py's docstring; issue notes): bytes that
are not JSON, JSON that is not an object, a field dropped or of the wrong
type, a value far larger than the schema meant, nesting deeper than a
parser or encoder goes, strings a database refuses (a NUL) or that are
awkward everywhere else (lone surrogates, direction overrides, BOMs), and
numbers past every integer column, and events that arrive after newer ones
of their entity (a stale sequence, a repeated one with a new id, an older
timestamp). `bad_messages(template, seed)` turns one
real message (the bytes of a JSON object, as the system's adapter builds
it) into a list of such messages, the same list for the same seed.

Why our own: fuzzers such as Hypothesis generate values from a strategy,
not mutations of one given document, and a run must be able to say exactly
what it injected (the class and name of each message, journaled); the list
below is short enough to read.

Every mutation that is still a JSON object gets a fresh `event_id` (when the
template has one) unless it is a `duplicate`, so a consumer's de-duplication
cannot hide it: each one must be dead-lettered or applied on its own.
"""
from __future__ import annotations

import json
import random
import re
import uuid
from datetime import datetime, timedelta
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Callable

# the classes, in the order they are generated; a threshold or an experiment names them
CLASSES = ("malformed", "not-object", "missing-field", "wrong-type", "huge", "deep", "unicode", "number",
           "duplicate", "out-of-order")

# strings that broke, or could break, some layer between the bus and a store
AWKWARD_STRINGS = {
    "nul": "a\u0000b",
    "only-nul": "\u0000",
    "lone-high-surrogate": "\ud800",
    "lone-low-surrogate": "x\udfffy",
    "bom": "\ufeffvalue",
    "rtl-override": "abc\u202edef",
    "zero-width": "a\u200b\u200c\u200db",
    "line-separator": "a\u2028b\u2029c",
    "combining": "e" + "\u0301" * 200,
    "emoji": "\U0001f4a5\U0001f9ea\U0001f468\u200d\U0001f469\u200d\U0001f467",
    "control": "".join(chr(c) for c in range(1, 32)),
    "sql": "'; DROP TABLE dead_letters; --",
    "percent": "%s %n %x {0} ${x}",
    "empty": "",
}
# raw bytes no JSON parser should accept
MALFORMED = {
    "empty-bytes": b"",
    "not-json": b"\xff\xfe not json at all",
    "overlong-utf8": b'{"event_id": "\xc0\xaf"}',
    "truncated": None,  # the template cut in half, filled in below
    "trailing-garbage": None,
    "nan": b'{"value": NaN}',
    "tombstone": None,  # a null value (a Kafka tombstone)
}
NOT_OBJECT = {"array": [], "string": "event", "number": 42, "null": None, "true": True,
              "nested-array": [{"event_id": "x"}]}
# fields that order an entity's events: an integer sequence, or a timestamp
SEQUENCE_FIELD = re.compile(r"(^|_)(seq|sequence|version|revision|generation|offset)$")
TIMESTAMP_FIELD = re.compile(r"(^|_)(timestamp|time|ts)$|_at$")
STALE_STEPS = 3
OLDER_BY = {"1s": timedelta(seconds=1), "1h": timedelta(hours=1), "1d": timedelta(days=1)}
NUMBERS = {"int64-overflow": 2 ** 64, "int32-overflow": 2 ** 40, "negative": -(2 ** 63), "float": 1.5e308,
           "tiny": 5e-324, "minus-zero": -0.0}


@dataclass(frozen=True)
class BadMessage:
    """One message of the catalogue: its class, its name within the class, and its bytes (None: tombstone)."""

    cls: str
    name: str
    value: bytes | None

    @property
    def label(self) -> str:
        return f"{self.cls}:{self.name}"


def bad_messages(template: bytes, seed: int = 0, *, classes: Collection[str] | None = None,
                 huge_bytes: int = 256 * 1024) -> list[BadMessage]:
    """The catalogue's messages made from ``template`` (a JSON object), for the ``classes`` asked (all by default)."""
    unknown = sorted(set(classes or ()) - set(CLASSES))
    if unknown:
        raise ValueError(f"unknown message class(es) {', '.join(unknown)} (known: {', '.join(CLASSES)})")
    doc = json.loads(template)
    if not isinstance(doc, dict):
        raise ValueError("the template must be a JSON object")
    rng = random.Random(seed)
    maker = _Maker(doc, rng, huge_bytes)
    out: list[BadMessage] = []
    for cls in CLASSES:
        if classes is None or cls in classes:
            out.extend(BadMessage(cls, name, value) for name, value in _GENERATORS[cls](maker, template))
    return out


class _Maker:
    """Copies of the template with one thing changed, each with a fresh event_id."""

    def __init__(self, doc: dict[str, Any], rng: random.Random, huge_bytes: int):
        self.doc, self.rng, self.huge_bytes = doc, rng, huge_bytes

    def copy(self) -> dict[str, Any]:
        out = json.loads(json.dumps(self.doc))
        if "event_id" in out:
            out["event_id"] = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        return out

    def paths(self) -> list[tuple[str, ...]]:
        """Every field of the template, top level and one level into objects (e.g. payload.node_id)."""
        out: list[tuple[str, ...]] = []
        for key, value in self.doc.items():
            out.append((key,))
            if isinstance(value, dict):
                out.extend((key, inner) for inner in value)
        return out

    def strings(self) -> list[tuple[str, ...]]:
        return [p for p in self.paths() if isinstance(_get(self.doc, p), str)]

    def with_value(self, path: tuple[str, ...], value: Any) -> bytes:
        doc = self.copy()
        _set(doc, path, value)
        return _dumps(doc)


def _get(doc: dict, path: tuple[str, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def _set(doc: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


def _dumps(doc: Any) -> bytes:
    # ensure_ascii keeps lone surrogates writable (as \\ud800 escapes, as another producer would send them)
    return json.dumps(doc, ensure_ascii=True).encode()


def _malformed(m: _Maker, template: bytes):
    for name, value in MALFORMED.items():
        if name == "truncated":
            value = template[: len(template) // 2]
        elif name == "trailing-garbage":
            value = template + b"}{garbage"
        yield name, value


def _not_object(m: _Maker, template: bytes):
    for name, value in NOT_OBJECT.items():
        yield name, _dumps(value)


def _missing_field(m: _Maker, template: bytes):
    for path in m.paths():
        doc = m.copy()
        del _get(doc, path[:-1])[path[-1]]
        yield "-".join(path), _dumps(doc)


_SWAPS: dict[str, Any] = {"int": 7, "string": "7", "list": [1, "a"], "object": {"a": 1}, "null": None, "bool": False}


def _wrong_type(m: _Maker, template: bytes):
    for path in m.paths():
        current = type(_get(m.doc, path)).__name__
        choices = [name for name in _SWAPS if name != {"str": "string", "dict": "object"}.get(current, current)]
        swap = m.rng.choice(choices)
        yield f"{'.'.join(path)}={swap}", m.with_value(path, _SWAPS[swap])


def _huge(m: _Maker, template: bytes):
    for path in m.strings()[:3]:
        yield f"{'.'.join(path)}-string", m.with_value(path, "x" * m.huge_bytes)
    target = ("payload",) if isinstance(m.doc.get("payload"), dict) else None
    if target:
        doc = m.copy()
        doc["payload"]["many_keys"] = {f"k{i}": i for i in range(m.huge_bytes // 16)}
        yield "payload-many-keys", _dumps(doc)
        doc = m.copy()
        doc["payload"]["long_list"] = list(range(m.huge_bytes // 8))
        yield "payload-long-list", _dumps(doc)


def _deep(m: _Maker, template: bytes):
    for depth in (64, 300, 5000):
        nested: Any = {}
        for _ in range(depth):
            nested = {"x": nested}
        doc = m.copy()
        key = "payload" if isinstance(doc.get("payload"), dict) else next(iter(doc), "x")
        if isinstance(doc.get(key), dict):
            doc[key]["nested"] = nested
        else:
            doc[key] = nested
        yield f"depth-{depth}", _deep_dumps(doc)
    yield "arrays-100000", b'{"payload": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


def _deep_dumps(doc: Any) -> bytes:
    """json.dumps without its recursion limit: nesting is written out iteratively."""
    try:
        return _dumps(doc)
    except RecursionError:
        pass
    parts: list[str] = []
    stack: list[Any] = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, _Raw):
            parts.append(item.text)
        elif isinstance(item, dict):
            parts.append("{")
            entries = list(item.items())
            stack.append(_Raw("}"))
            for i, (k, v) in enumerate(reversed(entries)):
                stack.append(v)
                stack.append(_Raw(json.dumps(k) + ":"))
                if i < len(entries) - 1:
                    stack.append(_Raw(","))
        else:
            parts.append(json.dumps(item, ensure_ascii=True))
    return "".join(parts).encode()


@dataclass(frozen=True)
class _Raw:
    text: str


def _unicode(m: _Maker, template: bytes):
    strings = m.strings()
    for name, text in AWKWARD_STRINGS.items():
        if not strings:
            break
        path = strings[m.rng.randrange(len(strings))]
        yield f"{'.'.join(path)}:{name}", m.with_value(path, text)
    doc = m.copy()
    if isinstance(doc.get("payload"), dict):
        doc["payload"]["\u0000key"] = "nul in a key"
        yield "payload-nul-key", _dumps(doc)


def _number(m: _Maker, template: bytes):
    target = ("payload",) if isinstance(m.doc.get("payload"), dict) else ()
    numeric = [p for p in m.paths() if isinstance(_get(m.doc, p), (int, float)) and not isinstance(_get(m.doc, p), bool)]
    for name, number in NUMBERS.items():
        path = numeric[m.rng.randrange(len(numeric))] if numeric else (*target, "number")
        yield f"{'.'.join(path)}:{name}", m.with_value(path, number)
    doc = m.copy()
    yield "huge-literal", _dumps(doc)[:-1] + b', "big": ' + b"9" * 5000 + b"}"


def _duplicate(m: _Maker, template: bytes):
    yield "verbatim", template


def _out_of_order(m: _Maker, template: bytes):
    """Events of the template's entity that come after it though they are older, newest first.

    Older, never newer: one that is applied must leave the entity as the template left it, so a
    consumer that keeps the latest state by sequence or time applies them all correctly.
    """
    for path in m.paths():
        value, name = _get(m.doc, path), ".".join(path)
        if SEQUENCE_FIELD.search(path[-1]) and isinstance(value, int) and not isinstance(value, bool):
            for step in range(1, STALE_STEPS + 1):
                if value - step >= 0:
                    yield f"{name}:older-{step}", m.with_value(path, value - step)
            yield f"{name}:repeated", m.with_value(path, value)  # the same position again, under a new event id
        elif TIMESTAMP_FIELD.search(path[-1]) and isinstance(value, str):
            try:
                when = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            for label, delta in OLDER_BY.items():
                older = (when - delta).isoformat()
                yield f"{name}:older-{label}", m.with_value(path, older.replace("+00:00", "Z")
                                                                 if value.endswith("Z") else older)


_GENERATORS: dict[str, Callable[[_Maker, bytes], Any]] = {
    "malformed": _malformed, "not-object": _not_object, "missing-field": _missing_field,
    "wrong-type": _wrong_type, "huge": _huge, "deep": _deep, "unicode": _unicode, "number": _number,
    "duplicate": _duplicate, "out-of-order": _out_of_order,
}
