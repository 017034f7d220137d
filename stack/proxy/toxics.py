"""Toxiproxy toxics: their attributes, JSON shape and per-connection behaviour.

A `ToxicSpec` is what the API stores and shows (`name`, `type`, `stream`,
`toxicity`, `attributes`). Each live link (one direction of one connection)
runs a `ToxicState` of it: the state holds per-connection data (bytes sent
for `limit_data`, the pacing clock for `bandwidth`) and transforms the chunks
that flow through. Semantics follow Toxiproxy's documentation and source:

- latency: each chunk is delayed `latency` +/- `jitter` ms from when it was read
- bandwidth: `rate` KB/s (1 KB = 1000 bytes), sent in 100 ms slices
- slow_close: data flows, the close is delayed by `delay` ms
- timeout: data is dropped; the connection closes after `timeout` ms
  (0 = never); removing the toxic closes the connection, as Toxiproxy does,
  because the dropped bytes left the stream broken
- reset_peer: on the first data, wait `timeout` ms, then close with RST
- slicer: chunks cut into `average_size` +/- `size_variation` bytes with
  `delay` microseconds between slices
- limit_data: the connection closes once `bytes` bytes went through (per
  connection, per direction)

A state removed while it holds data hands that data on at once, as
Toxiproxy does on interrupt ("don't drop any data on the floor").
"""
from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import AsyncIterator, Protocol

STREAMS = ("upstream", "downstream")

# type -> attribute names with their defaults (all integers, as in Toxiproxy)
TOXIC_ATTRIBUTES: dict[str, dict[str, int]] = {
    "latency": {"latency": 0, "jitter": 0},
    "bandwidth": {"rate": 0},
    "slow_close": {"delay": 0},
    "timeout": {"timeout": 0},
    "reset_peer": {"timeout": 0},
    "slicer": {"average_size": 0, "size_variation": 0, "delay": 0},
    "limit_data": {"bytes": 0},
}


class ToxicError(ValueError):
    """A toxic definition the API must refuse; carries the HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Chunk:
    """Bytes read from one side, with the loop time they were read at."""

    data: bytes
    ts: float


EOF = None  # the end-of-stream marker that travels through a toxic chain


def parse_attributes(toxic_type: str, given: object, base: dict[str, int] | None = None) -> dict[str, int]:
    """Validate attributes for a type; unknown keys are ignored, as Go's JSON decoder does."""
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise ToxicError("bad request body: attributes must be an object")
    result = dict(base if base is not None else TOXIC_ATTRIBUTES[toxic_type])
    for key in TOXIC_ATTRIBUTES[toxic_type]:
        if key not in given:
            continue
        value = given[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ToxicError(f"bad request body: attribute {key!r} of {toxic_type} must be an integer, got {value!r}")
        result[key] = int(value)
    return result


@dataclass
class ToxicSpec:
    """A toxic as the API knows it. `version` changes on every update."""

    name: str
    type: str
    stream: str = "downstream"
    toxicity: float = 1.0
    attributes: dict[str, int] = field(default_factory=dict)
    version: int = 0

    @staticmethod
    def from_json(body: object) -> "ToxicSpec":
        if not isinstance(body, dict):
            raise ToxicError("bad request body: expected a JSON object")
        stream = body.get("stream") or "downstream"
        if stream not in STREAMS:
            raise ToxicError("stream was invalid, can be either upstream or downstream")
        toxic_type = body.get("type")
        if toxic_type not in TOXIC_ATTRIBUTES:
            raise ToxicError("invalid toxic type")
        name = body.get("name") or f"{toxic_type}_{stream}"
        if not isinstance(name, str):
            raise ToxicError("bad request body: name must be a string")
        toxicity = _toxicity(body.get("toxicity", 1.0))
        attributes = parse_attributes(toxic_type, body.get("attributes"))
        return ToxicSpec(name=name, type=toxic_type, stream=stream, toxicity=toxicity, attributes=attributes)

    def update(self, body: object) -> None:
        """Apply a PATCH: attributes merge onto the current ones; toxicity replaces."""
        if not isinstance(body, dict):
            raise ToxicError("bad request body: expected a JSON object")
        attributes = parse_attributes(self.type, body.get("attributes"), base=self.attributes)
        toxicity = _toxicity(body.get("toxicity", self.toxicity))
        self.attributes, self.toxicity = attributes, toxicity
        self.version += 1

    def to_json(self) -> dict:
        return {
            "attributes": dict(self.attributes),
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
        }


def _toxicity(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ToxicError(f"bad request body: toxicity must be a number, got {value!r}")
    return float(value)


class ToxicState(Protocol):
    """One toxic running on one link."""

    spec: ToxicSpec
    removed: bool

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def handle(self, item: Chunk | None) -> AsyncIterator[Chunk | None]: ...


class Closable(Protocol):
    """What a toxic may do to its connection: close it, or reset it (RST)."""

    def close(self) -> None: ...

    def reset(self) -> None: ...


class LinkControl(Protocol):
    """What a toxic sees of the link it runs on (``stack.proxy.wire.Link`` is one)."""

    loop: asyncio.AbstractEventLoop
    connection: Closable

    def now(self) -> float: ...

    async def sleep_until(self, deadline: float, state: "_State") -> None: ...

    async def flush_and_close(self) -> None: ...


class _State:
    """Common parts: the spec, the link, and whether the toxic was removed."""

    def __init__(self, spec: ToxicSpec, link: LinkControl):
        self.spec = spec
        self.link = link
        self.removed = False

    @property
    def attrs(self) -> dict[str, int]:
        return self.spec.attributes

    def start(self) -> None:
        """Called when the toxic starts acting on the link."""

    def stop(self) -> None:
        """Called when the toxic is removed from the link."""
        self.removed = True

    def restart(self) -> None:
        """Called when the toxic is updated (Toxiproxy restarts it)."""

    async def handle(self, item: Chunk | None) -> AsyncIterator[Chunk | None]:
        yield item


class Latency(_State):
    async def handle(self, item):
        if item is not None and not self.removed:
            latency, jitter = self.attrs["latency"], self.attrs["jitter"]
            delay = latency + (random.uniform(-jitter, jitter) if jitter > 0 else 0.0)
            await self.link.sleep_until(item.ts + delay / 1000.0, self)
        yield item


class Bandwidth(_State):
    def __init__(self, spec, link):
        super().__init__(spec, link)
        self.clock = 0.0  # loop time when the link is free to send again

    async def handle(self, item):
        rate = self.attrs["rate"]
        if item is None or rate <= 0 or self.removed:
            yield item
            return
        bytes_per_s = rate * 1000.0
        piece = max(1, rate * 100)  # 100 ms worth, as Toxiproxy slices
        data = item.data
        for start in range(0, len(data), piece):
            part = data[start:start + piece]
            if not self.removed:
                self.clock = max(self.clock, self.link.now()) + len(part) / bytes_per_s
                await self.link.sleep_until(self.clock, self)
            yield Chunk(part, item.ts)


class SlowClose(_State):
    async def handle(self, item):
        if item is None and not self.removed:
            await self.link.sleep_until(self.link.now() + self.attrs["delay"] / 1000.0, self)
        yield item


class Timeout(_State):
    def __init__(self, spec, link):
        super().__init__(spec, link)
        self._timer = None

    def start(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        timeout = self.attrs["timeout"]
        if timeout > 0:
            self._timer = self.link.loop.call_later(timeout / 1000.0, self.link.connection.close)

    def restart(self) -> None:
        self.start()

    def stop(self) -> None:
        super().stop()
        if self._timer is not None:
            self._timer.cancel()
        # Toxiproxy's Cleanup closes the link: the bytes it dropped broke the stream.
        self.link.connection.close()

    async def handle(self, item):
        if self.removed:
            yield item
            return
        if item is None:
            self.link.connection.close()
        return
        yield  # pragma: no cover - makes this an async generator


class ResetPeer(_State):
    async def handle(self, item):
        if self.removed:
            yield item
            return
        await self.link.sleep_until(self.link.now() + self.attrs["timeout"] / 1000.0, self)
        if self.removed:
            yield item
            return
        self.link.connection.reset()


class Slicer(_State):
    def _cuts(self, start: int, end: int) -> list[int]:
        """Offsets that cut [start, end) into evenly varying slices (Toxiproxy's recursion)."""
        average, variation = self.attrs["average_size"], self.attrs["size_variation"]
        if average <= 0:
            return [start, end]
        stack, cuts = [(start, end)], []
        while stack:
            lo, hi = stack.pop()
            if (hi - lo) - average <= variation:
                cuts.append((lo, hi))
                continue
            mid = lo + (hi - lo) // 2 + (random.randint(-variation, variation - 1) if variation > 0 else 0)
            mid = min(max(mid, lo + 1), hi - 1)
            stack.append((mid, hi))
            stack.append((lo, mid))
        return [edge for cut in cuts for edge in cut]

    async def handle(self, item):
        if item is None or self.removed:
            yield item
            return
        cuts = self._cuts(0, len(item.data))
        delay_s = self.attrs["delay"] / 1_000_000.0
        for i in range(0, len(cuts), 2):
            if self.removed:
                yield Chunk(item.data[cuts[i]:], item.ts)
                return
            yield Chunk(item.data[cuts[i]:cuts[i + 1]], item.ts)
            if delay_s > 0 and i + 2 < len(cuts):
                await self.link.sleep_until(self.link.now() + delay_s, self)


class LimitData(_State):
    def __init__(self, spec, link):
        super().__init__(spec, link)
        self.sent = 0

    async def handle(self, item):
        if item is None or self.removed:
            yield item
            return
        remaining = max(0, self.attrs["bytes"] - self.sent)
        data = item.data[:remaining]
        if data:
            self.sent += len(data)
            yield Chunk(data, item.ts)
        if self.attrs["bytes"] - self.sent <= 0:
            await self.link.flush_and_close()


STATE_CLASSES: dict[str, type[_State]] = {
    "latency": Latency,
    "bandwidth": Bandwidth,
    "slow_close": SlowClose,
    "timeout": Timeout,
    "reset_peer": ResetPeer,
    "slicer": Slicer,
    "limit_data": LimitData,
}


def new_state(spec: ToxicSpec, link: LinkControl) -> _State:
    return STATE_CLASSES[spec.type](spec, link)
