"""The worker process: receives tasks over a pipe, runs them, streams results back.

Runs in a process started with ``spawn``. Sync ``exec`` runs in one of
``tasks_per_worker`` threads; an ``async def exec`` runs on the worker's event loop (the
thread that started it waits for it). Results and progress are coalesced into one pipe
message per flush by a sender thread. The process exits by itself when the controller
goes away (pipe closed, or the parent pid changes).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import os
import pickle
import signal
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from nbqueue import protocol, serialization
from nbqueue.executor import TaskExecutor, report_failure, run_attempt, will_retry
from nbqueue.registry import ExecutorCache
from nbqueue.task import ErrorRecord, Task, _Runtime

#: A progress-only flush waits this long for more updates, so a tight progress loop costs
#: a bounded number of messages.
PROGRESS_COALESCE_SECONDS = 0.02
ORPHAN_CHECK_SECONDS = 0.5


class _Outbox:
    """Messages waiting to go to the controller; a sender thread drains it."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._cond = threading.Condition()
        self._messages: list[tuple[Any, ...]] = []
        self._progress: dict[str, float] = {}

    def put(self, message: tuple[Any, ...]) -> None:
        with self._cond:
            self._messages.append(message)
            if len(self._messages) == 1:
                self._cond.notify()

    def progress(self, uid: str, value: float) -> None:
        with self._cond:
            wake = not self._progress and not self._messages
            self._progress[uid] = value
            if wake:
                self._cond.notify()

    def run(self) -> None:
        while True:
            with self._cond:
                while not self._messages and not self._progress:
                    self._cond.wait()
                if not self._messages:
                    self._cond.wait(PROGRESS_COALESCE_SECONDS)
                batch: list[tuple[Any, ...]] = [
                    (protocol.PROGRESS, uid, value) for uid, value in self._progress.items()
                ]
                batch.extend(self._messages)
                self._messages, self._progress = [], {}
            try:
                self._conn.send_bytes(pickle.dumps(batch, serialization.PROTOCOL))
            except OSError:
                os._exit(0)  # the controller is gone


class WorkerProcess(_Runtime):
    """State of one worker process."""

    def __init__(self, conn: Connection, tasks_per_worker: int, db_url: str | None) -> None:
        self.conn = conn
        self.outbox = _Outbox(conn)
        self.executors = ExecutorCache()
        self.pool = concurrent.futures.ThreadPoolExecutor(
            tasks_per_worker, thread_name_prefix="nbqueue-task"
        )
        self.cancel_events: dict[str, threading.Event] = {}
        self.running: set[str] = set()
        self.async_futures: dict[str, concurrent.futures.Future[Any]] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._db_url = db_url
        self._db: Any = None

    # -- _Runtime: what a running task reports to ------------------------------------------
    def report_progress(self, task: Task[Any], progress: float) -> None:
        self.outbox.progress(task.uid, progress)

    def cancel_event(self, task: Task[Any]) -> threading.Event:
        with self._lock:
            return self.cancel_events.setdefault(task.uid, threading.Event())

    # -- commands ------------------------------------------------------------------------
    def serve(self) -> None:
        while True:
            try:
                commands = pickle.loads(self.conn.recv_bytes())
            except (EOFError, OSError):
                os._exit(0)  # the controller closed the pipe or died
            for command in commands:
                kind = command[0]
                if kind == protocol.RUN:
                    with self._lock:
                        self.running.add(command[1][0])
                    self.pool.submit(self.run_task, *command[1:])
                elif kind == protocol.EXECUTOR:
                    self.executors.add_payload(command[1], command[2])
                elif kind == protocol.CANCEL:
                    self.cancel(command[1])
                elif kind == protocol.STOP:
                    os._exit(0)

    def cancel(self, uid: str) -> None:
        with self._lock:
            if uid not in self.running:
                return
            self.cancel_events.setdefault(uid, threading.Event()).set()
            future = self.async_futures.get(uid)
        if future is not None:
            future.cancel()

    def run_task(
        self, header: tuple[Any, ...], payload: bytes, task_type: str, ref: tuple[str, str]
    ) -> None:
        uid = header[0]
        self.outbox.put((protocol.STARTED, uid, time.time()))
        try:
            outcome = run_one(
                self, self.executors, header, payload, task_type, ref, self.db, self.call
            )
            self.outbox.put((outcome[0], uid, *outcome[1:]))
        finally:
            with self._lock:
                self.cancel_events.pop(uid, None)
                self.running.discard(uid)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call a hook from a task thread; a coroutine runs on the worker's event loop."""
        value = fn(*args)
        if not inspect.isawaitable(value):
            return value
        task = args[0] if args and isinstance(args[0], Task) else None
        future = asyncio.run_coroutine_threadsafe(_await(value), self.loop())
        if task is not None:
            with self._lock:
                self.async_futures[task.uid] = future
                if task.uid in self.cancel_events and self.cancel_events[task.uid].is_set():
                    future.cancel()
        try:
            return future.result()
        finally:
            if task is not None:
                with self._lock:
                    self.async_futures.pop(task.uid, None)

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(
                    target=self._loop.run_forever, name="nbqueue-worker-loop", daemon=True
                ).start()
            return self._loop

    def db(self) -> Any:
        if self._db_url is None:
            return None
        with self._lock:
            if self._db is None:
                import sqlalchemy

                self._db = sqlalchemy.create_engine(self._db_url)
            return self._db


def run_one(
    runtime: _Runtime,
    executors: ExecutorCache,
    header: tuple[Any, ...],
    payload: bytes,
    task_type: str,
    ref: tuple[str, str],
    db: Callable[[], Any],
    call: Callable[..., Any],
) -> tuple[Any, ...]:
    """One attempt of one task, as every worker runs it (local processes and Dask alike):
    load the executor, rebuild the task, run validation, exec() and the hooks, and say how
    it went in wire form: ``(DONE, result_bytes, errors)`` or ``(FAILED, error_record,
    exception_bytes_or_None, errors)``. Never raises; the controller judges what next.

    ``runtime`` receives progress and provides the cancellation flag; ``db()`` gives the
    engine hooks receive; ``call`` calls a hook (and runs it if it is a coroutine)."""
    task: Task[Any] | None = None
    executor: TaskExecutor[Any, Any] | None = None
    try:
        executor = executors.get(task_type, ref)
        data, metadata = serialization.loads(payload, f"data of task {header[1]!r}")
        task = Task._from_header(header, data, metadata)
        task._runtime = runtime
        task._check_cancelled()
        result = run_attempt(executor, task, db(), call)
        result_bytes = serialization.dumps(result, f"result of task {task.name!r}")
        return (protocol.DONE, result_bytes, task.errors)
    except BaseException as exc:  # reported to the controller, which decides what next
        if isinstance(exc, concurrent.futures.CancelledError):
            from nbqueue.errors import TaskCancelledError

            exc = TaskCancelledError(f"task {header[1]!r} was cancelled")
        record = ErrorRecord.from_exception(exc)
        errors = task.errors if task is not None else []
        if executor is not None and task is not None and not will_retry(executor, task, record):
            report_failure(executor, task, exc, db(), call)
        return (protocol.FAILED, record, _pickle_error(exc), errors)


async def _await(value: Any) -> Any:
    return await value


def _pickle_error(exc: BaseException) -> bytes | None:
    """The exception itself, when it survives a round trip, so task.wait() re-raises it."""
    try:
        data = pickle.dumps(exc, serialization.PROTOCOL)
        pickle.loads(data)
        return data
    except Exception:
        return None


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(ORPHAN_CHECK_SECONDS)
        if os.getppid() != parent:
            os._exit(0)


def main(conn: Connection, tasks_per_worker: int, db_url: str | None, parent: int) -> None:
    """Entry point of a worker process."""
    # Jupyter interrupts (SIGINT) and restarts (SIGTERM) the kernel's whole process group,
    # and systemd stops a service's whole cgroup: a worker leaves that to its controller,
    # which drains or stops it, and exits by itself if the controller is gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.getppid() != parent:
        os._exit(0)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    worker = WorkerProcess(conn, tasks_per_worker, db_url)
    threading.Thread(target=worker.outbox.run, name="nbqueue-sender", daemon=True).start()
    try:
        worker.serve()
    except BaseException:
        try:
            conn.send_bytes(pickle.dumps([(protocol.FATAL, traceback.format_exc())]))
        finally:
            os._exit(70)
