"""The queue's orderings: ready tasks by (priority desc, created asc), waiting tasks by the
time they become ready, running tasks by deadline.

Heaps with lazy deletion: every push gives the task a fresh sequence number, and an entry
whose number is no longer the task's is skipped when it surfaces, so moves are O(log n).
:meth:`discard` lets go of a task at once (O(1)): its entry stays in the heap as an empty
shell until it surfaces, so a removed task is never kept alive by a heap."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from nbqueue.task import Task

_counter = itertools.count(1)
K = TypeVar("K")


def stamp(task: Task[Any]) -> int:
    """Give the task a fresh sequence number, invalidating every heap entry it has."""
    task._seq = next(_counter)
    return task._seq


class _Heap(Generic[K]):
    """Entries ``[key, seq, task or None]``; an entry is live while it still holds its task
    and ``seq == task._seq``."""

    def __init__(self) -> None:
        self._heap: list[list[Any]] = []
        self._entries: dict[str, list[Any]] = {}  # uid -> the task's newest entry here

    def _push(self, key: K, seq: int, task: Task[Any]) -> None:
        self.discard(task)
        entry = [key, seq, task]
        heapq.heappush(self._heap, entry)
        self._entries[task.uid] = entry

    def discard(self, task: Task[Any]) -> None:
        """Forget ``task`` (removed, finished, or moved elsewhere)."""
        entry = self._entries.pop(task.uid, None)
        if entry is not None:
            entry[2] = None

    def _top(self) -> list[Any] | None:
        heap = self._heap
        while heap:
            entry = heap[0]
            task = entry[2]
            if task is not None and entry[1] == task._seq:
                return entry
            heapq.heappop(heap)
            if task is not None and self._entries.get(task.uid) is entry:
                del self._entries[task.uid]
        return None

    def _pop_top(self) -> Task[Any]:
        entry = heapq.heappop(self._heap)
        task: Task[Any] = entry[2]
        if self._entries.get(task.uid) is entry:
            del self._entries[task.uid]
        return task

    def __bool__(self) -> bool:
        return self._top() is not None

    def clear(self) -> None:
        self._heap.clear()
        self._entries.clear()


class ReadyHeap(_Heap[tuple[int, float]]):
    """Tasks that may run now, best first."""

    def push(self, task: Task[Any]) -> None:
        self._push((-task.priority, task.created_at.timestamp()), stamp(task), task)

    def pop(self) -> Task[Any] | None:
        return None if self._top() is None else self._pop_top()

    def drain(self) -> Iterator[Task[Any]]:
        while (task := self.pop()) is not None:
            yield task

    def absorb(self, other: ReadyHeap) -> None:
        """Move every task of ``other`` here (at once when this heap is empty)."""
        if self._heap:
            for task in other.drain():
                self.push(task)
            return
        self._heap, other._heap = other._heap, []
        self._entries, other._entries = other._entries, {}


class TimedHeap(_Heap[float]):
    """Tasks keyed by a time (epoch seconds): waiting for their delay, run_at or back-off,
    or running until a deadline. An entry is valid while the task's sequence number is the
    one recorded (``token``)."""

    def push(self, when: float, task: Task[Any], token: int | None = None) -> None:
        self._push(when, stamp(task) if token is None else token, task)

    def next_time(self) -> float | None:
        top = self._top()
        return None if top is None else float(top[0])

    def pop_due(self, now: float) -> list[Task[Any]]:
        due = []
        while (top := self._top()) is not None and top[0] <= now:
            due.append(self._pop_top())
        return due
