"""The gevent <-> asyncio bridge: one asyncio loop per Locust process, in a native thread.

Why: aiokafka is asyncio-only, Locust is gevent. Running asyncio inside the
gevent hub would make every await a hub switch and every blocking selector
call freeze all users. Instead the loop runs in a real OS thread (gevent's
*original* threading) on an *unpatched* selector, and greenlets hand it
coroutines.

Both directions are coalesced, so the cost is one wake-up per batch, not per
call: greenlets append to a deque and wake the loop only when it was idle
(``call_soon_threadsafe``); the loop appends finished calls to another deque
and wakes the gevent hub only when it was idle (a libev ``async`` watcher,
the one gevent-safe way to wake the hub from another thread). The finishing
time is taken in the loop thread, so a greenlet scheduled late does not make
the measured latency longer.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import gevent
from gevent import monkey
from gevent.hub import Waiter

T = TypeVar("T")

# gevent patches threading.Thread to run greenlets; the original _thread primitives make real threads
_start_native_thread = monkey.get_original("_thread", "start_new_thread")
_native_lock = monkey.get_original("_thread", "allocate_lock")
_get_native_ident = monkey.get_original("_thread", "get_ident")
_OriginalSelector = monkey.get_original("selectors", "DefaultSelector")


class BridgeTimeout(Exception):
    """A bridged call did not finish in time (the coroutine is cancelled)."""


class Call:
    """One bridged call, seen from the greenlet: wait() returns the result or raises its error."""

    __slots__ = ("waiter", "task", "done_at", "_result", "_error", "_done", "bridge")

    def __init__(self, bridge: "AsyncBridge") -> None:
        self.bridge = bridge
        self.waiter: Waiter | None = None
        self.task: asyncio.Future[Any] | None = None
        self.done_at: float = 0.0  # time.perf_counter() in the loop thread when it finished
        self._result: Any = None
        self._error: BaseException | None = None
        self._done = False

    def _finish(self, result: Any, error: BaseException | None, done_at: float) -> None:
        """Runs in the gevent hub."""
        self._result, self._error, self.done_at, self._done = result, error, done_at, True
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            waiter.switch(None)

    def wait(self, timeout: float | None = None) -> Any:
        """Block this greenlet (not the hub) until done; BridgeTimeout after ``timeout`` s."""
        if not self._done:
            self.waiter = Waiter()
            timer = gevent.Timeout(timeout) if timeout is not None else None
            if timer is not None:
                timer.start()
            self.bridge._hold()
            try:
                self.waiter.get()
            except gevent.Timeout as exc:
                if exc is not timer:
                    raise
                self.waiter = None
                self.cancel()
                raise BridgeTimeout(f"no answer within {timeout:g} s") from None
            finally:
                self.bridge._release()
                if timer is not None:
                    timer.close()
        if self._error is not None:
            raise self._error
        return self._result

    def cancel(self) -> None:
        task = self.task
        if task is not None and self.bridge.loop is not None:
            self.bridge.loop.call_soon_threadsafe(task.cancel)


class _LogInTheHub(logging.Filter):
    """Records logged in the loop thread are handled in the gevent hub, never in the loop thread.

    A logging handler takes its lock for every record, and in a gevent-patched
    process that lock is a gevent lock: a native thread contending for it with
    the hub can stall the hub. A killed broker makes aiokafka log from the loop
    thread in bursts, exactly when the chaos runner's greenlets must heal it.
    """

    def __init__(self, bridge: "AsyncBridge", handler: logging.Handler) -> None:
        super().__init__()
        self.bridge, self.handler = bridge, handler

    def filter(self, record: logging.LogRecord) -> bool:
        if _get_native_ident() != self.bridge.loop_ident:
            return True
        self.bridge.call_in_gevent(self.handler.handle, record)
        return False


class AsyncBridge:
    """An asyncio loop in a native thread, usable from greenlets. One per process: see ``bridge()``."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stopped: Any = None
        self._submit: collections.deque[tuple[Call, Any]] = collections.deque()
        self._submit_scheduled = False
        self._done: collections.deque[tuple[Callable[..., None], tuple]] = collections.deque()
        self._done_scheduled = False
        self._waiting = 0
        self._watcher: Any = None
        self._pid = os.getpid()
        self.loop_ident: int | None = None  # the loop thread's native id

    # ---- lifecycle

    def start(self) -> None:
        """Start the loop thread (idempotent); must be called from the gevent (main) thread."""
        if self.loop is not None:
            return
        hub = gevent.get_hub()
        self._watcher = hub.loop.async_()
        self._watcher.ref = False  # keeps the hub alive only while a greenlet waits (see _hold)
        self._watcher.start(self._drain_done)
        ready = _native_lock()
        ready.acquire()
        self._stopped = _native_lock()
        self._stopped.acquire()

        def run() -> None:
            self.loop_ident = _get_native_ident()
            loop = asyncio.SelectorEventLoop(_OriginalSelector())
            asyncio.set_event_loop(loop)
            self.loop = loop
            ready.release()
            try:
                loop.run_forever()
            finally:
                loop.close()
                self._stopped.release()

        for handler in logging.getLogger().handlers:  # see _LogInTheHub (a forked child replaces its parent's)
            for old in [f for f in handler.filters if isinstance(f, _LogInTheHub)]:
                handler.removeFilter(old)
            handler.addFilter(_LogInTheHub(self, handler))
        _start_native_thread(run, ())
        # a native lock: the loop is up within microseconds, so blocking the hub here is harmless
        if not ready.acquire(True, 10) or self.loop is None:
            raise RuntimeError("the asyncio loop thread did not start")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop (after cancelling what still runs)."""
        loop = self.loop
        if loop is None:
            return

        async def shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            loop.stop()

        loop.call_soon_threadsafe(lambda: loop.create_task(shutdown()))
        self._stopped.acquire(True, timeout)
        self.loop = None
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher.close()
            self._watcher = None

    def _hold(self) -> None:
        """A greenlet waits on the loop: the hub must not think it would block forever."""
        self._waiting += 1
        if self._waiting == 1 and self._watcher is not None:
            self._watcher.ref = True

    def _release(self) -> None:
        self._waiting -= 1
        if self._waiting == 0 and self._watcher is not None:
            self._watcher.ref = False

    # ---- greenlet -> loop

    def submit(self, coro: Coroutine[Any, Any, T] | Callable[[], Awaitable[T]]) -> Call:
        """Start ``coro`` on the loop and return at once; ``.wait()`` on the result blocks the greenlet."""
        if self.loop is None:
            self.start()
        call = Call(self)
        self._submit.append((call, coro))
        if not self._submit_scheduled:
            self._submit_scheduled = True
            self.loop.call_soon_threadsafe(self._drain_submit)
        return call

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for it; errors and BridgeTimeout are raised here."""
        return self.submit(coro).wait(timeout)

    def _drain_submit(self) -> None:
        """Runs in the loop: start everything submitted since the last wake-up."""
        self._submit_scheduled = False
        loop = self.loop
        q = self._submit
        while q:
            call, coro = q.popleft()
            if callable(coro):
                coro = coro()
            try:
                task = loop.create_task(coro)
            except BaseException as exc:  # noqa: BLE001 - handed to the greenlet
                self.call_in_gevent(call._finish, None, exc, time.perf_counter())
                continue
            call.task = task
            task.add_done_callback(lambda t, c=call: self._task_done(c, t))

    def _task_done(self, call: Call, task: asyncio.Future[Any]) -> None:
        done_at = time.perf_counter()
        if task.cancelled():
            self.call_in_gevent(call._finish, None, BridgeTimeout("cancelled"), done_at)
        elif task.exception() is not None:
            self.call_in_gevent(call._finish, None, task.exception(), done_at)
        else:
            self.call_in_gevent(call._finish, task.result(), None, done_at)

    # ---- loop -> gevent

    def call_in_gevent(self, fn: Callable[..., None], *args: Any) -> None:
        """From the loop thread: run ``fn(*args)`` in the gevent hub soon (thread-safe, coalesced)."""
        self._done.append((fn, args))
        if not self._done_scheduled:
            self._done_scheduled = True
            watcher = self._watcher
            if watcher is not None:
                watcher.send()

    def _drain_done(self) -> None:
        """Runs in the gevent hub."""
        self._done_scheduled = False
        q = self._done
        while q:
            fn, args = q.popleft()
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - one bad callback must not starve the others
                import traceback

                traceback.print_exc()


_bridge: AsyncBridge | None = None


def bridge() -> AsyncBridge:
    """This process's bridge, started on first use (a forked child gets its own)."""
    global _bridge
    if _bridge is None or _bridge._pid != os.getpid():
        _bridge = AsyncBridge()
        _bridge.start()
    return _bridge
