"""The controller's thread: an asyncio loop of its own in a daemon thread, and the lock that
guards every controller state change.

The controller always runs here, also in Jupyter, as Dask's and ipyparallel's clients do:
a cell that computes for minutes, or blocks in ``queue.wait()``, never stops dispatch,
timeouts, retries or database writes. User threads (a notebook cell, the main thread of a
script) change state directly under the lock; what must run on the loop (pipe readers,
timers) is handed to it with :meth:`ControllerLoop.call_soon`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from nbqueue.errors import NbqueueError, QueueShutDownError

T = TypeVar("T")
#: Longest a blocked wait sleeps in one go, so that a kernel interrupt (SIGINT) is seen
#: promptly on every platform.
WAIT_SLICE_SECONDS = 0.25
#: How long :meth:`ControllerLoop.run` waits for the loop to take a call.
RUN_TIMEOUT_SECONDS = 60.0


class ControllerLoop:
    """A loop thread plus a re-entrant lock; every controller state change happens under
    the lock (on the loop thread or in the caller's thread)."""

    def __init__(self, name: str = "nbqueue-controller") -> None:
        self.lock = threading.RLock()
        self._waiters: list[_Waiter] = []  # under the lock
        self.loop = asyncio.new_event_loop()
        self._closed = False
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name=name, daemon=True)
        self._thread.start()
        ready.wait()

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(ready.set)
        self.loop.run_forever()

    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop (from any thread); dropped once the loop closed."""
        if self.in_loop_thread():
            self.loop.call_soon(fn, *args)
        elif not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # closed meanwhile
                pass

    def call_later(self, delay: float, fn: Callable[..., Any]) -> asyncio.TimerHandle | None:
        """Run ``fn`` on the loop after ``delay`` seconds; from another thread the handle is
        None (such timers are not cancelled)."""
        if self.in_loop_thread():
            return self.loop.call_later(max(0.0, delay), fn)
        self.call_soon(self.loop.call_later, max(0.0, delay), fn)
        return None

    def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the loop thread and return its result (loop-only APIs such as
        add_reader are not thread-safe). Must not be called with the lock held from
        another thread."""
        if self.in_loop_thread():
            return fn()
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def call() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:
                done.set_exception(exc)

        self.call_soon(call)
        return done.result(RUN_TIMEOUT_SECONDS)

    def notify(self) -> None:
        """Something changed (call with the lock held): wake each :meth:`wait_until` whose
        condition now holds. The others sleep on: a wait for the last of many tasks is
        not woken by each of the others."""
        for waiter in self._waiters:
            waiter.check()

    def wait_until(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Block until ``predicate()`` (checked under the lock) is true; False when
        ``timeout`` seconds passed first. Refused on the loop thread itself (an event
        listener or done callback that waits would stop the controller it waits for)."""
        if self.in_loop_thread():
            raise NbqueueError(
                "cannot wait for tasks on the queue's controller thread (from an event "
                "listener or a done callback); wait from your own code instead"
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        waiter = _Waiter(predicate)
        with self.lock:
            if predicate():
                return True
            if self._closed:
                raise QueueShutDownError("the queue was shut down while waiting")
            self._waiters.append(waiter)
        try:
            while True:
                left = WAIT_SLICE_SECONDS
                if deadline is not None:
                    left = min(left, deadline - time.monotonic())
                    if left <= 0:
                        return False
                if not waiter.event.wait(left):
                    continue
                with self.lock:
                    if predicate():
                        return True
                    if self._closed:
                        raise QueueShutDownError("the queue was shut down while waiting")
                    waiter.event.clear()  # (under the lock: no notify is missed)
        finally:
            with self.lock:
                self._waiters.remove(waiter)

    def when(self, predicate: Callable[[], bool], fn: Callable[[], None]) -> None:
        """Call ``fn()``, from a thread of its own, once ``predicate()`` holds (never if
        the loop is closed first)."""

        def watch() -> None:
            try:
                self.wait_until(predicate, None)
            except QueueShutDownError:
                return
            fn()

        threading.Thread(target=watch, name="nbqueue-when", daemon=True).start()

    def close(self) -> None:
        """Stop the loop and its thread; waiters get QueueShutDownError."""
        with self.lock:
            self._closed = True
            for waiter in self._waiters:
                waiter.event.set()
        if not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(self.loop.stop)
            except RuntimeError:
                pass
        if not self.in_loop_thread():
            self._thread.join(5)
            if not self._thread.is_alive() and not self.loop.is_closed():
                self.loop.close()


class _Waiter:
    """One :meth:`ControllerLoop.wait_until`: its condition, and the event that wakes it."""

    __slots__ = ("event", "predicate")

    def __init__(self, predicate: Callable[[], bool]) -> None:
        self.predicate = predicate
        self.event = threading.Event()

    def check(self) -> None:
        if self.event.is_set():
            return
        try:
            holds = self.predicate()
        except Exception:  # let the waiter's own thread see the error
            holds = True
        if holds:
            self.event.set()
