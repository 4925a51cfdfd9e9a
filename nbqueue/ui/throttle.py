"""Redraws on a thread of their own, at a bounded rate.

Live views must move while the kernel's main thread is busy: a cell may block in
``queue.wait()`` (a plain threading wait) or in ``time.sleep``, and then the kernel's event
loop does not turn. So redraws never go through an event loop: one daemon thread per
process (:class:`Scheduler`) runs them when they fall due, and a :class:`Throttle` per view
makes sure that a view is redrawn at most once per interval however often it is poked,
from any thread. Widget state changes made on that thread reach the front end: ipykernel
sends comm messages through its IOPub thread, on behalf of the cell running now (or the
last one).
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger("nbqueue")

#: A view spends at most about 1/COST_FACTOR of the time redrawing: after a redraw that took
#: ``d`` seconds the next one waits at least ``COST_FACTOR * d`` (a huge queue redraws less
#: often instead of starving the controller of the GIL).
COST_FACTOR = 5.0


class Handle:
    """A call scheduled on the :class:`Scheduler`; :meth:`cancel` drops it (and the
    reference to the callback, so that a cancelled call keeps nothing alive)."""

    __slots__ = ("_callback",)

    def __init__(self, callback: Callable[[], object]) -> None:
        self._callback: Callable[[], object] | None = callback

    def cancel(self) -> None:
        self._callback = None

    def _run(self) -> None:
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()


class Scheduler:
    """Runs callbacks at given ``time.monotonic()`` times on one daemon thread (started on
    first use). Callbacks run one at a time, in due order, each in an empty context (in a
    kernel, their messages then belong to the cell running when they run); one that raises
    is logged and the others go on."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Handle]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def call_at(self, when: float, callback: Callable[[], object]) -> Handle:
        """Run ``callback()`` on the scheduler's thread at ``when`` (monotonic seconds).
        Until then the scheduler holds ``callback`` (a live view stays alive while it has
        a redraw or a tick pending, as with an event loop's timers)."""
        handle = Handle(callback)
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="nbqueue-redraw", daemon=True
                )
                self._thread.start()
            heapq.heappush(self._heap, (when, next(self._order), handle))
            if self._heap[0][2] is handle:
                self._cond.notify()
        return handle

    def call_later(self, delay: float, callback: Callable[[], object]) -> Handle:
        return self.call_at(time.monotonic() + delay, callback)

    def _serve(self) -> None:
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        handle = heapq.heappop(self._heap)[2]
                        break
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
            try:
                contextvars.Context().run(handle._run)
            except Exception:  # a broken view must not stop the others
                log.exception("nbqueue: a redraw failed")


_scheduler: Scheduler | None = None
_scheduler_lock = threading.Lock()


def scheduler() -> Scheduler:
    """The process's redraw scheduler."""
    global _scheduler
    with _scheduler_lock:
        if _scheduler is None:
            _scheduler = Scheduler()
        return _scheduler


class Throttle:
    """Calls ``flush`` on the redraw thread at most once per ``interval`` seconds however
    often :meth:`poke` is called, from any thread; a poke is never lost (the flush after
    the last poke comes, at most ``interval`` later)."""

    def __init__(self, flush: Callable[[], None], interval: float) -> None:
        self.interval = interval
        self._flush = flush
        self._lock = threading.Lock()
        self._pending: Handle | None = None
        self._closed = False
        self._last = float("-inf")
        self._cost = 0.0
        #: monotonic start times of the most recent flushes (for tests and curiosity).
        self.history: deque[float] = deque(maxlen=1000)

    def poke(self) -> None:
        """Ask for a flush: soon, but not sooner than ``interval`` after the last one."""
        with self._lock:
            if self._pending is not None or self._closed:
                return
            gap = max(self.interval, COST_FACTOR * self._cost)
            when = max(time.monotonic(), self._last + gap)
            self._pending = scheduler().call_at(when, self._run)

    def _run(self) -> None:
        with self._lock:
            self._pending = None
            if self._closed:
                return
        self._last = time.monotonic()
        self.history.append(self._last)
        try:
            self._flush()
        finally:
            self._cost = time.monotonic() - self._last

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """No flush after this one (a pending one is dropped)."""
        with self._lock:
            self._closed = True
            pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
