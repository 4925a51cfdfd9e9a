"""Reading a queue: its tasks, their counts and frames, its workers, dashboard and state --
the part of :class:`nbqueue.Queue` that only looks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nbqueue import checks, records
from nbqueue.backends.base import ExecutionBackend, WorkerInfo
from nbqueue.errors import WorkerStartError
from nbqueue.records import TaskStatus
from nbqueue.task import Task

if TYPE_CHECKING:
    import pandas

    from nbqueue.controller.core import Controller


class QueueReading:
    """The reading methods of :class:`nbqueue.Queue`."""

    _backend: ExecutionBackend
    _controller: Controller | None
    _closed: bool

    def _started_or_none(self) -> Controller | None:
        return getattr(self, "_controller", None)

    def get_task(self, uid: str) -> Task[Any] | None:
        """The task with this uid, or None."""
        checks.text(uid, "uid")
        controller = self._started_or_none()
        return None if controller is None else controller.tasks.get(uid)

    def get_pending_tasks(self) -> list[Task[Any]]:
        """Tasks waiting to run (pending or retrying), in the order they will run."""
        waiting = [t for t in self.tasks if t.status.waiting]
        return sorted(waiting, key=lambda t: (-t.priority, t.created_at))

    def get_task_statuses(self) -> list[TaskStatus]:
        """A status snapshot of every task, in the order they were added."""
        return [t.get_status() for t in self.tasks]

    @property
    def tasks(self) -> list[Task[Any]]:
        """Every task, in the order they were added."""
        controller = self._started_or_none()
        if controller is None:
            return []
        with controller.lock:
            return list(controller.tasks.values())

    def counts(self) -> dict[str, int]:
        """How many tasks are in each status."""
        return records.status_counts(t.status for t in self.tasks)

    def workers(self) -> list[WorkerInfo]:
        """The execution backend's workers."""
        return self._backend.workers()

    def status_frame(self) -> pandas.DataFrame:
        """A pandas DataFrame with one row per task (see README for the columns)."""
        from nbqueue.ui import frame

        return frame.status_frame(self.tasks)

    def results_frame(self) -> pandas.DataFrame:
        """A pandas DataFrame with one row per completed task: uid, name, type, key, then
        its result -- a mapping spread into columns (a TaskExecutor's ``processed`` left
        out), anything else in the column ``result``."""
        from nbqueue.ui import frame

        return frame.results_frame(self.tasks)

    @property
    def state(self) -> str:
        """``"not started"``, ``"running"``, ``"shut down"``, ``"database failed"`` or
        ``"workers failed"`` (they cannot start: see :meth:`Queue.check`)."""
        controller = self._started_or_none()
        if self._closed:
            return "shut down"
        if controller is None:
            return "not started"
        if controller.failure is None:
            return "running"
        return (
            "workers failed"
            if isinstance(controller.failure, WorkerStartError)
            else "database failed"
        )

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.counts().items() if v)
        total = len(self.tasks)
        return f"<nbqueue.Queue {self.state}, {total} tasks{': ' + counts if counts else ''}>"
