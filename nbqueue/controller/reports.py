"""What the execution backend reports, turned into the controller's state transitions:
the backend's sink (``BackendSink``), kept apart from the public Queue. Every method runs
on the controller's loop with its lock held."""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import TYPE_CHECKING

from nbqueue import config, serialization, tracebacks
from nbqueue.errors import NbqueueError
from nbqueue.records import ErrorRecord, Status

if TYPE_CHECKING:
    from nbqueue.controller.core import Controller


class Reports:
    """The controller's ``BackendSink``."""

    def __init__(self, controller: Controller) -> None:
        self.c = controller

    def task_started(self, uid: str, worker: str, when: float, *, ended: bool = False) -> None:
        task = self.c.running.get(uid)
        if task is None:
            return
        with self.c.contained(task):
            task.status = Status.RUNNING
            task.started_at = dt.datetime.fromtimestamp(when, dt.timezone.utc)
            task.worker = worker
            if not ended:
                self.c.timers.deadline(task, when + task.timeout)
            self.c.emit("started", task)

    def task_progress(self, uid: str, progress: float) -> None:
        task = self.c.running.get(uid)
        if task is not None:
            task.progress = progress
            self.c.emit("progress", task)

    def task_output(self, uid: str, text: str) -> None:
        task = self.c.running.get(uid)
        if task is not None:
            task.output = _bounded(task.output + text)
            self.c.emit("output", task)

    def task_completed(self, uid: str, result: bytes, errors: list[ErrorRecord]) -> None:
        task = self.c.running.get(uid)
        if task is None:
            return
        with self.c.contained(task):
            task.errors.extend(errors)
            task._result_bytes = result
            self.c.finish(task, Status.COMPLETED)

    def task_failed(
        self, uid: str, error: ErrorRecord, exception: bytes | None, errors: list[ErrorRecord]
    ) -> None:
        task = self.c.running.get(uid)
        if task is None:
            return
        with self.c.contained(task):
            text = error.traceback
            if text:
                text = tracebacks.fill_source(text, self.c.registry.code_index(task.type))
            record = ErrorRecord(error.type, error.message, text, error.at, error.classes)
            task.errors.extend(errors)
            # exec() often does task.add_error(e) and then raises e: keep one record of it
            if not errors or (errors[-1].type, errors[-1].message) != (error.type, error.message):
                task.errors.append(record)
            raised: BaseException | None = None
            if exception is not None:
                with contextlib.suppress(NbqueueError):
                    raised = serialization.loads(exception)
            self.c.fail(task, record, tracebacks.as_raised(raised, str(record), text))

    def task_lost(self, uid: str, error: BaseException | None) -> None:
        task = self.c.running.get(uid)
        if task is None:
            return
        with self.c.contained(task):
            if error is not None:
                record = ErrorRecord.from_exception(error)
                task.errors.append(record)
                self.c.fail(task, record, error)
                return
            self.c.running.pop(uid)
            if uid in self.c.cancelling:
                self.c.finish(task, Status.CANCELLED)
                return
            task.status, task.worker, task.started_at = Status.PENDING, None, None
            task.progress = 0.0
            self.c.dispatcher.requeued(task)
            self.c.emit("requeued", task)

    def capacity_changed(self) -> None:
        self.c.dispatch()

    def backend_failed(self, error: NbqueueError) -> None:
        self.c.failure = error
        self.c.notify()


def _bounded(text: str) -> str:
    """A task's output, keeping its last OUTPUT_LIMIT characters."""
    limit = config.OUTPUT_LIMIT
    if len(text) <= limit:
        return text
    return "[... earlier output dropped ...]\n" + text[len(text) - limit :]
