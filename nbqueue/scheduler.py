"""The queue's ordering: ready tasks by (priority desc, created asc), waiting tasks by the
time they become ready, running tasks by deadline. Heaps with lazy deletion: every push
gives the task a fresh sequence number, and an entry whose number is no longer the task's
is skipped when it surfaces, so moves and removals are O(log n)."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from typing import Any

from nbqueue.task import Task

_counter = itertools.count(1)


def stamp(task: Task[Any]) -> int:
    """Give the task a fresh sequence number, invalidating every heap entry it has."""
    task._seq = next(_counter)
    return task._seq


class ReadyHeap:
    """Tasks that may run now, best first."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, float, int, Task[Any]]] = []

    def push(self, task: Task[Any]) -> None:
        heapq.heappush(self._heap, (-task.priority, task.created_at.timestamp(), stamp(task), task))

    def pop(self) -> Task[Any] | None:
        while self._heap:
            _, _, seq, task = heapq.heappop(self._heap)
            if seq == task._seq:
                return task
        return None

    def drain(self) -> Iterator[Task[Any]]:
        while (task := self.pop()) is not None:
            yield task

    def __bool__(self) -> bool:
        while self._heap and self._heap[0][2] != self._heap[0][3]._seq:
            heapq.heappop(self._heap)
        return bool(self._heap)

    def clear(self) -> None:
        self._heap.clear()


class TimedHeap:
    """Tasks keyed by a time (epoch seconds): waiting for their delay, run_at or back-off,
    or running until a deadline. An entry is valid while the task's sequence number is the
    one recorded (``token``)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Task[Any]]] = []

    def push(self, when: float, task: Task[Any], token: int | None = None) -> None:
        heapq.heappush(self._heap, (when, stamp(task) if token is None else token, task))

    def next_time(self) -> float | None:
        while self._heap and self._heap[0][1] != self._heap[0][2]._seq:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[Task[Any]]:
        due = []
        while self._heap and self._heap[0][0] <= now:
            _, seq, task = heapq.heappop(self._heap)
            if seq == task._seq:
                due.append(task)
        return due

    def clear(self) -> None:
        self._heap.clear()
