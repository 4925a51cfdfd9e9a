"""The controller's one timer: it fires at the earliest of a waiting task's ready time
(delay, run_at, retry back-off), a running task's deadline (its timeout), and a cancelled
task's kill time (the grace it had to reach a cancellation point)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from nbqueue.controller.heaps import TimedHeap
from nbqueue.errors import TaskTimeoutError
from nbqueue.records import ErrorRecord, Status

if TYPE_CHECKING:
    from nbqueue.controller.core import Controller
    from nbqueue.task import Task


class Timers:
    """Deadlines and kill times of running tasks, and the timer that acts on them."""

    def __init__(self, controller: Controller) -> None:
        self.c = controller
        self.deadlines = TimedHeap()  # running tasks by timeout
        self.grace = TimedHeap()  # cancelled running tasks by kill time
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._ticker: asyncio.TimerHandle | None = None

    def deadline(self, task: Task[Any], when: float) -> None:
        """A running task must have finished by ``when``."""
        self.deadlines.push(when, task, token=task._seq)
        if self._timer_at is None or when < self._timer_at:
            self.rearm()

    def discard(self, task: Task[Any]) -> None:
        self.deadlines.discard(task)
        self.grace.discard(task)

    def stop(self) -> None:
        for handle in (self._timer, self._ticker):
            if handle is not None:
                handle.cancel()

    def tick_every(self, interval: float) -> None:
        """Run the controller's periodic pass every ``interval`` seconds (on the loop)."""
        if self._ticker is not None:
            self._ticker.cancel()
        self._ticker = self.c.loop.loop.call_later(interval, self._tick, interval)

    def _tick(self, interval: float) -> None:
        if self.c.tick():
            self._ticker = self.c.loop.loop.call_later(interval, self._tick, interval)

    def rearm(self) -> None:
        """Point the timer at the earliest time something is due (lock held). Cheap when
        nothing earlier than the armed time is due, from any thread."""
        c = self.c
        if c.closed:
            return
        times = [t for t in (c.dispatcher.next_time(), self.deadlines.next_time(),
                             self.grace.next_time()) if t is not None]  # fmt: skip
        if not times:
            return
        when = min(times)
        if self._timer_at is not None and self._timer_at <= when:
            return  # armed (or being armed) for earlier
        self._timer_at = when
        if c.loop.in_loop_thread():
            self._arm(when)
        else:  # call_later is not thread-safe: arm it on the loop
            c.loop.call_soon(self._arm_locked, when)

    def _arm_locked(self, when: float) -> None:
        with self.c.lock:
            if self._timer_at == when and not self.c.closed:
                self._arm(when)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.c.loop.loop.call_later(max(0.0, when - time.time()), self._fire)

    def _fire(self) -> None:
        c = self.c
        with c.lock:
            self._timer = self._timer_at = None
            if c.closed:
                return
            try:
                now = time.time()
                for task in self.deadlines.pop_due(now):
                    if c.running.get(task.uid) is task:
                        with c.contained(task):
                            self._expire(task)
                for task in self.grace.pop_due(now):
                    if c.running.get(task.uid) is task:
                        with c.contained(task):
                            c.backend.abort(task.uid)
                            c.finish(task, Status.CANCELLED)
                c.promote(now)
                c.dispatch()
            finally:
                self.rearm()

    def _expire(self, task: Task[Any]) -> None:
        self.c.backend.abort(task.uid)
        error = TaskTimeoutError(
            f"task {task.name!r} timed out after {task.timeout:g} s and was stopped. Give it "
            "a larger Task(timeout=...) if the work needs longer"
        )
        record = ErrorRecord.from_exception(error)
        task.errors.append(record)
        self.c.fail(task, record, error)
