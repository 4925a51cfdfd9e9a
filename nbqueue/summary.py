"""What ``Queue.wait()`` returns: how the tasks ended, with the failures named, so that a
notebook shows them without a second command."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from nbqueue import records
from nbqueue.records import Status
from nbqueue.task import Task

#: Failures a summary names.
SHOWN_FAILURES = 5


@dataclasses.dataclass(frozen=True)
class WaitSummary:
    """Counts of the queue's tasks by status once a wait ended, and the failed tasks."""

    counts: dict[str, int]
    failures: tuple[Task[Any], ...]

    @classmethod
    def of(cls, tasks: Iterable[Task[Any]]) -> WaitSummary:
        tasks = list(tasks)
        counts = records.status_counts(t.status for t in tasks)
        return cls(counts, tuple(t for t in tasks if t.status is Status.FAILED))

    @property
    def completed(self) -> int:
        return self.counts[Status.COMPLETED.value]

    @property
    def failed(self) -> int:
        return self.counts[Status.FAILED.value]

    @property
    def cancelled(self) -> int:
        return self.counts[Status.CANCELLED.value]

    def __bool__(self) -> bool:
        """True when no task failed."""
        return not self.failures

    def line(self) -> str:
        """``12 completed, 2 failed: fit(0.1) (ValueError: ...); ...``."""
        parts = [f"{n} {status}" for status, n in self.counts.items() if n]
        text = ", ".join(parts) or "no tasks"
        if self.failures:
            named = "; ".join(f"{t.name} ({t.error})" for t in self.failures[:SHOWN_FAILURES])
            more = len(self.failures) - SHOWN_FAILURES
            text += f": {named}" + (f"; and {more} more" if more > 0 else "")
        return text

    def __repr__(self) -> str:
        return f"<nbqueue wait: {self.line()}>"
