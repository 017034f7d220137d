"""The proxy's data path: proxies, their connections, and the two links (one per direction) of each.

A link with no toxic runs on ``FastPath``: the event loop reads the socket
into a large reused buffer and writes it to the other socket, with no
``bytes`` per chunk and no task. A toxic added to an open connection takes
its link off the fast path at once; the bytes already read go through the
toxic first. Links with toxics go through a pump task (the toxic chain,
``stack/proxy/toxics.py``); in between, bytes are written straight from
``data_received`` to the other transport, with transport flow control both
ways. ``BRIDGESTORM_PROXY_FAST=0`` turns the fast path off (to compare the
paths).
"""
from __future__ import annotations

import asyncio
import collections
import os
import random
import socket
import struct
from typing import Iterable

from stack.proxy.addresses import ApiError, require_loopback, split_address
from stack.proxy.toxics import EOF, Chunk, ToxicSpec, _State, new_state

HIGH_WATER = 1 << 20  # bytes queued in a toxic link before its source stops being read
LOW_WATER = 1 << 18
FAST_BUFFER = 4 << 20  # fast-path read size: measured 256 KiB ~ transport path, 1 MiB better, 4 MiB best
FAST = os.name == "posix" and os.environ.get("BRIDGESTORM_PROXY_FAST", "1") != "0"


class Side(asyncio.Protocol):
    """One socket of a proxied connection (the client's or the upstream's)."""

    def __init__(self, connection: "Connection"):
        self.connection = connection
        self.transport: asyncio.Transport | None = None
        self.out_link: Link | None = None  # link reading from this side
        self.in_link: Link | None = None  # link writing to this side
        self.lost = False

    def connection_made(self, transport):  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.out_link.feed(data)

    def eof_received(self) -> bool:
        self.out_link.feed_eof()
        return True  # keep the write half open until the other way ends

    def connection_lost(self, exc) -> None:
        self.lost = True
        self.connection.side_lost(self)

    def pause_writing(self) -> None:
        if self.in_link is not None:
            self.in_link.set_dst_paused(True)

    def resume_writing(self) -> None:
        if self.in_link is not None:
            self.in_link.set_dst_paused(False)


class ClientSide(Side):
    """The accepted client socket: holds its bytes until the upstream answers."""

    def __init__(self, connection: "Connection"):
        super().__init__(connection)
        self.early: list[bytes] = []  # read before the upstream connected (uvloop may not pause at once)
        self.early_eof = False

    def connection_made(self, transport):  # type: ignore[override]
        super().connection_made(transport)
        transport.pause_reading()
        self.connection.client = self
        self.connection.proxy.connections.add(self.connection)
        self.connection.task = asyncio.get_running_loop().create_task(self.connection.open())

    def data_received(self, data: bytes) -> None:
        if self.out_link is None:
            self.early.append(data)
        else:
            self.out_link.feed(data)

    def eof_received(self) -> bool:
        if self.out_link is None:
            self.early_eof = True
            return True
        return super().eof_received()

    def linked(self) -> None:
        """The links exist: hand on what arrived early, then read on."""
        for data in self.early:
            self.out_link.feed(data)
        self.early.clear()
        if self.early_eof:
            self.out_link.feed_eof()
        elif not self.lost and self.out_link.fast is None:  # the fast path reads the socket itself
            self.transport.resume_reading()


class BufferPool:
    """Read buffers lent to fast links only while they hold bytes dst has not taken.

    Why a pool: a link whose destination keeps up hands its buffer back after
    every read, so one buffer serves all quiet or keeping-up links, and the
    memory held grows only with links that are actually backed up.
    """

    def __init__(self, size: int = FAST_BUFFER, keep: int = 2):
        self.size, self.keep = size, keep
        self.free: list[bytearray] = []

    def take(self) -> bytearray:
        return self.free.pop() if self.free else bytearray(self.size)

    def give(self, buf: bytearray) -> None:
        if len(self.free) < self.keep:
            self.free.append(buf)


BUFFERS = BufferPool()


def _dup_socket(side: Side) -> int:
    """A duplicate of the side's socket fd: the loop refuses a reader on the transport's own fd."""
    sock = side.transport.get_extra_info("socket") if side.transport is not None else None
    if sock is None:
        raise OSError("no socket behind the transport")
    return os.dup(sock.fileno())


class FastPath:
    """The no-toxic path of one link: read src into a large pooled buffer, write it to dst.

    Why: the transport path costs a fresh `bytes` of at most 256 KiB per read
    (allocation, page faults) plus Python calls per chunk; reading up to
    4 MiB into a reused buffer straight from the socket and writing from it
    halves the proxy's CPU per byte (about 0.5 -> 0.27 s per GB here), and on
    a 2-core machine running client, proxy and server, CPU is the
    throughput. (splice(2) through a pipe was measured too: the proxy spends
    a little less, but the receiving peer spends more on spliced pages, and
    its pipes count against a per-user limit shared with other processes;
    no better overall.)

    It runs on the event loop, reading a dup of the src socket while the src
    transport is paused and writing a dup of the dst socket while the dst
    transport has nothing buffered, so the link can leave it synchronously:
    `stop()` hands back the bytes read and not yet written. It reads only
    when it has written everything read before, and waits for dst to be
    writable when dst is full: that is the flow control.
    """

    def __init__(self, link: "Link"):
        self.link = link
        self.loop = link.loop
        self.src_fd = _dup_socket(link.src)
        try:
            self.dst_fd = _dup_socket(link.dst)
        except OSError:
            os.close(self.src_fd)
            raise
        self.buf: bytearray | None = None  # held only while it has unwritten bytes
        self.start = self.end = 0  # buf[start:end] is read from src, not yet written to dst
        self.eof = False  # src ended; the link ends once everything is written
        self.reading = False
        self.writing = False
        self.closed = False
        self._set(reading=True, writing=False)

    def _set(self, reading: bool, writing: bool) -> None:
        if reading != self.reading:
            if reading:
                self.loop.add_reader(self.src_fd, self._readable)
            else:
                self.loop.remove_reader(self.src_fd)
            self.reading = reading
        if writing != self.writing:
            if writing:
                self.loop.add_writer(self.dst_fd, self._flush)
            else:
                self.loop.remove_writer(self.dst_fd)
            self.writing = writing

    def _readable(self) -> None:
        if self.buf is None:
            self.buf = BUFFERS.take()
        try:
            n = os.readv(self.src_fd, [self.buf])
        except BlockingIOError:
            return
        except OSError:
            self.link.fast_failed(self.link.src)
            return
        if n == 0:
            self.eof = True
        self.start, self.end = 0, n
        self._flush()

    def _flush(self) -> None:
        if self.buf is not None:
            view = memoryview(self.buf)
            try:
                while self.start < self.end:
                    self.start += os.write(self.dst_fd, view[self.start:self.end])
            except BlockingIOError:
                self._set(reading=False, writing=True)
                return
            except OSError:
                self.link.fast_failed(self.link.dst)
                return
            finally:
                view.release()
            BUFFERS.give(self.buf)
            self.buf = None
        if self.eof:
            self._set(reading=False, writing=False)
            self.link.fast_ended()
        else:
            self._set(reading=True, writing=False)

    def stop(self) -> tuple[bytes, bool]:
        """Stop; return the bytes read and not yet written, and whether src had ended."""
        if self.closed:
            return b"", self.eof
        self.closed = True
        self._set(reading=False, writing=False)
        data = b""
        if self.buf is not None:
            data = bytes(memoryview(self.buf)[self.start:self.end])
            BUFFERS.give(self.buf)
            self.buf = None
        os.close(self.src_fd)
        os.close(self.dst_fd)
        return data, self.eof


class Link:
    """One direction of one connection: src -> toxic chain -> dst."""

    def __init__(self, connection: "Connection", stream: str, src: Side, dst: Side):
        self.connection = connection
        self.loop = asyncio.get_running_loop()
        self.stream = stream
        self.src, self.dst = src, dst
        src.out_link, dst.in_link = self, self
        self.states: dict[str, _State | None] = {}  # toxic name -> state (None: not drawn)
        self.chain: list[_State] = []
        self.queue: collections.deque[Chunk | None] = collections.deque()
        self.queued = 0
        self.pumping = False
        self.dst_paused = False
        self.src_paused = False
        self.done = False  # EOF delivered (or the link was cut)
        self.src_ended = False  # the fast path read src's EOF: never read src again
        self.fast: FastPath | None = None
        self.fast_ok = FAST  # False once a fast path could not start here
        self._waiters: set[asyncio.Future] = set()
        self._writable: asyncio.Future | None = None

    # -- toxics
    def add_toxic(self, spec: ToxicSpec, drawn: bool | None = None) -> None:
        """Start a toxic on this link if its toxicity draw says so (once per connection)."""
        if drawn is None:
            drawn = random.random() < spec.toxicity
        if not drawn:
            self.states[spec.name] = None
            return
        state = new_state(spec, self)
        self.states[spec.name] = state
        self.chain.append(state)
        state.start()
        self.leave_fast()

    def remove_toxic(self, name: str) -> None:
        state = self.states.pop(name, None)
        if state is not None:
            self.chain.remove(state)
            state.stop()
            self.wake()

    def update_toxic(self, spec: ToxicSpec) -> None:
        """Toxiproxy restarts a toxic on update, so its toxicity is drawn again."""
        state = self.states.get(spec.name)
        drawn = random.random() < spec.toxicity
        if state is not None and drawn:
            state.restart()
            self.wake()
        elif state is not None:
            self.remove_toxic(spec.name)
            self.states[spec.name] = None
        elif drawn:
            self.add_toxic(spec, drawn=True)

    # -- time
    def now(self) -> float:
        return self.loop.time()

    def wake(self) -> None:
        for waiter in list(self._waiters):
            if not waiter.done():
                waiter.set_result(None)

    async def sleep_until(self, deadline: float, state: _State) -> None:
        """Sleep until `deadline` (loop time); wakes early if the toxic or connection goes."""
        while not state.removed and not self.connection.closed:
            delay = deadline - self.loop.time()
            if delay <= 0:
                return
            waiter = self.loop.create_future()
            self._waiters.add(waiter)
            timer = self.loop.call_later(delay, _resolve, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiters.discard(waiter)

    # -- the fast path
    def try_fast(self) -> None:
        """Hand the link to `FastPath` when no toxic acts and nothing is in flight here or in dst's buffer."""
        if (not self.fast_ok or self.fast is not None or self.chain or self.pumping or self.queue
                or self.done or self.src_ended or self.connection.closed or self.src.lost or self.dst.lost
                or self.dst.transport.get_write_buffer_size()):
            return
        try:
            self.fast = FastPath(self)
        except (OSError, NotImplementedError):  # no fd to dup, or a loop without add_reader
            self.fast_ok = False
            return
        self.src_paused = True
        self.src.transport.pause_reading()

    def leave_fast(self) -> None:
        """Back to the transport path (a toxic arrived): bytes the fast path holds go first."""
        fast, self.fast = self.fast, None
        if fast is None:
            return
        data, eof = fast.stop()
        if data:
            self.queue.append(Chunk(data, self.loop.time()))
            self.queued += len(data)
        if eof:
            self.src_ended = True
            self.queue.append(EOF)
        self._update_src()
        if self.queue:
            self._ensure_pump()

    def drop_fast(self) -> None:
        """Stop the fast path and drop what it holds (the connection is going)."""
        if self.fast is not None:
            self.fast.stop()
            self.fast = None

    def fast_ended(self) -> None:
        """The fast path read src's EOF and wrote everything before it."""
        self.drop_fast()
        self.src_ended = True
        self._deliver_eof()

    def fast_failed(self, side: Side) -> None:
        """A socket error on the fast path: lose that side, as its transport would on the error."""
        self.drop_fast()
        if side.transport is not None:
            side.transport.abort()  # connection_lost -> Connection.side_lost

    # -- flow
    def feed(self, data: bytes) -> None:
        if self.fast is not None:  # a read the transport had under way when it was paused
            self.leave_fast()
        if not self.chain and not self.pumping:
            if not self.done:
                self.dst.transport.write(data)  # no toxic: straight on
                if self.fast_ok and not self.dst.transport.get_write_buffer_size():
                    self.try_fast()
            return
        self.queue.append(Chunk(data, self.loop.time()))
        self.queued += len(data)
        self._update_src()
        self._ensure_pump()

    def feed_eof(self) -> None:
        if self.fast is not None:
            self.leave_fast()
        if not self.chain and not self.pumping:
            self._deliver_eof()
            return
        self.queue.append(EOF)
        self._ensure_pump()

    def set_dst_paused(self, paused: bool) -> None:
        self.dst_paused = paused
        if not paused and self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._update_src()

    def _update_src(self) -> None:
        if self.fast is not None or self.src_ended:
            return  # the fast path reads src (or has read all of it)
        want = self.dst_paused or self.queued > HIGH_WATER or (self.src_paused and self.queued > LOW_WATER)
        if want == self.src_paused or self.src.lost or self.src.transport is None:
            return
        self.src_paused = want
        if want:
            self.src.transport.pause_reading()
        else:
            self.src.transport.resume_reading()

    def _ensure_pump(self) -> None:
        if not self.pumping and not self.connection.closed:
            self.pumping = True
            self.loop.create_task(self._pump())

    async def _pump(self) -> None:
        try:
            while self.queue and not self.connection.closed:
                item = self.queue.popleft()
                if item is not None:
                    self.queued -= len(item.data)
                    self._update_src()
                await self._through(list(self.chain), 0, item)
        finally:
            self.pumping = False
        if not self.chain and not self.queue:
            self.try_fast()

    async def _through(self, chain: list[_State], index: int, item: Chunk | None) -> None:
        if self.connection.closed:
            return
        if index == len(chain):
            await self._emit(item)
            return
        async for out in chain[index].handle(item):
            await self._through(chain, index + 1, out)

    async def _emit(self, item: Chunk | None) -> None:
        if item is None:
            self._deliver_eof()
            return
        while self.dst_paused and not self.connection.closed:
            self._writable = self.loop.create_future()
            await self._writable
        if not self.done and not self.connection.closed:
            self.dst.transport.write(item.data)

    def _deliver_eof(self) -> None:
        if self.done:
            return
        self.done = True
        self.connection.link_done(self)

    async def flush_and_close(self) -> None:
        """Close the connection after what was written so far is sent (limit_data)."""
        self.connection.close()


def _resolve(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Connection:
    """A client connection and its upstream, joined by two links."""

    def __init__(self, proxy: "Proxy"):
        self.proxy = proxy
        self.client: ClientSide | None = None
        self.upstream: Side | None = None
        self.links: dict[str, Link] = {}
        self.closed = False
        self.task: asyncio.Task | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        host, port = split_address(self.proxy.upstream)
        try:
            _, upstream = await loop.create_connection(lambda: Side(self), host, port)
        except OSError:
            self.close()
            return
        if self.closed:
            upstream.transport.close()
            return
        self.upstream = upstream
        self.links = {
            "upstream": Link(self, "upstream", self.client, upstream),
            "downstream": Link(self, "downstream", upstream, self.client),
        }
        for spec in self.proxy.toxics.values():
            self.links[spec.stream].add_toxic(spec)
        self.client.linked()
        for link in self.links.values():
            link.try_fast()

    def link_done(self, link: Link) -> None:
        """A link delivered its EOF: half-close its destination, or close all when both are done."""
        if all(l.done for l in self.links.values()) or link.src.lost:
            self.close()
            return
        self._half_close(link.dst.transport)

    def _half_close(self, transport: asyncio.Transport | None) -> None:
        """write_eof once the transport's buffer is empty (uvloop may drop bytes otherwise)."""
        if transport is None or transport.is_closing() or not transport.can_write_eof():
            return
        if transport.get_write_buffer_size() > 0:
            asyncio.get_running_loop().call_later(0.001, self._half_close, transport)
            return
        transport.write_eof()

    def side_lost(self, side: Side) -> None:
        if self.closed:
            return
        link = side.out_link
        if link is not None and not link.done:
            link.feed_eof()  # hand on what the toxics still hold, then close
        elif link is None:
            self.close()
        if side.in_link is not None:
            side.in_link.done = True
            if all(l.done for l in self.links.values()):
                self.close()

    def _sides(self) -> Iterable[Side]:
        return [s for s in (self.client, self.upstream) if s is not None and s.transport is not None]

    def _finish(self) -> None:
        self.closed = True
        self.proxy.connections.discard(self)
        for link in self.links.values():
            link.drop_fast()
            link.wake()
            if link._writable is not None and not link._writable.done():
                link._writable.set_result(None)
            for state in link.chain:
                state.removed = True

    def close(self) -> None:
        """Close both sockets after their buffered bytes are sent."""
        if self.closed:
            return
        self._finish()
        for side in self._sides():
            side.transport.close()

    def abort(self) -> None:
        """Close both sockets at once, dropping buffered bytes."""
        if self.closed:
            return
        self._finish()
        for side in self._sides():
            side.transport.abort()

    def reset(self) -> None:
        """Close both sockets with TCP RST (SO_LINGER 0), as reset_peer does."""
        if self.closed:
            return
        for side in self._sides():
            sock = side.transport.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
        self.abort()


# ----------------------------------------------------------------- proxies

class Proxy:
    """A named listener that forwards to an upstream through toxics."""

    def __init__(self, name: str, listen: str, upstream: str):
        self.name, self.listen, self.upstream = name, listen, upstream
        self.enabled = False
        self.toxics: dict[str, ToxicSpec] = {}
        self.connections: set[Connection] = set()
        self._server: asyncio.Server | None = None

    def to_json(self, with_toxics: bool = True) -> dict:
        data = {"name": self.name, "listen": self.listen, "upstream": self.upstream, "enabled": self.enabled}
        if with_toxics:
            data["toxics"] = [t.to_json() for t in self.ordered_toxics()]
        return data

    def ordered_toxics(self) -> list[ToxicSpec]:
        """Upstream toxics first, then downstream, as Toxiproxy lists them."""
        return sorted(self.toxics.values(), key=lambda t: t.stream != "upstream")

    async def start(self) -> None:
        if self.enabled:
            return
        host, port = require_loopback("listen", self.listen)
        require_loopback("upstream", self.upstream)
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: ClientSide(Connection(self)), host, port, reuse_address=True, backlog=1024)
        except OSError as exc:
            raise ApiError(f"listen tcp {self.listen}: {exc.strerror or exc}", 500) from exc
        sockname = self._server.sockets[0].getsockname()
        shown = f"[{sockname[0]}]" if ":" in sockname[0] else sockname[0]
        self.listen = f"{shown}:{sockname[1]}"
        self.enabled = True

    def stop(self) -> None:
        """Close the listener and every connection (the `down` fault)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self.connections):
            conn.abort()
        self.enabled = False

    def add_toxic(self, spec: ToxicSpec) -> None:
        if spec.name in self.toxics:
            raise ApiError("toxic already exists", 409)
        self.toxics[spec.name] = spec
        for conn in list(self.connections):
            if conn.links:
                conn.links[spec.stream].add_toxic(spec)

    def update_toxic(self, name: str, body: object) -> ToxicSpec:
        spec = self.toxic(name)
        spec.update(body)
        for conn in list(self.connections):
            if conn.links:
                conn.links[spec.stream].update_toxic(spec)
        return spec

    def remove_toxic(self, name: str) -> None:
        spec = self.toxic(name)
        del self.toxics[name]
        for conn in list(self.connections):
            if conn.links:
                conn.links[spec.stream].remove_toxic(name)

    def toxic(self, name: str) -> ToxicSpec:
        try:
            return self.toxics[name]
        except KeyError:
            raise ApiError("toxic not found", 404) from None

    def remove_all_toxics(self) -> None:
        for name in list(self.toxics):
            self.remove_toxic(name)
