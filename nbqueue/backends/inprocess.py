"""InProcessBackend: tasks run in threads of this process, or not at all until told.

For fast tests of everything above the workers (the controller's scheduling, retries,
timeouts, cancellation, keys, persistence), and for trying nbqueue out where processes are
not wanted. Attempts run exactly as in a worker process (:func:`runner.run_one`), but a
crash, a segfault or a task that never yields cannot be contained: use the local worker
processes for real work.

With ``run=False`` nothing runs by itself: the test says what happened to each task sent
(:meth:`started`, :meth:`printed`, :meth:`completed`, :meth:`failed`, :meth:`lost`), and
:attr:`sent`, :attr:`cancelled` and :attr:`aborted` show what the controller asked.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nbqueue import attempt, checks, protocol, serialization, tracebacks
from nbqueue.backends import runner
from nbqueue.backends.base import BackendSink, ExecutionBackend, Runtime, WorkerInfo
from nbqueue.records import ErrorRecord
from nbqueue.registry import ExecutorCache

if TYPE_CHECKING:
    from nbqueue.registry import ExecutorSpec
    from nbqueue.task import Task

WORKER_NAME = "in-process"
#: How long a report waits for the controller's loop to take it.
REPORT_TIMEOUT_SECONDS = 30.0


class InProcessBackend(ExecutionBackend):
    """Runs up to ``slots`` tasks at once in threads of this process (``run=True``), or
    holds what it is sent for the caller to settle (``run=False``)."""

    def __init__(self, slots: int = 2, *, run: bool = True) -> None:
        self.slots = checks.integer(slots, "slots", minimum=1)
        self.run = run
        #: uid -> task, for every task sent and not settled yet
        self.sent: dict[str, Task[Any]] = {}
        #: uids the controller asked to cancel, and to stop by force
        self.cancelled: list[str] = []
        self.aborted: list[str] = []
        self._flags: dict[str, threading.Event] = {}
        self._executors = ExecutorCache()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._sink: BackendSink | None = None
        self._runtime: Runtime | None = None

    def start(self, sink: BackendSink, runtime: Runtime) -> None:
        self._sink, self._runtime = sink, runtime
        if self.run:
            self._pool = concurrent.futures.ThreadPoolExecutor(self.slots, "nbqueue-inprocess")

    def free_slots(self) -> int:
        return self.slots - len(self.sent)

    def capacity(self) -> int:
        return self.slots

    def submit(self, batch: list[tuple[Task[Any], ExecutorSpec]]) -> None:
        for task, spec in batch:
            self.sent[task.uid] = task
            self._flags[task.uid] = threading.Event()
            if spec.payload is not None:
                self._executors.add_payload(spec.ref[1], spec.payload)
            if self._pool is not None:
                assert task._payload is not None
                self._pool.submit(self._attempt, task.header(), task._payload, task.type, spec.ref)

    def cancel(self, uid: str) -> None:
        self.cancelled.append(uid)
        flag = self._flags.get(uid)
        if flag is not None:
            flag.set()

    def abort(self, uid: str) -> None:
        # a thread cannot be killed: its outcome is dropped, and it stops at its next
        # cancellation point
        self.aborted.append(uid)
        self.cancel(uid)
        self.sent.pop(uid, None)

    def shutdown(self) -> None:
        for flag in self._flags.values():
            flag.set()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self.sent.clear()

    def workers(self) -> list[WorkerInfo]:
        return [WorkerInfo(WORKER_NAME, os.getpid(), True, len(self.sent), self.slots, 0)]

    # -- what the test (or a thread of the pool) reports ----------------------------------
    def started(self, uid: str) -> None:
        """The task ``uid`` started."""
        self._report(uid, lambda sink: sink.task_started(uid, WORKER_NAME, time.time()))

    def printed(self, uid: str, text: str) -> None:
        """The task ``uid`` wrote ``text`` (stdout, stderr, a log record)."""
        self._report(uid, lambda sink: sink.task_output(uid, text))

    def completed(self, uid: str, value: Any = None) -> None:
        """The task ``uid`` returned ``value`` (its result)."""
        data = serialization.dumps(value)
        self._settle(uid, lambda sink: sink.task_completed(uid, data, []))

    def failed(self, uid: str, error: BaseException) -> None:
        """The task ``uid`` raised ``error``."""
        record = ErrorRecord.from_exception(error)
        blob = tracebacks.pickled_error(error)
        self._settle(uid, lambda sink: sink.task_failed(uid, record, blob, []))

    def lost(self, uid: str, error: BaseException | None = None) -> None:
        """The task's worker went away (``error`` None: requeue it without penalty)."""
        self._settle(uid, lambda sink: sink.task_lost(uid, error))

    def _settle(self, uid: str, report: Callable[[BackendSink], None]) -> None:
        def settled(sink: BackendSink) -> None:
            if self.sent.pop(uid, None) is not None:
                report(sink)
                sink.capacity_changed()

        self._report(uid, settled)

    def _report(self, uid: str, report: Callable[[BackendSink], None]) -> None:
        """Run ``report(sink)`` on the controller's loop with its lock held, and wait for
        it (so that a test sees its effect as soon as the call returns)."""
        runtime, sink = self._runtime, self._sink
        assert runtime is not None and sink is not None
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def locked() -> None:
            try:
                with runtime.lock:
                    if uid in self.sent:
                        report(sink)
            finally:
                done.set_result(None)

        runtime.call_soon(locked)
        if not runtime.in_loop_thread():
            done.result(REPORT_TIMEOUT_SECONDS)

    # -- running an attempt in a thread ----------------------------------------------------
    def _attempt(
        self, header: tuple[Any, ...], payload: bytes, task_type: str, ref: tuple[str, str]
    ) -> None:
        uid = header[0]
        self.started(uid)
        outcome = runner.run_one(
            _Hooks(self, uid), self._executors, header, payload, task_type, ref,
            lambda: None, attempt.call_sync,
        )  # fmt: skip
        if outcome[0] == protocol.DONE:
            self._settle(uid, lambda sink: sink.task_completed(uid, outcome[1], outcome[2]))
        else:
            record, blob, errors = outcome[1:]
            self._settle(uid, lambda sink: sink.task_failed(uid, record, blob, errors))


class _Hooks:
    """What an attempt running in a thread reports to (progress, cancellation)."""

    def __init__(self, backend: InProcessBackend, uid: str) -> None:
        self._backend, self._uid = backend, uid
        self._flag = backend._flags.get(uid) or threading.Event()

    def report_progress(self, task: Task[Any], progress: float) -> None:
        self._backend._report(self._uid, lambda sink: sink.task_progress(self._uid, progress))

    def cancel_event(self, task: Task[Any]) -> threading.Event:
        return self._flag

    def cancelled(self, task: Task[Any]) -> bool:
        return self._flag.is_set()
