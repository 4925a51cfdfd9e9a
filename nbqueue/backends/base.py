"""The execution-backend interface. The controller owns scheduling, retries and timeouts;
a backend only runs what it is given and reports what happened."""

from __future__ import annotations

import abc
import dataclasses
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import asyncio
    import threading
    from collections.abc import Callable

    from nbqueue.errors import NbqueueError
    from nbqueue.records import ErrorRecord
    from nbqueue.registry import ExecutorSpec
    from nbqueue.task import Task


class Runtime(Protocol):
    """The controller's loop, as a backend sees it: every backend method is called with
    ``lock`` held, and what a backend reports must be reported on ``loop`` with ``lock``
    held."""

    lock: threading.RLock
    loop: asyncio.AbstractEventLoop

    def in_loop_thread(self) -> bool: ...

    def add_reader(self, fd: int, fn: Callable[..., None], *args: Any) -> None:
        """Call ``fn(*args)`` on ``loop`` whenever ``fd`` is readable (call it on the loop)."""

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop (from any thread)."""

    def call_later(self, delay: float, fn: Callable[..., Any]) -> asyncio.TimerHandle | None:
        """Run ``fn`` on the loop after ``delay`` seconds."""


class BackendSink(Protocol):
    """What a backend reports to; called on the runtime's loop with its lock held."""

    def task_started(self, uid: str, worker: str, when: float, *, ended: bool = False) -> None:
        """The task started at ``when``; ``ended``: its outcome follows at once (it came
        with the start), so no deadline is watched for it."""

    def task_progress(self, uid: str, progress: float) -> None: ...

    def task_completed(self, uid: str, result: bytes, errors: list[ErrorRecord]) -> None: ...

    def task_failed(
        self, uid: str, error: ErrorRecord, exception: bytes | None, errors: list[ErrorRecord]
    ) -> None: ...

    def task_output(self, uid: str, text: str) -> None:
        """Something the task wrote (stdout, stderr, a log record)."""

    def task_lost(self, uid: str, error: BaseException | None) -> None:
        """The task's worker went away; ``error`` None means requeue without penalty."""

    def capacity_changed(self) -> None:
        """Slots became free: dispatch more."""

    def backend_failed(self, error: NbqueueError) -> None:
        """No task can run any more (say, the workers cannot start): the queue's next call
        raises ``error``; the tasks stay where they are."""


@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """One worker as the dashboard and ``nbqueue status`` show it."""

    name: str
    pid: int | None
    alive: bool
    running: int
    capacity: int
    restarts: int


class ExecutionBackend(abc.ABC):
    """Runs tasks somewhere. All methods are called with the runtime's lock held."""

    #: Set by the queue before start(): the database URL executor hooks connect to
    #: (their ``db`` argument), or None.
    db_url: str | None = None

    @abc.abstractmethod
    def start(self, sink: BackendSink, runtime: Runtime) -> None:
        """Start workers; report to ``sink``."""

    @abc.abstractmethod
    def free_slots(self) -> int:
        """How many more tasks may be submitted now."""

    @abc.abstractmethod
    def capacity(self) -> int:
        """How many tasks the workers can run at once, when all are up."""

    @abc.abstractmethod
    def submit(self, batch: list[tuple[Task[Any], ExecutorSpec]]) -> None:
        """Run these tasks (at most ``free_slots()`` of them)."""

    @abc.abstractmethod
    def cancel(self, uid: str) -> None:
        """Ask a running task to stop at its next cancellation point."""

    @abc.abstractmethod
    def abort(self, uid: str) -> None:
        """Stop a running task by force. Tasks disturbed on the way are reported with
        ``task_lost(uid, None)``; nothing more is reported for ``uid`` itself."""

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Stop every worker within a bounded time."""

    def pace(self) -> float | None:
        """How many tasks a second the workers get through lately (their slots over the
        attempts' average duration); None while unknown."""
        return None

    @abc.abstractmethod
    def workers(self) -> list[WorkerInfo]:
        """The current workers."""
