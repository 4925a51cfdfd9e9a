"""The controller: every task of a queue and their state transitions. Backend reports come
in through :mod:`~nbqueue.controller.reports`; deadlines, cancel grace and back-off through
:mod:`~nbqueue.controller.timers`. State changes happen with the loop's lock held, on the
controller thread or the caller's. A failure while handling one task fails that task only
(logged, recorded as its error); it never stops the controller.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nbqueue import config, retry
from nbqueue.controller.claims import DatabaseDispatcher
from nbqueue.controller.dispatch import Dispatcher, MemoryDispatcher
from nbqueue.controller.heaps import stamp
from nbqueue.controller.keys import Keys
from nbqueue.controller.loop import ControllerLoop
from nbqueue.controller.reports import Reports
from nbqueue.controller.timers import Timers
from nbqueue.errors import (
    ConfigurationError,
    NbqueueError,
    QueueShutDownError,
    QueueTimeoutError,
    TaskCancelledError,
)
from nbqueue.records import ErrorRecord, Status
from nbqueue.task import Task

if TYPE_CHECKING:
    from nbqueue.backends.base import ExecutionBackend
    from nbqueue.events import EventKind, Events
    from nbqueue.queue import Queue
    from nbqueue.registry import ExecutorSpec, Registry
    from nbqueue.store import DatabaseAdapter

log = logging.getLogger("nbqueue")


class Controller:
    """The engine behind a :class:`~nbqueue.Queue`: the tasks' ``Owner``, the backend's sink."""

    def __init__(
        self, queue: Queue, *, backend: ExecutionBackend, registry: Registry, events: Events
    ) -> None:
        self.queue = queue
        self.loop = ControllerLoop()
        self.backend = backend
        self.registry = registry
        self.events = events
        self.dispatcher: Dispatcher = MemoryDispatcher()
        self.tasks: dict[str, Task[Any]] = {}
        self.keys = Keys()
        self.running: dict[str, Task[Any]] = {}  # sent to the backend
        self.cancelling: dict[str, Task[Any]] = {}
        self.timers = Timers(self)
        self.active = 0  # pending + retrying + running
        self.auto = False
        self.waiters = 0
        self.draining = False
        self.accepting = True  # False once shutdown() began: no new tasks
        self.closed = False
        self.interval = 1.0
        #: A database failure the user must hear about (raised by the next call).
        self.failure: NbqueueError | None = None

    # -- life ----------------------------------------------------------------------------
    def start(self, database: DatabaseAdapter | None, *, name: str, lease: float) -> None:
        """Open the database (if any: its tasks join the queue), start the backend."""
        loop = self.loop
        try:
            if database is not None:
                self.dispatcher = DatabaseDispatcher(self)
                self.dispatcher.open(database, name=name, lease=lease)
            loop.run(lambda: self._locked(lambda: self.backend.start(Reports(self), loop)))
        except BaseException:
            self._release()
            raise
        with loop.lock:
            self.dispatch()

    def _release(self) -> None:
        """Let go of the database and the loop's thread."""
        try:
            self.dispatcher.close()
        finally:
            self.loop.close()

    @property
    def lock(self) -> threading.RLock:
        return self.loop.lock

    def _locked(self, fn: Callable[[], None]) -> None:
        with self.lock:
            fn()

    def close(self) -> None:
        """Stop now: timers, the backend, the database (what is left is written), the loop."""
        loop = self.loop

        def stop() -> None:
            with loop.lock:
                self.closed, self.auto = True, False
                self.timers.stop()
                self._give_back(self.dispatcher.stop())  # claimed, never sent: at once
                self.backend.shutdown()
                self._give_back(list(self.running.values()))
                self.events.emit("shutdown")

        try:
            loop.run(stop)
        finally:
            self._release()

    def flush(self, timeout: float | None) -> None:
        """Block until what changed so far is committed (nothing to do in memory)."""
        self.dispatcher.flush(timeout)

    def registered(self, spec: ExecutorSpec) -> None:
        """A notebook-defined executor was registered while running (lock held)."""
        self.dispatcher.executor_registered(spec)

    def stop_when_idle(self, stop: Callable[[], None]) -> None:
        """Call ``stop()`` (from a thread of its own) once no task is left to run."""
        self.loop.when(lambda: self.active == 0, stop)

    def check(self) -> None:
        """Raise what the user must know before going on: a closed queue, a lost database."""
        if self.closed or not self.accepting:
            raise QueueShutDownError()
        if self.failure is not None:
            raise self.failure

    # -- the task's Owner protocol -------------------------------------------------------
    def wait_until(self, predicate: Callable[[], bool], timeout: float | None) -> None:
        """Process (dispatch what waits for it) and block until ``predicate()`` (or time out)."""
        with self.lock:
            self.waiters += 1
        try:
            done = self.loop.wait_until(
                lambda: predicate() or self.failure is not None, timeout, self.dispatch
            )
        finally:
            with self.lock:
                self.waiters -= 1
        if self.failure is not None and not predicate():
            raise self.failure
        if not done:
            raise QueueTimeoutError(
                f"nbqueue: still {self.active} task(s) pending or running after {timeout:g} s"
            )

    def cancel(self, uid: str) -> bool:
        with self.lock:
            task = self.tasks.get(uid)
            if task is None or task.status.finished:
                return False
            if uid in self.running:  # sent to a worker (started or waiting there)
                self._request_cancel(task)
            else:
                self.dispatcher.forget(task)
                stamp(task)
                self.finish(task, Status.CANCELLED)
            return True

    # -- adding, removing ------------------------------------------------------------------
    def add(self, task: Task[Any]) -> Task[Any]:
        """Enqueue ``task`` (checked by the caller); returns the task that does the work:
        ``task`` itself, or the existing task with its key (``task`` then mirrors it)."""
        with self.lock:
            self.check()
            existing = self.keys.holder(task.key)
            if existing is not None:
                self.keys.follow(existing, task, self)
                return existing
            if task.uid in self.tasks:
                raise ConfigurationError(f"task {task.name!r} ({task.uid}) is already in a queue")
            self.dispatcher.added(task)  # first: it may refuse the task (a database row)
            self.adopt(task)
            if task._ready_at > time.time():  # waits for its delay or run_at
                self.timers.rearm()
            self.dispatch()
            return task

    def adopt(self, task: Task[Any], *, quiet: bool = False) -> None:
        """Take ``task`` into the queue (new, or read from the database)."""
        self.tasks[task.uid] = task
        task._owner = self
        self.keys.hold(task)
        if not task.status.finished:
            self.active += 1
        if not quiet:
            self.emit("added", task)

    def remove(self, uid: str) -> Task[Any] | None:
        with self.lock:
            task = self.tasks.pop(uid, None)
            if task is None:
                return None
            if not task.status.finished:
                self.active -= 1
            if self.dispatcher.forget(task):
                task.status = Status.CANCELLED
            elif uid in self.running:
                self._request_cancel(task)
            else:
                stamp(task)
            self.keys.forget(task)
            task._owner = None
            self.emit("removed", task)
            self.notify()
            return task

    def clear(self) -> None:
        with self.lock:
            for uid in list(self.tasks):
                self.remove(uid)
            self.dispatcher.clear()
            self.events.emit("cleared")

    def run_tasks(self, tasks: list[Task[Any]] | None) -> None:
        with self.lock:
            self.check()
            self.promote(time.time())
            mine = (
                None
                if tasks is None
                else [t for t in tasks if self.tasks.get(t.uid) is t and t.uid not in self.running]
            )
            self.dispatcher.run(mine)
            self.dispatch()

    # -- processing --------------------------------------------------------------------------
    @property
    def processing(self) -> bool:
        return self.auto or self.waiters > 0

    def run_automatically(self, interval: float) -> None:
        with self.lock:
            if self.closed:
                raise QueueShutDownError()
            self.auto, self.interval = True, interval
            self.dispatch()
        self.loop.call_soon(self.timers.tick_every, interval)

    def tick(self) -> bool:
        """The periodic pass of run_automatically(); False once it should stop."""
        with self.lock:
            if self.closed or not self.auto:
                return False
            self.promote(time.time())
            self.timers.rearm()
            self.dispatch()
            return True

    def schedule(self) -> None:
        with self.lock:
            self.promote(time.time())
            self.timers.rearm()

    def promote(self, now: float) -> None:
        for task in self.dispatcher.promote_due(now):
            task.status = Status.PENDING

    def dispatch(self) -> None:
        """Send ready tasks to free worker slots."""
        if self.closed or self.draining or not self.dispatcher.has_work(self.processing):
            return
        batch = []
        for task in self.dispatcher.take(self.backend.free_slots(), self.processing):
            if task.uid in self.running or not task.status.waiting or task._owner is not self:
                continue  # asked for twice, or settled meanwhile
            with self.contained(task):
                spec = self.registry.get(task.type)
                stamp(task)
                task.progress, task.worker = 0.0, None  # running once its worker starts it
                self.running[task.uid] = task
                batch.append((task, spec))
                self.emit("dispatched", task)
        if batch:
            self.backend.submit(batch)

    def drain(self) -> list[Task[Any]]:
        """Stop dispatching; returns the tasks given back."""
        with self.lock:
            self.auto, self.draining = False, True
            given_back = self._give_back(self.dispatcher.stop())
            self.notify()
            return given_back

    def _give_back(self, tasks: list[Task[Any]]) -> list[Task[Any]]:
        """These tasks go back to pending (their rows too), whether they ran or not."""
        for task in tasks:
            self.running.pop(task.uid, None)
            task.status, task.worker, task.started_at = Status.PENDING, None, None
            task.progress = 0.0
            self.emit("requeued", task)
        return tasks

    # -- state transitions (lock held) -----------------------------------------------------
    def emit(self, kind: EventKind, task: Task[Any]) -> None:
        self.keys.mirror(task)
        if self.events:
            self.events.emit(kind, task)

    def notify(self) -> None:
        self.loop.notify()

    def settle_later(self, task: Task[Any]) -> None:
        """Bring the task's Future (if made: its maker settles it) up to date on the loop."""
        if task._future_made:
            self.loop.call_soon(task._settle)

    def contained(self, task: Task[Any]) -> Contained:
        """``with controller.contained(task):`` an error fails that task, not the controller."""
        return Contained(self, task)

    def failed_internally(self, task: Task[Any], error: Exception) -> None:
        if task.status.finished:
            log.error("nbqueue: error after task %s (%s) finished: %s", task.name, task.uid, error)
            return
        log.warning("nbqueue: task %s (%s) failed: %s", task.name, task.uid, error)
        self.running.pop(task.uid, None)
        task.errors.append(ErrorRecord.from_exception(error))
        self.finish(task, Status.FAILED, error)

    def finish(self, task: Task[Any], status: Status, error: BaseException | None = None) -> None:
        self.running.pop(task.uid, None)
        self.cancelling.pop(task.uid, None)
        self.timers.discard(task)
        if task._owner is not self:
            return  # removed while it was running
        task.status = status
        task.finished_at = dt.datetime.now(dt.timezone.utc)
        if status is Status.COMPLETED:
            task.progress = 100.0
        else:
            task._failure = error
            self.keys.release(task)
        task._payload = None  # its inputs are not needed any more
        self.active -= 1
        self.emit("finished", task)
        self.notify()
        self.settle_later(task)

    def fail(self, task: Task[Any], record: ErrorRecord, error: BaseException | None) -> None:
        """An attempt failed: cancel, retry after a back-off, or fail for good."""
        self.running.pop(task.uid, None)
        self.timers.deadlines.discard(task)
        if task.uid in self.cancelling or TaskCancelledError.__name__ == record.type:
            self.finish(task, Status.CANCELLED, error)
            return
        retryable = False
        try:
            spec = self.registry.get(task.type)
            assert spec.executor is not None
            schema = retry.validate_schema(spec.executor.retry_schema(), task.type)
            retryable = retry.should_retry(record, schema)
        except Exception as exc:  # a broken retry_schema() fails this task only
            task.errors.append(ErrorRecord.from_exception(exc))
            error = exc
        if task._owner is self and retryable and task.retry():
            when = time.time() + retry.backoff_seconds(task.retry_count)
            task._ready_at = when
            self.dispatcher.retry_at(task, when)
            self.timers.rearm()
            self.emit("retrying", task)
        else:
            self.finish(task, Status.FAILED, error)

    def _request_cancel(self, task: Task[Any]) -> None:
        if task.uid in self.cancelling:
            return
        self.cancelling[task.uid] = task
        self.backend.cancel(task.uid)
        self.timers.grace.push(time.time() + config.CANCEL_GRACE_SECONDS, task, token=task._seq)
        self.timers.rearm()


class Contained:
    """``Controller.contained(task)``: an exception inside fails ``task`` only."""

    __slots__ = ("controller", "task")

    def __init__(self, controller: Controller, task: Task[Any]) -> None:
        self.controller, self.task = controller, task

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, error: BaseException | None, tb: object) -> bool:
        if isinstance(error, Exception):
            self.controller.failed_internally(self.task, error)
            return True
        return False
