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
import os
import select
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
        self._wake_due = False  # under the lock: the loop thread will check the waiters
        self._reading = False  # the loop thread runs a reader callback (add_reader)
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

    def add_reader(self, fd: int, fn: Callable[..., None], *args: Any) -> None:
        """Call ``fn(*args)`` on the loop whenever ``fd`` is readable (call it on the loop);
        the waits it lets go are woken once it returns."""
        self.loop.add_reader(fd, self._read, fn, args)

    def _read(self, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        self._reading = True
        try:
            fn(*args)
        finally:
            self._reading = False
            if self._wake_due:
                self._wake_later()

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
        not woken by each of the others. On the loop thread the conditions are checked
        once the callback that changed things is done (at the end of a reader callback,
        else in a callback of their own), once for all it changed: the woken thread then
        runs while this one waits for events, instead of both wanting the GIL (and the
        lock) while this one finishes the callback."""
        if not self.in_loop_thread():
            for waiter in self._due():
                waiter.wake()
        elif not self._wake_due:
            self._wake_due = True
            if not self._reading:
                self.loop.call_soon(self._wake_later)

    def _wake_later(self) -> None:
        with self.lock:
            self._wake_due = False
            due = self._due()
        for waiter in due:
            waiter.wake()

    def _due(self) -> list[_Waiter]:
        """The waiters to wake now (the lock held)."""
        return [waiter for waiter in self._waiters if waiter.check()]

    def wait_until(
        self,
        predicate: Callable[[], bool],
        timeout: float | None,
        begin: Callable[[], None] | None = None,
    ) -> bool:
        """Block until ``predicate()`` (checked under the lock) is true; False when
        ``timeout`` seconds passed first. ``begin()`` runs first, under the same lock, so
        that what it starts (a dispatch) can only end once this wait is registered.
        Refused on the loop thread itself (an event listener or done callback that waits
        would stop the controller it waits for)."""
        if self.in_loop_thread():
            raise NbqueueError(
                "cannot wait for tasks on the queue's controller thread (from an event "
                "listener or a done callback); wait from your own code instead"
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        waiter = _Waiter(predicate)
        with self.lock:
            if begin is not None:
                begin()
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
                if not waiter.sleep(left):
                    continue
                with self.lock:
                    if predicate():
                        return True
                    if self._closed:
                        raise QueueShutDownError("the queue was shut down while waiting")
                    waiter.rearm()  # (under the lock: no notify is missed)
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
                if not waiter.woken:
                    waiter.woken = True
                    waiter.wake()
        if not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(self.loop.stop)
            except RuntimeError:
                pass
        if not self.in_loop_thread():
            self._thread.join(5)
            if not self._thread.is_alive() and not self.loop.is_closed():
                self.loop.close()


class _Gate:
    """A thread's pipe to be woken through (kept for its next waits, in this process: a
    forked child makes its own, lest it take the parent's wakeups)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.read, self.write = os.pipe()
        os.set_blocking(self.read, False)
        self.poll = select.poll()
        self.poll.register(self.read, select.POLLIN)

    def __del__(self) -> None:
        os.close(self.read)
        os.close(self.write)


_gates = threading.local()


class _Waiter:
    """One :meth:`ControllerLoop.wait_until`: its condition, and the pipe its thread
    sleeps on. ``woken`` is read and written under the controller's lock."""

    __slots__ = ("_gate", "predicate", "woken")

    def __init__(self, predicate: Callable[[], bool]) -> None:
        self.predicate = predicate
        gate = getattr(_gates, "gate", None)
        if gate is None or gate.pid != os.getpid():
            gate = _gates.gate = _Gate()
        self._gate = gate
        self.woken = False

    def sleep(self, timeout: float) -> bool:
        """Sleep until woken or ``timeout`` passed (False)."""
        gate = self._gate
        if not gate.poll.poll(timeout * 1000.0):
            return False
        try:
            os.read(gate.read, 64)
        except BlockingIOError:
            pass
        return True

    def rearm(self) -> None:
        """Woken for nothing: the next :meth:`wake` wakes it again (the lock held)."""
        self.woken = False

    def check(self) -> bool:
        """Whether to wake it now (the lock held): its condition holds and it was not
        woken yet. Then :meth:`wake` must follow."""
        if self.woken:
            return False
        try:
            holds = self.predicate()
        except Exception:  # let the waiter's own thread see the error
            holds = True
        self.woken = holds
        return holds

    def wake(self) -> None:
        os.write(self._gate.write, b"w")
