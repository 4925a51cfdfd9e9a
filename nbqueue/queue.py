"""Queue: the controller. Keeps every task, decides what runs next, and reacts to what
the execution backend reports."""

from __future__ import annotations

import atexit
import collections
import concurrent.futures
import datetime as dt
import logging
import os
import socket
import time
import uuid
import warnings
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

from nbqueue import config, retry, serialization
from nbqueue.backends.base import ExecutionBackend, WorkerInfo
from nbqueue.backends.local import LocalBackend
from nbqueue.errors import (
    ConfigurationError,
    CorruptRowError,
    ExecutorImportWarning,
    NbqueueError,
    QueueShutDownError,
    SerializationError,
    SignatureError,
    TaskCancelledError,
    TaskTimeoutError,
    UnsignedPayloadWarning,
)
from nbqueue.events import EventKind, Events
from nbqueue.persistence import Persistence
from nbqueue.registry import ExecutorSpec, Registry
from nbqueue.runtime import Runtime
from nbqueue.scheduler import ReadyHeap, TimedHeap, stamp
from nbqueue.task import ErrorRecord, Status, Task, TaskStatus

if TYPE_CHECKING:
    import pandas

    from nbqueue.store import DatabaseAdapter, Row

F = TypeVar("F")
log = logging.getLogger("nbqueue")
#: With a database, claim this many times the workers' capacity ahead, so that freed slots
#: are refilled without a database round trip and claims come in large batches.
RESERVE_FACTOR = 4


class Queue:
    """A task queue whose tasks run in worker processes.

    ``Queue("tasks")`` discovers one executor per file of the ``tasks`` directory; executors
    defined in a notebook are added with :meth:`register`. Call :meth:`init` (or use the
    queue as a context manager), :meth:`add` tasks, then :meth:`run_automatically` to keep
    processing in the background, or :meth:`wait` to process and block until done.
    """

    def __init__(
        self,
        task_directory: str | Path | None = None,
        *,
        db: Any = None,
        worker_prefix: str = config.DEFAULT_WORKER_PREFIX,
        max_workers: int = config.DEFAULT_MAX_WORKERS,
        tasks_per_worker: int = config.DEFAULT_TASKS_PER_WORKER,
        backend: ExecutionBackend | None = None,
        lease_seconds: float = config.DEFAULT_LEASE_SECONDS,
        name: str | None = None,
    ) -> None:
        self.task_directory = None if task_directory is None else Path(task_directory)
        if self.task_directory is not None and not self.task_directory.is_dir():
            raise ConfigurationError(f"task_directory {str(task_directory)!r} is not a directory")
        if (
            isinstance(lease_seconds, bool)
            or not isinstance(lease_seconds, (int, float))
            or not (lease_seconds > 0)
        ):
            raise ConfigurationError(
                f"lease_seconds must be a positive number, got {lease_seconds!r}"
            )
        self.lease_seconds = float(lease_seconds)
        self._adapter: DatabaseAdapter | None = None
        self.set_database(db)
        if backend is None and db is None and max_workers == 0:
            raise ConfigurationError(
                "max_workers=0 starts no workers: it needs db= (a shared database served by "
                "`nbqueue worker` hosts)"
            )
        self._backend: ExecutionBackend = backend or LocalBackend(
            max_workers=max_workers, tasks_per_worker=tasks_per_worker, worker_prefix=worker_prefix
        )
        self.events = Events()
        #: Tracebacks of task files that failed to import, by task type.
        self.import_errors: dict[str, str] = {}
        self._registry = Registry()
        self._runtime: Runtime | None = None
        self._closed = False
        self._tasks: dict[str, Task[Any]] = {}
        self._go = ReadyHeap()  # ready, and processing was asked for
        self._idle = ReadyHeap()  # ready, waiting for run_tasks()/wait()/run_automatically()
        self._later = TimedHeap()  # waiting for delay / run_at / retry back-off
        self._running: dict[str, Task[Any]] = {}
        self._deadlines = TimedHeap()  # running tasks by timeout
        self._cancelling: dict[str, Task[Any]] = {}
        self._grace = TimedHeap()  # cancelled running tasks by kill time
        self._active = 0  # pending + retrying + running
        self._auto = False
        self._waiters = 0
        self._timer: Any = None
        self._timer_at: float | None = None
        self._ticker: Any = None
        # with a database: claims replace the heaps (the database orders the tasks)
        self._persistence: Persistence | None = None
        self._claiming = 0  # task slots asked of the database, not answered yet
        self._claimed: collections.deque[Task[Any]] = collections.deque()  # ours, not yet sent
        self._wanted: list[str] = []  # uids run_tasks() asked for, claimed as slots free up
        self._drain = False  # run_tasks(): claim until nothing ready is left
        self._starved = False  # the last claim found nothing more: wait for news first
        #: uids this controller removed: rows read (or claimed) before their delete was
        #: committed must not bring them back
        self._removed: set[str] = set()
        #: This controller's name in the database (leases, claims).
        if name is not None and (not isinstance(name, str) or not name):
            raise ConfigurationError(f"name must be a non-empty string, got {name!r}")
        self.owner = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def set_database(self, db: Any) -> None:
        """Keep the tasks in a database: a DatabaseAdapter, an SQLAlchemy Engine, or a URL
        such as ``"sqlite:///nbqueue.db"`` or ``"postgresql+psycopg://user@host/db"``;
        None keeps them in memory. Call before init()."""
        if getattr(self, "_runtime", None) is not None:
            raise ConfigurationError("set_database() must be called before init()")
        if db is None:
            self._adapter = None
            return
        from nbqueue import store

        self._adapter = store.make_adapter(db)

    # -- lifecycle -----------------------------------------------------------------------
    def init(self) -> Queue:
        """Discover executors, generate type stubs, start the workers. Idempotent."""
        if self._closed:
            raise QueueShutDownError()
        if self._runtime is not None:
            return self
        if self.task_directory is not None:
            for spec in self._registry.discover(self.task_directory):
                assert spec.error is not None
                self.import_errors[spec.type] = spec.error
                warnings.warn(
                    f"nbqueue: task type {spec.type!r} is unavailable, its file failed to "
                    f"import:\n{spec.error}",
                    ExecutorImportWarning,
                    stacklevel=2,
                )
            if config.generate_types_enabled():
                from nbqueue import typegen

                typegen.generate(self.task_directory, self._registry.specs())
        runtime = Runtime()
        self._runtime = runtime
        if self._adapter is not None:
            try:
                self._open_database(self._adapter, runtime)
            except BaseException:
                self._runtime = None
                runtime.close()
                raise
            self._backend.db_url = self._adapter.url

        def start() -> None:
            with runtime.lock:
                self._backend.start(self, runtime)
                self._dispatch()

        try:
            self._run_on_loop(start)
        except BaseException:
            self._runtime = None
            if self._persistence is not None:
                self._persistence.close()
                self._persistence = None
            runtime.close()
            raise
        _live_queues.add(self)
        return self

    def shutdown(self) -> None:
        """Stop processing and every worker (within a few seconds). Tasks still running go
        back to pending; nothing is waited for: call :meth:`wait` first for that."""
        runtime = self._runtime
        if runtime is None or self._closed:
            self._closed = True
            return
        with runtime.lock:
            self._closed = True
            self._auto = False

        def stop() -> None:
            with runtime.lock:
                for handle in (self._timer, self._ticker):
                    if handle is not None:
                        handle.cancel()
                self._backend.shutdown()
                for task in list(self._running.values()):
                    task.status, task.worker, task.started_at = Status.PENDING, None, None
                    self._emit("requeued", task)
                self._running.clear()
                self.events.emit("shutdown")
                runtime.notify()

        try:
            self._run_on_loop(stop)
        finally:
            if self._persistence is not None:
                self._persistence.close()
            runtime.close()
            _live_queues.discard(self)

    def __enter__(self) -> Queue:
        return self.init()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def _run_on_loop(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the controller's loop thread and wait for it (loop-only APIs such
        as add_reader are not thread-safe). Must not be called with the lock held."""
        runtime = self._runtime
        assert runtime is not None
        if runtime.in_loop_thread():
            fn()
            return
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def call() -> None:
            try:
                fn()
                done.set_result(None)
            except BaseException as exc:
                done.set_exception(exc)

        runtime.loop.call_soon_threadsafe(call)
        done.result(60)

    def _started(self) -> Runtime:
        if self._closed:
            raise QueueShutDownError()
        if self._runtime is None:
            self.init()
        assert self._runtime is not None
        return self._runtime

    # -- executors -----------------------------------------------------------------------
    @overload
    def register(self, executor: F, type: str | None = None) -> F: ...

    @overload
    def register(self, executor: None = None, type: str | None = None) -> Callable[[F], F]: ...

    def register(self, executor: Any = None, type: str | None = None) -> Any:
        """Register an executor defined here (a TaskExecutor subclass or instance, or a plain
        function ``fn(task)``) under ``type`` (default: its name). It is shipped to workers
        with cloudpickle. Returns the executor, so it also works as a decorator:
        ``@queue.register`` or ``@queue.register(type="fit")``."""
        if executor is None:
            return lambda obj: self.register(obj, type)
        lock = self._runtime.lock if self._runtime else None
        if lock is None:
            self._registry.register(executor, type)
        else:
            with lock:
                self._store_executor(self._registry.register(executor, type))
        return executor

    @property
    def types(self) -> list[str]:
        """The task types this queue knows."""
        return self._registry.types

    # -- adding and removing -------------------------------------------------------------
    def add(self, task: Task[Any]) -> Queue:
        """Enqueue a task; chainable. Raises at once for an unknown type, a task already in
        a queue, or data that cannot be pickled; nothing already queued is affected."""
        if not isinstance(task, Task):
            raise ConfigurationError(f"add() takes a Task, got {type(task).__name__}")
        runtime = self._started()
        self._registry.get(task.type)
        if task._queue is not None or task.uid in self._tasks:
            raise ConfigurationError(f"task {task.name!r} ({task.uid}) is already in a queue")
        if task.status is not Status.PENDING:
            raise ConfigurationError(
                f"task {task.name!r} is {task.status.value}; only new tasks can be added"
            )
        task._payload = serialization.dumps(
            (task.data, task.metadata), f"data of task {task.name!r}"
        )
        with runtime.lock:
            if self._closed:
                raise QueueShutDownError()
            self._tasks[task.uid] = task
            task._queue = self
            self._active += 1
            self._emit("added", task)
            if self._persistence is None:
                self._enqueue(task, time.time())
            self._starved = False
            self._dispatch()
        return self

    def remove(self, uid: str) -> bool:
        """Remove a task from the queue (a running one is cancelled first). False when no
        such task."""
        runtime = self._started()
        with runtime.lock:
            task = self._tasks.pop(uid, None)
            if task is None:
                return False
            if self._persistence is not None:
                self._removed.add(uid)
            if not task.status.finished:
                self._active -= 1
            if self._unclaim(task):
                task.status = Status.CANCELLED
            elif task.uid in self._running:
                self._request_cancel(task)
            elif not task.status.finished:
                stamp(task)
            task._queue = None
            self._emit("removed", task)
            runtime.notify()
            return True

    def clear(self) -> None:
        """Remove every task (running ones are cancelled)."""
        runtime = self._started()
        with runtime.lock:
            for uid in list(self._tasks):
                self.remove(uid)
            self._go.clear()
            self._idle.clear()
            self._later.clear()
            self._emit("cleared", None)

    def cancel(self, uid: str) -> bool:
        """Cancel a pending, retrying or running task. A running task stops at its next
        ``task.sleep()`` or ``update_progress()``, or its worker is killed after a short
        grace period. False when the task is unknown or already finished."""
        runtime = self._started()
        with runtime.lock:
            task = self._tasks.get(uid)
            if task is None or task.status.finished:
                return False
            if self._unclaim(task):
                self._finish(task, Status.CANCELLED)
            elif task.uid in self._running:  # sent to a worker (started or queued there)
                self._request_cancel(task)
            else:
                stamp(task)
                self._finish(task, Status.CANCELLED)
            return True

    def _unclaim(self, task: Task[Any]) -> bool:
        """Take a task that was claimed from the database but not yet sent to a worker out
        of the reserve; True when it was there."""
        if task not in self._claimed:
            return False
        self._claimed.remove(task)
        self._running.pop(task.uid, None)
        return True

    def _request_cancel(self, task: Task[Any]) -> None:
        if task.uid in self._cancelling:
            return
        self._cancelling[task.uid] = task
        self._backend.cancel(task.uid)
        self._grace.push(time.time() + config.CANCEL_GRACE_SECONDS, task, token=task._seq)
        self._rearm()

    # -- reading -------------------------------------------------------------------------
    def get_task(self, uid: str) -> Task[Any] | None:
        """The task with this uid, or None."""
        return self._tasks.get(uid)

    def get_pending_tasks(self) -> list[Task[Any]]:
        """Tasks waiting to run (pending or retrying), in the order they will run."""
        waiting = [t for t in self._snapshot() if t.status in (Status.PENDING, Status.RETRYING)]
        return sorted(waiting, key=lambda t: (-t.priority, t.created_at))

    def get_task_statuses(self) -> list[TaskStatus]:
        """A status snapshot of every task, in the order they were added."""
        return [t.get_status() for t in self._snapshot()]

    @property
    def tasks(self) -> list[Task[Any]]:
        """Every task, in the order they were added."""
        return self._snapshot()

    def _snapshot(self) -> list[Task[Any]]:
        if self._runtime is None:
            return list(self._tasks.values())
        with self._runtime.lock:
            return list(self._tasks.values())

    def counts(self) -> dict[str, int]:
        """How many tasks are in each status."""
        counts = dict.fromkeys((s.value for s in Status), 0)
        for task in self._snapshot():
            counts[task.status.value] += 1
        return counts

    def workers(self) -> list[WorkerInfo]:
        """The execution backend's workers."""
        return self._backend.workers()

    def status_frame(self) -> pandas.DataFrame:
        """A pandas DataFrame with one row per task (see README for the columns)."""
        from nbqueue import frame

        return frame.status_frame(self._snapshot())

    def dashboard(self) -> Any:
        """A live ipywidgets view of this queue (a text summary outside a notebook)."""
        from nbqueue import display

        return display.dashboard(self)

    @property
    def state(self) -> str:
        """``"not started"``, ``"running"`` or ``"shut down"``."""
        return "shut down" if self._closed else ("running" if self._runtime else "not started")

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.counts().items() if v)
        state = self.state
        return f"<nbqueue.Queue {state}, {len(self._tasks)} tasks{': ' + counts if counts else ''}>"

    def _repr_html_(self) -> str:
        from nbqueue import display

        return display.queue_html(self)

    # -- processing ----------------------------------------------------------------------
    def run_automatically(self, interval_seconds: float = 1.0) -> None:
        """Keep processing in the background until shutdown(); returns at once. Freed
        worker slots get the next task at once; ``interval_seconds`` paces the periodic
        pass (scheduled tasks, database sync)."""
        if (
            isinstance(interval_seconds, bool)
            or not isinstance(interval_seconds, (int, float))
            or not interval_seconds > 0
        ):
            raise ConfigurationError(
                f"interval_seconds must be a positive number, got {interval_seconds!r}"
            )
        runtime = self._started()
        with runtime.lock:
            self._auto = True
            self._interval = float(interval_seconds)
            self._release_idle()
            self._dispatch()
        runtime.call_soon(self._start_ticker)

    def drain(self, timeout: float | None = None) -> bool:
        """Stop taking new tasks and wait for the running ones to finish (``nbqueue worker``
        does this on SIGTERM). With a database, tasks claimed but not started are handed
        back at once. False when ``timeout`` passed first."""
        runtime = self._started()
        with runtime.lock:
            self._auto = self._drain = False
            self._wanted.clear()
            while self._claimed:
                task = self._claimed.popleft()
                self._running.pop(task.uid, None)
                task.status = Status.PENDING
                self._emit("requeued", task)
            runtime.notify()
        return runtime.wait_until(lambda: not self._running or self._closed, timeout)

    def _start_ticker(self) -> None:
        assert self._runtime is not None
        if self._ticker is not None:
            self._ticker.cancel()
        self._ticker = self._runtime.loop.call_later(self._interval, self._tick)

    def _tick(self) -> None:
        assert self._runtime is not None
        with self._runtime.lock:
            if self._closed or not self._auto:
                return
            self.schedule_tasks()
            self._dispatch()
        self._ticker = self._runtime.loop.call_later(self._interval, self._tick)

    def run_tasks(self, tasks: Iterable[Task[Any]] | None = None) -> None:
        """Send ready tasks to workers now: the given ones, or every ready pending task.
        Those beyond the free worker slots follow as slots free up, best first."""
        runtime = self._started()
        with runtime.lock:
            self.schedule_tasks()
            if self._persistence is not None:
                if tasks is None:
                    self._drain = True
                else:
                    self._wanted.extend(t.uid for t in tasks if self._tasks.get(t.uid) is t)
            elif tasks is None:
                self._release_idle()
            else:
                for task in tasks:
                    if self._tasks.get(task.uid) is task and task.ready_to_run():
                        self._go.push(task)
            self._dispatch()

    def schedule_tasks(self) -> list[Task[Any]]:
        """Move tasks whose delay, run_at or back-off has passed into the ready queue;
        returns the pending tasks in the order they will run."""
        runtime = self._started()
        with runtime.lock:
            for task in self._later.pop_due(time.time()):
                self._make_ready(task)
            self._rearm()
        return self.get_pending_tasks()

    def wait(self, timeout: float | None = None) -> None:
        """Process until nothing is pending, retrying or running. In a notebook the
        kernel's loop keeps turning meanwhile (widgets update). Raises TimeoutError after
        ``timeout`` seconds."""
        self._wait_for(lambda: self._active == 0, timeout)

    def _wait_for(self, predicate: Callable[[], bool], timeout: float | None) -> None:
        runtime = self._started()
        with runtime.lock:
            self._waiters += 1
            self._release_idle()
            self._dispatch()
        try:
            done = runtime.wait_until(lambda: predicate() or self._closed, timeout)
        finally:
            with runtime.lock:
                self._waiters -= 1
        if self._closed and not predicate():
            raise QueueShutDownError("the queue was shut down while waiting")
        if not done:
            raise TimeoutError(
                f"nbqueue: still {self._active} task(s) pending or running after {timeout} s"
            )

    # -- internals (all called with the lock held) ---------------------------------------
    def _emit(self, kind: EventKind, task: Task[Any] | None) -> None:
        if self.events:
            self.events.emit(kind, task)

    def _processing(self) -> bool:
        return self._auto or self._waiters > 0 or self._drain

    def _enqueue(self, task: Task[Any], now: float) -> None:
        if task._ready_at > now:
            self._later.push(task._ready_at, task)
            self._rearm()
        else:
            self._make_ready(task)

    def _make_ready(self, task: Task[Any]) -> None:
        task.status = Status.PENDING
        if self._processing() or task.retry_count > 0:
            self._go.push(task)
        else:
            self._idle.push(task)

    def _release_idle(self) -> None:
        for task in self._idle.drain():
            self._go.push(task)

    def _dispatch(self) -> None:
        if self._persistence is not None:
            self._request_claims()
            return
        if self._closed or not self._go:
            return
        free = self._backend.free_slots()
        batch = []
        while free > 0:
            task = self._go.pop()
            if task is None:
                break
            stamp(task)
            task.progress, task.worker = 0.0, None  # running once its worker starts it
            self._running[task.uid] = task
            batch.append((task, self._registry.get(task.type)))
            self._emit("dispatched", task)
            free -= 1
        if batch:
            self._backend.submit(batch)

    def _finish(self, task: Task[Any], status: Status, error: BaseException | None = None) -> None:
        self._running.pop(task.uid, None)
        self._cancelling.pop(task.uid, None)
        if task._queue is not self:
            return  # removed while it was running
        task.status = status
        task.finished_at = dt.datetime.now(dt.timezone.utc)
        if status is Status.COMPLETED:
            task.progress = 100.0
        task._exception = error
        self._active -= 1
        self._emit("finished", task)
        assert self._runtime is not None
        self._runtime.notify()

    def _fail(self, task: Task[Any], record: ErrorRecord, error: BaseException | None) -> None:
        """An attempt failed: cancel, retry after a back-off, or fail for good."""
        self._running.pop(task.uid, None)
        if task.uid in self._cancelling or TaskCancelledError.__name__ == record.type:
            self._finish(task, Status.CANCELLED, error)
            return
        spec = self._registry.get(task.type)
        assert spec.executor is not None
        schema = retry.validate_schema(spec.executor.retry_schema(), task.type)
        if task._queue is self and retry.should_retry(record, schema) and task.retry():
            when = time.time() + retry.backoff_seconds(task.retry_count)
            task._ready_at = when
            if self._persistence is None:  # with a database, claims find it when it is ready
                self._later.push(when, task)
                self._rearm()
            self._emit("retrying", task)
        else:
            self._finish(task, Status.FAILED, error)

    def _rearm(self) -> None:
        """Point the single timer at the earliest of: a waiting task's ready time, a
        running task's deadline, a cancelled task's kill time."""
        runtime = self._runtime
        if runtime is None or self._closed:
            return
        if not runtime.in_loop_thread():
            runtime.call_soon(self._rearm_locked)
            return
        times = [t for t in (self._later.next_time(), self._deadlines.next_time(),
                             self._grace.next_time()) if t is not None]  # fmt: skip
        if not times:
            return
        when = min(times)
        if self._timer_at is not None and self._timer_at <= when and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = runtime.loop.call_later(max(0.0, when - time.time()), self._on_timer)

    def _rearm_locked(self) -> None:
        assert self._runtime is not None
        with self._runtime.lock:
            self._rearm()

    def _on_timer(self) -> None:
        assert self._runtime is not None
        with self._runtime.lock:
            self._timer = self._timer_at = None
            if self._closed:
                return
            now = time.time()
            for task in self._deadlines.pop_due(now):
                if self._running.get(task.uid) is task:
                    self._expire(task)
            for task in self._grace.pop_due(now):
                if self._running.get(task.uid) is task:
                    self._backend.abort(task.uid)
                    self._finish(task, Status.CANCELLED)
            for task in self._later.pop_due(now):
                self._make_ready(task)
            self._dispatch()
            self._rearm()

    def _expire(self, task: Task[Any]) -> None:
        self._backend.abort(task.uid)
        error = TaskTimeoutError(
            f"task {task.name!r} timed out after {task.timeout:g} s and was stopped. Give it "
            "a larger Task(timeout=...) if the work needs longer"
        )
        record = ErrorRecord.from_exception(error)
        task.errors.append(record)
        self._fail(task, record, error)

    # -- with a database (called on the loop with the lock held, except _open_database) ---
    def _open_database(self, adapter: DatabaseAdapter, runtime: Runtime) -> None:
        """Open (or create) the table, take over every stored task, start the writer."""
        from nbqueue import persistence

        serialization.warn_if_unsigned(adapter.url)
        adapter.open()
        loaded_at = dt.datetime.now(dt.timezone.utc)
        stored = adapter.load()
        self._persistence = Persistence(
            adapter,
            runtime,
            owner=self.owner,
            lease_seconds=self.lease_seconds,
            running=self._running_uids,
            on_claimed=self._on_claimed,
            on_synced=self._on_synced,
            capacity=self._backend.capacity(),
            known_executors=self._known_executors,
            on_executors=self._on_executors,
            on_leases_lost=self._on_leases_lost,
        )
        self._persistence.synced_until(
            loaded_at - dt.timedelta(seconds=persistence.SYNC_OVERLAP_SECONDS)
        )
        stored.sort(key=lambda row: row["created_at"])
        with runtime.lock:
            for row in stored:
                self._adopt(row)
        self.events.subscribe(self._persistence.observe)
        for spec in self._registry.specs():
            self._store_executor(spec)
        self._persistence.start()

    def _store_executor(self, spec: ExecutorSpec) -> None:
        """With a database, a notebook-defined executor goes there too, for worker hosts."""
        if self._persistence is not None and spec.payload is not None and not spec.refused:
            self._persistence.save_executor(spec.type, spec.ref[1], spec.payload)

    def _known_executors(self) -> dict[str, str]:
        assert self._runtime is not None
        with self._runtime.lock:
            known = dict.fromkeys(self._registry.types, "file")
            known.update(self._registry.digests())
            return known

    def _on_leases_lost(self, uids: list[str]) -> None:
        """Leases that expired under this controller (it was stalled or cut off): those
        tasks may already run elsewhere, so stop them here and write nothing more of them."""
        assert self._runtime is not None and self._persistence is not None
        with self._runtime.lock:
            for uid in uids:
                task = self._running.pop(uid, None)
                if task is None:
                    continue
                log.warning("nbqueue: lost the lease on task %s (%s); stopping it", task.name, uid)
                if task in self._claimed:
                    self._claimed.remove(task)
                else:
                    self._backend.abort(uid)
                self._cancelling.pop(uid, None)
            self._runtime.notify()

    def _on_executors(self, found: list[tuple[str, str, bytes | None, str | None]]) -> None:
        """Executors registered in a notebook elsewhere, read from the database."""
        assert self._runtime is not None
        with self._runtime.lock:
            for task_type, digest, payload, refusal in found:
                try:
                    if payload is None:
                        raise SerializationError(refusal)
                    self._registry.add_shipped(task_type, digest, payload)
                except NbqueueError as exc:
                    log.error("nbqueue: executor %r from the database refused: %s", task_type, exc)
                    self._registry.refuse(task_type, digest, str(exc))
            self._request_claims()

    def _running_uids(self) -> list[str]:
        assert self._runtime is not None
        with self._runtime.lock:
            return list(self._running)

    def _adopt(self, row: Row) -> Task[Any]:
        """A task from a stored row joins this queue (a corrupt row becomes a failed task)."""
        from nbqueue import rows

        assert self._persistence is not None
        task, corrupt = rows.task_or_placeholder(row)
        if isinstance(corrupt and corrupt.__cause__, SignatureError):
            # this controller's NBQUEUE_SECRET may be wrong: fail it here only
            warnings.warn(str(corrupt), UnsignedPayloadWarning, stacklevel=2)
        elif corrupt is not None:  # fail it in the database too, so nobody claims it
            self._persistence.write(rows.task_state_row(task))
        task._queue = self
        self._tasks[task.uid] = task
        if not task.status.finished:
            self._active += 1
        with self._persistence.quiet():
            self._emit("added", task)
        return task

    def _request_claims(self) -> None:
        """Send claimed tasks to free worker slots, and ask the database for more: enough to
        fill the free slots and keep as many again claimed in reserve, so that a freed slot
        is refilled without waiting for the database."""
        if self._closed or self._persistence is None:
            return
        self._send_claimed()
        reserve = self._backend.free_slots() + RESERVE_FACTOR * self._backend.capacity()
        free = reserve - len(self._claimed) - self._claiming
        if free <= 0:
            return
        uids: list[str] = []
        while self._wanted and len(uids) < free:
            task = self._tasks.get(self._wanted.pop(0))
            if task is not None and task.status in (Status.PENDING, Status.RETRYING):
                uids.append(task.uid)
        limit = free - len(uids) if self._processing() and not self._starved else 0
        if not uids and limit <= 0:
            return
        self._claiming += len(uids) + limit
        types = [t for t in self._registry.types if t not in self.import_errors]
        self._persistence.request_claims(uids, limit, types)

    def _on_claimed(self, claimed: list[Row], won: list[str], asked: int) -> None:
        assert self._runtime is not None
        with self._runtime.lock:
            self._claiming -= asked
            tasks = [self._tasks.get(uid) for uid in won]
            for row in claimed:
                if row["uid"] in self._removed:
                    continue  # claimed just before our delete of it was committed
                task = self._tasks.get(row["uid"])
                if task is None or task.status.finished:
                    task = self._adopt(row)
                tasks.append(task)
            if len(claimed) + len(won) < asked:
                # nothing more is ready: ask again after the next sync, an add() or a
                # notification, not in a loop
                self._drain, self._starved = False, True
            for task in tasks:
                if task is not None and not task.status.finished and task._queue is self:
                    self._running[task.uid] = task  # ours (leased); pending until it is sent
                    self._claimed.append(task)
            self._request_claims()
            self._runtime.notify()

    def _send_claimed(self) -> None:
        free = self._backend.free_slots()
        batch = []
        while free > 0 and self._claimed:
            task = self._claimed.popleft()
            if self._running.get(task.uid) is not task:
                continue  # cancelled or removed meanwhile
            try:
                spec = self._registry.get(task.type)
            except NbqueueError as exc:  # an executor refused: fail it so nobody runs it
                record = ErrorRecord.from_exception(exc)
                task.errors.append(record)
                self._finish(task, Status.FAILED, exc)
                continue
            stamp(task)
            task.progress, task.worker = 0.0, None  # running once its worker starts it
            batch.append((task, spec))
            self._emit("dispatched", task)
            free -= 1
        if batch:
            self._backend.submit(batch)

    def _on_synced(self, changed: list[Row]) -> None:
        """Apply what other controllers and worker hosts wrote."""
        from nbqueue import rows

        assert self._runtime is not None and self._persistence is not None
        with self._runtime.lock:
            with self._persistence.quiet():
                for row in changed:
                    uid = row["uid"]
                    task = self._tasks.get(uid)
                    if task is None:
                        if uid not in self._removed:
                            self._adopt(row)
                        continue
                    if uid in self._running or task.status.finished:
                        continue  # ours to report, or settled
                    try:
                        rows.apply_state(task, row)
                    except CorruptRowError:
                        continue
                    if task.status.finished:
                        self._active -= 1
                        self._emit("finished", task)
                    else:
                        self._emit("progress", task)
            self._starved = False
            self._request_claims()
            self._runtime.notify()

    # -- BackendSink: what the backend reports (on the loop, lock held) -------------------
    def task_started(self, uid: str, worker: str, when: float) -> None:
        task = self._running.get(uid)
        if task is None:
            return
        task.status = Status.RUNNING
        task.started_at = dt.datetime.fromtimestamp(when, dt.timezone.utc)
        task.worker = worker
        self._deadlines.push(when + task.timeout, task, token=task._seq)
        self._rearm()
        self._emit("started", task)

    def task_progress(self, uid: str, progress: float) -> None:
        task = self._running.get(uid)
        if task is not None:
            task.progress = progress
            self._emit("progress", task)

    def task_completed(self, uid: str, result: bytes, errors: list[ErrorRecord]) -> None:
        task = self._running.get(uid)
        if task is None:
            return
        task.errors.extend(errors)
        task._result_bytes = result
        self._finish(task, Status.COMPLETED)

    def task_failed(
        self, uid: str, error: ErrorRecord, exception: bytes | None, errors: list[ErrorRecord]
    ) -> None:
        task = self._running.get(uid)
        if task is None:
            return
        task.errors.extend(errors)
        # exec() often does task.add_error(e) and then raises e: keep one record of it
        if not errors or (errors[-1].type, errors[-1].message) != (error.type, error.message):
            task.errors.append(error)
        exc: BaseException | None = None
        if exception is not None:
            try:
                exc = serialization.loads(exception)
            except NbqueueError:
                exc = None
        self._fail(task, error, exc)

    def task_lost(self, uid: str, error: BaseException | None) -> None:
        task = self._running.get(uid)
        if task is None:
            return
        if error is None:
            self._running.pop(uid)
            if task.uid in self._cancelling:
                self._finish(task, Status.CANCELLED)
                return
            task.status, task.worker, task.started_at = Status.PENDING, None, None
            if self._persistence is None:
                self._go.push(task)
            self._emit("requeued", task)
            return
        record = ErrorRecord.from_exception(error)
        task.errors.append(record)
        self._fail(task, record, error)

    def capacity_changed(self) -> None:
        self._dispatch()


_live_queues: weakref.WeakSet[Queue] = weakref.WeakSet()


@atexit.register
def _shutdown_all() -> None:
    for queue in list(_live_queues):
        try:
            queue.shutdown()
        except Exception:
            pass
