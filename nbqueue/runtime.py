"""The event loop a queue's controller runs on, and the lock that guards its state.

In Jupyter (or under ``asyncio.run``) the controller uses the loop already running in the
calling thread, so work continues while the kernel is idle, and ``wait()`` keeps that loop
turning re-entrantly (as nest-asyncio would; see :func:`run_nested` for why not with it).
Elsewhere it starts a loop of its own in a daemon thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import heapq
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar


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
        waiter = self.loop.create_task(self._wait_async(predicate, timeout))
        try:
            return run_nested(self.loop, waiter)
        except BaseException:
            # KeyboardInterrupt (a kernel interrupt) lands here with the waiter still
            # pending: cancel it so no orphan task stays on the kernel's loop.
            waiter.cancel()
            raise

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


# -- turning a running loop from inside one of its callbacks --------------------------------
#
# nest-asyncio does this by patching asyncio, and that breaks ipykernel 7 (seen in JupyterLab):
# the kernel runs every shell message in one persistent contextvars.Context, which the
# waiting cell has entered, so each message that arrives meanwhile fails with "cannot enter
# context ... is already entered" and is lost (Run All hangs on the next cell); and when the
# patch lands mid-iteration, asyncio's own _run_once, still on the stack, later pops an
# emptied ready queue and kills the kernel ("IndexError: pop from an empty deque").
# run_nested turns the loop itself and handles both.


def run_nested(loop: asyncio.AbstractEventLoop, future: asyncio.Future[_T]) -> _T:
    """Run ``loop`` until ``future`` is done, from code already running on ``loop``.

    Callbacks that cannot run inside the current one (their context is the one in use, as
    with ipykernel's queued messages) are held back and run, in order, once the caller has
    returned; the loop iteration that called us finds as many callbacks as it expects.
    """
    internals = ("_ready", "_scheduled", "_selector", "_process_events", "_clock_resolution")
    if not all(hasattr(loop, name) for name in internals):
        raise RuntimeError(
            f"nbqueue: cannot wait on a running {type(loop).__name__} (it is not an asyncio "
            "selector loop); wait for the tasks from another thread, or poll them"
        )
    base: Any = loop
    ready: collections.deque[Any] = base._ready
    scheduled: list[Any] = base._scheduled  # a heap of TimerHandles
    owed = len(ready)  # what the calling iteration still means to pop
    held: list[asyncio.Handle] = []
    # The caller's task is "current"; other tasks cannot step while it is. Step aside.
    current = asyncio.current_task(loop)
    if current is not None:
        asyncio.tasks._leave_task(loop, current)
    try:
        while not future.done():
            if base._stopping:
                raise RuntimeError("nbqueue: the event loop was stopped while waiting")
            while scheduled and scheduled[0]._cancelled:
                base._timer_cancelled_count -= 1
                heapq.heappop(scheduled)._scheduled = False
            if ready:
                timeout: float | None = 0
            elif scheduled:
                timeout = min(max(scheduled[0]._when - loop.time(), 0), _MAX_SELECT_SECONDS)
            else:
                timeout = None
            base._process_events(base._selector.select(timeout))
            end = loop.time() + base._clock_resolution
            while scheduled and scheduled[0]._when < end:
                timer = heapq.heappop(scheduled)
                timer._scheduled = False
                ready.append(timer)
            for _ in range(len(ready)):
                if not ready:
                    break
                handle = ready.popleft()
                if handle._cancelled:
                    continue
                if _context_in_use(handle):
                    held.append(handle)
                    continue
                handle._run()
        return future.result()
    finally:
        if current is not None:
            asyncio.tasks._enter_task(loop, current)
        ready.extendleft(reversed(held))
        for _ in range(owed - len(ready)):
            placeholder = asyncio.Handle(_nothing, (), loop)
            placeholder.cancel()
            ready.appendleft(placeholder)


_T = TypeVar("_T")
#: Longest single select() while waiting (asyncio uses one day too).
_MAX_SELECT_SECONDS = 86400.0


def _context_in_use(handle: asyncio.Handle) -> bool:
    context: contextvars.Context | None = getattr(handle, "_context", None)
    if context is None:
        return False
    try:
        context.run(_nothing)
    except RuntimeError:  # "cannot enter context: ... is already entered"
        return True
    return False


def _nothing() -> None:
    """Does nothing (the callback of placeholders, and a probe for contexts in use)."""
