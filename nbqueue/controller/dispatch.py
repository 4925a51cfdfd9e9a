"""Which task runs next: one interface, two implementations. In memory the controller keeps
the order itself (heaps); with a database, the database does (claims, see
:mod:`nbqueue.controller.claims`). Every method is called with the controller's lock held.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from nbqueue.controller.heaps import ReadyHeap, TimedHeap
from nbqueue.task import Task

if TYPE_CHECKING:
    from nbqueue.registry import ExecutorSpec


class Dispatcher(abc.ABC):
    """Holds the tasks that wait to be sent to a worker, and hands them out best first."""

    @abc.abstractmethod
    def added(self, task: Task[Any]) -> None:
        """A new task (or one taken over from the database) that may run."""

    @abc.abstractmethod
    def retry_at(self, task: Task[Any], when: float) -> None:
        """A failed attempt will be retried at ``when`` (epoch seconds)."""

    @abc.abstractmethod
    def requeued(self, task: Task[Any]) -> None:
        """An attempt was lost without penalty (its worker was stopped for another task's
        sake, or it waited in a worker that died): the task may run again at once."""

    @abc.abstractmethod
    def forget(self, task: Task[Any]) -> bool:
        """The task was cancelled or removed: drop it. True when it was held here ready to
        be sent (with a database: claimed, and its claim is given up)."""

    def has_work(self, processing: bool) -> bool:
        """Whether :meth:`take` may have something to do (a cheap check first)."""
        return True

    @abc.abstractmethod
    def take(self, free: int, processing: bool) -> list[Task[Any]]:
        """Up to ``free`` tasks to send to workers now, best first. ``processing`` is False
        until ``run_automatically()``, ``wait()`` or ``run_tasks()`` asks for processing
        (the seed's behaviour); tasks asked for by name run regardless."""

    @abc.abstractmethod
    def run(self, tasks: Iterable[Task[Any]] | None) -> None:
        """``run_tasks()``: these tasks (or every ready one) are to be sent as slots free up,
        even without ``processing``."""

    @abc.abstractmethod
    def stop(self) -> list[Task[Any]]:
        """Stop handing out tasks (a drain); returns the tasks given back (with a database,
        claimed ones whose claim is given up)."""

    @abc.abstractmethod
    def executor_registered(self, spec: ExecutorSpec) -> None:
        """A notebook-defined executor was registered (with a database: store it for the
        worker hosts)."""

    @abc.abstractmethod
    def flush(self, timeout: float | None) -> None:
        """Block until what changed so far is stored."""

    @abc.abstractmethod
    def close(self) -> None:
        """Let go of what it holds open (a database)."""

    def promote_due(self, now: float) -> list[Task[Any]]:
        """Tasks whose delay, run_at or back-off has passed become ready; returns them."""
        return []

    def next_time(self) -> float | None:
        """When :meth:`promote_due` has work next (epoch seconds), if ever."""
        return None

    @abc.abstractmethod
    def clear(self) -> None:
        """Every task was removed."""


class MemoryDispatcher(Dispatcher):
    """Tasks in this process: ready ones in a heap by (priority, creation), those whose time
    has not come in a heap by time. Tasks added before processing was asked for wait in a
    third heap (``idle``), as the seed's queue kept them pending until asked to run."""

    def __init__(self) -> None:
        self._go = ReadyHeap()  # ready, and processing was asked for
        self._idle = ReadyHeap()  # ready, waiting for run_tasks()/wait()/run_automatically()
        self._later = TimedHeap()  # waiting for delay / run_at / retry back-off
        self._heaps = (self._go, self._idle, self._later)

    def added(self, task: Task[Any]) -> None:
        if task._ready_at > time.time():
            self._later.push(task._ready_at, task)
        else:
            self._idle.push(task)

    def retry_at(self, task: Task[Any], when: float) -> None:
        self._later.push(when, task)

    def requeued(self, task: Task[Any]) -> None:
        self._go.push(task)

    def executor_registered(self, spec: ExecutorSpec) -> None:
        """Nothing to store: the workers get it with its first task."""

    def flush(self, timeout: float | None) -> None:
        """Nothing to store."""

    def close(self) -> None:
        """Nothing held open."""

    def forget(self, task: Task[Any]) -> bool:
        for heap in self._heaps:
            heap.discard(task)
        return False

    def has_work(self, processing: bool) -> bool:
        return bool(self._go) or (processing and bool(self._idle))

    def take(self, free: int, processing: bool) -> list[Task[Any]]:
        if processing:
            self._go.absorb(self._idle)
        taken: list[Task[Any]] = []
        while len(taken) < free:
            ready = self._go.pop()
            if ready is None:
                break
            taken.append(ready)
        return taken

    def run(self, tasks: Iterable[Task[Any]] | None) -> None:
        if tasks is None:
            self._go.absorb(self._idle)
            return
        now = time.time()
        for task in tasks:
            if task.ready_to_run(now):
                self._idle.discard(task)
                self._go.push(task)

    def stop(self) -> list[Task[Any]]:
        self._idle.absorb(self._go)
        return []

    def promote_due(self, now: float) -> list[Task[Any]]:
        due = self._later.pop_due(now)
        for task in due:
            if task.retry_count > 0:  # a retry is already being processed
                self._go.push(task)
            else:
                self._idle.push(task)
        return due

    def next_time(self) -> float | None:
        return self._later.next_time()

    def clear(self) -> None:
        for heap in self._heaps:
            heap.clear()
