"""The event loop a queue's controller runs on, and the lock that guards its state.

In Jupyter (or under ``asyncio.run``) the controller uses the loop already running in the
calling thread, so work continues while the kernel is idle and ``wait()`` keeps that loop
turning with nest-asyncio. Elsewhere it starts a loop of its own in a daemon thread.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Callable
from typing import Any


class Runtime:
    """A loop plus a re-entrant lock; every controller state change happens under the lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._cond = threading.Condition(self.lock)
        self._wake: asyncio.Event | None = None
        try:
            self.loop = asyncio.get_running_loop()
            self.loop.add_reader  # noqa: B018  (a loop without add_reader cannot host us)
            self.borrowed = True
            self._thread: threading.Thread | None = None
            self._loop_thread = threading.get_ident()
        except RuntimeError:
            self.borrowed = False
            self.loop = asyncio.new_event_loop()
            ready = threading.Event()
            self._thread = threading.Thread(
                target=self._run_own_loop, args=(ready,), name="nbqueue-controller", daemon=True
            )
            self._thread.start()
            ready.wait()

    def _run_own_loop(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self._loop_thread = threading.get_ident()
        self.loop.call_soon(ready.set)
        self.loop.run_forever()

    def in_loop_thread(self) -> bool:
        return threading.get_ident() == self._loop_thread

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn`` on the loop (thread-safe)."""
        if self.in_loop_thread():
            self.loop.call_soon(fn, *args)
        else:
            self.loop.call_soon_threadsafe(fn, *args)

    def call_later(self, delay: float, fn: Callable[..., Any]) -> asyncio.TimerHandle | None:
        """Run ``fn`` on the loop after ``delay`` seconds; from another thread, the handle is
        None (such timers are never cancelled)."""
        if self.in_loop_thread():
            return self.loop.call_later(max(0.0, delay), fn)
        self.loop.call_soon_threadsafe(self.loop.call_later, max(0.0, delay), fn)
        return None

    def notify(self) -> None:
        """Wake everything waiting in :meth:`wait_until`; call with the lock held."""
        self._cond.notify_all()
        wake = self._wake
        if wake is not None:
            # asyncio.Event is not thread-safe: from another thread (a cell's helper
            # thread in a notebook), set it through the loop.
            if self.in_loop_thread():
                wake.set()
            elif not self.loop.is_closed():
                self.loop.call_soon_threadsafe(wake.set)

    def wait_until(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Block until ``predicate()`` (checked under the lock) is true; False on timeout."""
        if self.borrowed and self.in_loop_thread():
            return self._wait_nested(predicate, timeout)
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def _wait_nested(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Wait on the borrowed loop from code running on it (a notebook cell, a coroutine
        under asyncio.run): turn the loop re-entrantly, so worker messages, timers and
        widget updates keep flowing while the caller blocks."""
        if self.loop.is_closed():
            raise RuntimeError(
                "nbqueue: the event loop this queue was started on has closed (an "
                "asyncio.run() that returned?); shut the queue down before leaving it"
            )
        import nest_asyncio

        nest_asyncio.apply(self.loop)
        # The loop iteration we are called from may be asyncio's own _run_once (the kernel's
        # loop was running before nest-asyncio patched it). That frame pops a fixed number of
        # ready callbacks after ours returns; the nested run below may have run them
        # already, and an empty queue there kills the kernel ("IndexError: pop from an empty
        # deque", seen in JupyterLab). Owe it that many and pay with cancelled no-ops.
        ready: collections.deque[asyncio.Handle] | None = getattr(self.loop, "_ready", None)
        owed = len(ready) if ready is not None else 0
        waiter = self.loop.create_task(self._wait_async(predicate, timeout))
        try:
            return self.loop.run_until_complete(waiter)
        except BaseException:
            # KeyboardInterrupt (a kernel interrupt) lands here with the waiter still
            # pending: cancel it so no orphan task stays on the kernel's loop.
            waiter.cancel()
            raise
        finally:
            if ready is not None:
                for _ in range(owed - len(ready)):
                    placeholder = asyncio.Handle(_nothing, (), self.loop)
                    placeholder.cancel()
                    ready.appendleft(placeholder)

    async def _wait_async(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._wake is None:
            self._wake = asyncio.Event()
        while True:
            with self.lock:
                if predicate():
                    return True
                self._wake.clear()
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            try:
                await asyncio.wait_for(self._wake.wait(), left)
            except asyncio.TimeoutError:
                pass

    def close(self) -> None:
        """Stop the loop this runtime started (a borrowed loop is left running)."""
        if self._thread is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            if not self.in_loop_thread():
                self._thread.join(5)


def _nothing() -> None:
    """The callback of a placeholder handle (never called: the handle is cancelled)."""
