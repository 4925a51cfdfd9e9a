"""Queue: the public face of nbqueue. It checks arguments and hands everything to the
controller (:mod:`nbqueue.controller`), which runs on a thread of its own."""

from __future__ import annotations

import atexit
import concurrent.futures
import logging
import os
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, overload

from nbqueue import calls, checks, config, shared
from nbqueue.backends.base import ExecutionBackend
from nbqueue.backends.local import LocalBackend
from nbqueue.controller.core import Controller
from nbqueue.errors import ConfigurationError, QueueShutDownError
from nbqueue.events import Events
from nbqueue.executor import default_type_name
from nbqueue.reading import QueueReading
from nbqueue.records import Status
from nbqueue.registry import Registry
from nbqueue.summary import WaitSummary
from nbqueue.task import Task

if TYPE_CHECKING:
    from nbqueue.store import DatabaseAdapter

F = TypeVar("F")
log = logging.getLogger("nbqueue")


class Queue(QueueReading, concurrent.futures.Executor):
    """A task queue whose tasks run in worker processes; a ``concurrent.futures.Executor``.

    ``Queue("tasks")`` discovers one executor per file of the ``tasks`` directory; executors
    defined in a notebook are added with :meth:`register`, and any function runs with
    :meth:`submit` or :meth:`map`. Call :meth:`init` (or use the queue as a context
    manager), :meth:`add` tasks, then :meth:`run_automatically` to keep processing in the
    background, or :meth:`wait` to process and block until done.
    """

    def __init__(
        self,
        task_directory: str | os.PathLike[str] | None = None,
        *,
        db: Any = None,
        worker_prefix: str = config.DEFAULT_WORKER_PREFIX,
        max_workers: int | None = None,
        tasks_per_worker: int = config.DEFAULT_TASKS_PER_WORKER,
        backend: ExecutionBackend | None = None,
        lease_seconds: float = config.DEFAULT_LEASE_SECONDS,
        name: str | None = None,
    ) -> None:
        self.task_directory = checks.directory(task_directory, "task_directory")
        self.lease_seconds = checks.seconds(lease_seconds, "lease_seconds", allow_zero=False)
        if name is not None:
            checks.text(name, "name", max_length=checks.MAX_NAME_LENGTH)
        #: This controller's name in a shared database (hosts table, logs).
        self.name = name or config.default_controller_name()
        if backend is not None and not isinstance(backend, ExecutionBackend):
            raise checks.fail("backend", "an ExecutionBackend (e.g. DaskBackend(client))", backend)
        if max_workers is None:
            max_workers = config.default_max_workers()
        if backend is None and db is None and max_workers == 0:
            raise ConfigurationError(
                "max_workers=0 starts no workers: it needs db= (a shared database served by "
                "`nbqueue worker` hosts)"
            )
        self._adapter: DatabaseAdapter | None = None
        self.set_database(db)
        self._backend: ExecutionBackend = backend or LocalBackend(
            max_workers=max_workers, tasks_per_worker=tasks_per_worker, worker_prefix=worker_prefix
        )
        self.events = Events()
        #: Tracebacks of task files that failed to import, by task type.
        self.import_errors: dict[str, str] = {}
        self._registry = Registry()
        self._controller: Controller | None = None
        self._closed = False

    def set_database(self, db: Any) -> None:
        """Keep the tasks in a database: a DatabaseAdapter, an SQLAlchemy Engine, or a URL
        such as ``"sqlite:///nbqueue.db"`` or ``"postgresql+psycopg://user@host/db"``;
        None keeps them in memory. Call before init()."""
        if self._started_or_none() is not None:
            raise ConfigurationError("set_database() must be called before init()")
        if db is None:
            self._adapter = None
            return
        from nbqueue import store  # SQLAlchemy: only for queues with a database

        self._adapter = store.make_adapter(db)

    # -- lifecycle -----------------------------------------------------------------------
    def init(self) -> Queue:
        """Discover executors, generate type stubs, open the database, start the workers.
        Idempotent."""
        if self._closed:
            raise QueueShutDownError()
        if self._controller is not None:
            return self
        if self.task_directory is not None:
            self.import_errors.update(self._registry.load_directory(self.task_directory))
        if self._adapter is not None:
            for spec in self._registry.specs():  # (executors from the notebook are stored)
                if spec.payload is not None:
                    self._ensure_storable(f"executor {spec.type!r}")
            self._adapter.signer.warn_if_opted_out()
            self._backend.db_url = self._adapter.url
        controller = Controller(
            self, backend=self._backend, registry=self._registry, events=self.events
        )
        controller.start(self._adapter, name=self.name, lease=self.lease_seconds)
        self._controller = controller
        _live_queues.add(self)
        return self

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking tasks, then stop the workers, as ``Executor.shutdown``: with ``wait``,
        block until every task has finished first; without, return at once and let them
        finish in the background. ``cancel_futures`` cancels the tasks not running yet.
        (:meth:`close` stops at once instead.)"""
        controller = self._controller
        if controller is None or self._closed:
            self._closed = True
            return
        controller.accepting = False
        if cancel_futures:
            for task in self.get_pending_tasks():
                controller.cancel(task.uid)
        if not wait:
            controller.run_automatically(controller.interval)
            controller.stop_when_idle(self.close)
            return
        try:
            controller.wait_until(lambda: controller.active == 0, None)
        finally:
            self.close()

    def close(self) -> None:
        """Stop at once, within a few seconds: tasks still running go back to pending (with
        a database, for the next controller to run); nothing is waited for."""
        controller = self._controller
        if controller is None or self._closed:
            self._closed = True
            return
        self._closed = True
        try:
            controller.close()
        finally:
            _live_queues.discard(self)

    def __enter__(self) -> Queue:
        return self.init()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        # after an error, don't hold it up: the tasks finish in the background
        self.shutdown(wait=exc_type is None)

    def _ensure_storable(self, what: str) -> None:
        """UnsignedPayloadError, before anything changes, when ``what`` (a pickle) may not
        be stored unsigned in this queue's database and there is no key to sign it."""
        if self._adapter is not None:
            self._adapter.signer.ensure_storable(what)

    def _started(self) -> Controller:
        if self._controller is None and not self._closed:
            self.init()
        self.check()
        assert self._controller is not None
        return self._controller

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
        self._ensure_storable(f"executor {type or default_type_name(executor)!r}")
        controller = self._started_or_none()
        if controller is None:
            self._registry.register(executor, type)
        else:
            with controller.lock:
                controller.registered(self._registry.register(executor, type))
        return executor

    @property
    def types(self) -> list[str]:
        """The task types this queue knows."""
        return self._registry.types

    # -- adding and removing -------------------------------------------------------------
    def add(self, task: Task[Any]) -> Queue:
        """Enqueue a task; chainable. Raises at once for an unknown type, a task already in
        a queue, or values that cannot be stored; nothing already queued is affected. A task
        whose ``key`` an existing task has (one that did not fail and was not cancelled)
        is not run again: it follows that task (same uid, status and result)."""
        if not isinstance(task, Task):
            raise ConfigurationError(f"add() takes a Task, got {type(task).__name__}")
        controller = self._started()
        self._registry.get(task.type)
        if task._owner is not None:
            raise ConfigurationError(f"task {task.name!r} ({task.uid}) is already in a queue")
        if task.status is not Status.PENDING:
            raise ConfigurationError(
                f"task {task.name!r} is {task.status.value}; only new tasks can be added"
            )
        self._registry.prepare(task)
        controller.add(task)
        return self

    def put(self, obj: Any) -> shared.Shared:
        """Send a big object to the workers once: returns a handle to pass to tasks instead
        of the object (as an argument of :meth:`submit` / :meth:`map`, or in a Task's
        ``data``); each task receives the object itself. Each worker process gets one copy,
        however many tasks use it; the queue keeps the pickle while the handle lives."""
        self._started()
        return self._registry.share(obj)

    def submit(  # type: ignore[override]
        self, fn: Callable[..., Any], /, *args: Any, key: str | None = None,
        task_options: Mapping[str, Any] | None = None, **kwargs: Any,
    ) -> Task[Any]:  # fmt: skip
        """Run ``fn(*args, **kwargs)`` in a worker, starting at once; returns its Task (a
        Future: ``.result()`` is the return value). ``key`` names the work: when a task
        with this key exists (pending, running or completed; in a database across kernel
        restarts), that task is returned instead. ``task_options`` takes Task options:
        name, description, priority, max_retries, delay, timeout, run_at, user_id,
        metadata."""
        controller = self._started()
        options = calls.task_options(task_options)
        if key is not None:
            checks.text(key, "key", max_length=checks.MAX_KEY_LENGTH)
            with controller.lock:
                existing = controller.keys.holder(key)
            if existing is not None:  # the work is done, or under way: that task
                controller.run_tasks([existing])
                return existing
        self._ensure_storable(f"function {getattr(fn, '__qualname__', fn)!r}")
        with controller.lock:
            spec = self._registry.register_call(fn)
            controller.registered(spec)
        task = calls.call_task(spec.type, fn, args, kwargs, key, options)
        self._registry.prepare(task)
        task = controller.add(task)
        controller.run_tasks([task])
        return task

    def map(  # type: ignore[override]
        self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
        chunksize: int = 1, key: Callable[..., str] | None = None,
        task_options: Mapping[str, Any] | None = None,
    ) -> Iterator[Any]:  # fmt: skip
        """``fn`` over the iterables, as ``Executor.map``: every call is submitted at once,
        and the results come back in order (TimeoutError when ``timeout`` seconds pass
        first). ``key(*args)`` names each call (see :meth:`submit`); ``chunksize`` is
        accepted for compatibility (each call is one task)."""
        timeout = checks.timeout(timeout, "map timeout")
        tasks = [
            self.submit(fn, *args, key=None if key is None else key(*args),
                        task_options=task_options)
            for args in zip(*iterables)  # noqa: B905 (as Executor.map: the shortest wins)
        ]  # fmt: skip
        return calls.results_in_order(tasks, timeout)

    def remove(self, uid: str) -> bool:
        """Remove a task from the queue (a running one is cancelled first). False when no
        such task."""
        checks.text(uid, "uid")
        return self._started().remove(uid) is not None

    def clear(self) -> None:
        """Remove every task (running ones are cancelled)."""
        self._started().clear()

    def cancel(self, uid: str) -> bool:
        """Cancel a pending, retrying or running task. A running task stops at its next
        ``task.sleep()`` or ``update_progress()``, or its worker is killed after a short
        grace period. False when the task is unknown or already finished."""
        checks.text(uid, "uid")
        return self._started().cancel(uid)

    def dashboard(self) -> Any:
        """A live ipywidgets view of this queue (a text summary outside a notebook)."""
        from nbqueue.ui import views

        return views.dashboard(self)

    # -- processing ----------------------------------------------------------------------
    def run_automatically(self, interval_seconds: float = 1.0) -> None:
        """Keep processing in the background until shutdown(); returns at once. Freed
        worker slots get the next task at once; ``interval_seconds`` paces the periodic
        pass (scheduled tasks, database sync)."""
        interval = checks.number(interval_seconds, "interval_seconds", above=True)
        self._started().run_automatically(interval)

    def run_tasks(self, tasks: Iterable[Task[Any]] | None = None) -> None:
        """Send ready tasks to workers now: the given ones, or every ready pending task.
        Those beyond the free worker slots follow as slots free up, best first."""
        self._started().run_tasks(None if tasks is None else list(tasks))

    def schedule_tasks(self) -> list[Task[Any]]:
        """Move tasks whose delay, run_at or back-off has passed into the ready queue;
        returns the pending tasks in the order they will run."""
        self._started().schedule()
        return self.get_pending_tasks()

    def wait(self, timeout: float | None = None) -> WaitSummary:
        """Process until nothing is pending, retrying or running, and return a summary of
        the tasks (it shows in a notebook; failures are also logged as a warning). The
        controller keeps working meanwhile; widgets keep updating. Raises TimeoutError
        after ``timeout`` seconds. A kernel interrupt stops the wait, not the queue."""
        timeout = checks.timeout(timeout, "wait timeout")
        controller = self._started()
        try:
            controller.wait_until(lambda: controller.active == 0, timeout)
        except KeyboardInterrupt:
            log.warning(
                "nbqueue: wait interrupted; the queue keeps running in the background "
                "(%d task(s) pending or running)", controller.active,
            )  # fmt: skip
            raise
        summary = WaitSummary.of(self.tasks)
        if summary.failed:
            log.warning("nbqueue: %s", summary.line())
        return summary

    def drain(self, timeout: float | None = None) -> bool:
        """Stop taking new tasks and wait for the running ones to finish (``nbqueue worker``
        does this on SIGTERM). With a database, tasks claimed but not started are handed
        back at once. False when ``timeout`` passed first."""
        timeout = checks.timeout(timeout, "drain timeout")
        controller = self._started()
        controller.drain()
        try:
            controller.wait_until(lambda: not controller.running, timeout)
        except TimeoutError:
            return False
        return True

    def check(self) -> None:
        """Raise what keeps this queue from going on, if anything: QueueShutDownError once
        it is shut down, the database's error once it is lost, WorkerStartError when its
        workers cannot start. Returns quietly while it is well; ``nbqueue worker`` checks
        every second."""
        if self._closed:
            raise QueueShutDownError()
        if self._controller is not None:
            self._controller.check()

    def flush(self, timeout: float | None = None) -> None:
        """Block until everything added and changed so far is committed to the database
        (a durability point; without a database there is nothing to do). TimeoutError after
        ``timeout`` seconds; the database's error when it is lost."""
        timeout = checks.timeout(timeout, "flush timeout")
        self._started().flush(timeout)


_live_queues: weakref.WeakSet[Queue] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for queue in list(_live_queues):
        try:
            queue.close()
        except Exception:
            pass
