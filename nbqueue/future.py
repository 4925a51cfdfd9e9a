"""A task's outcome as a :class:`concurrent.futures.Future`: waiting for it, reading it,
and the Future's own state, which ``concurrent.futures.wait`` / ``as_completed``, done
callbacks and asyncio use."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Protocol

from nbqueue import checks, errors, serialization
from nbqueue.errors import TaskCancelledError, TaskFailedError
from nbqueue.records import ErrorRecord, Status

if TYPE_CHECKING:
    from nbqueue.queue import Queue

# A Future's state (a Condition with its lock, a list of waiters...) costs about 1.6 KB; a
# queue may hold 100,000 pending tasks that nobody waits on through the Future machinery.
# So the Future's own attributes are made on first use (by concurrent.futures.wait, a done
# callback, asyncio), and then brought up to the task's state.
_FUTURE_FIELDS = frozenset(vars(concurrent.futures.Future()))
_future_lock = threading.Lock()
_Future = concurrent.futures.Future


class Owner(Protocol):
    """What a task in a queue asks its queue's controller."""

    def cancel(self, uid: str) -> bool: ...

    def wait_until(self, predicate: Callable[[], bool], timeout: float | None) -> None:
        """Block until ``predicate()``; raise TimeoutError or QueueShutDownError."""

    @property
    def queue(self) -> Queue: ...


class TaskFuture(_Future[Any]):
    """The Future side of a Task: its state is the task's status (set by the queue's
    controller), its result and error the task's."""

    __slots__ = ("_failure", "_future_made", "_owner", "_result_bytes", "_settled", "_value")

    _value: Any
    _result_bytes: bytes | None
    _failure: BaseException | None
    _owner: Owner | None
    _future_made: bool
    _settled: bool
    # what the task defines
    name: str
    uid: str
    status: Status
    errors: list[ErrorRecord]

    @property
    def error(self) -> ErrorRecord | None:
        """The most recent error, if any."""
        return self.errors[-1] if self.errors else None

    def __getattr__(self, name: str) -> Any:
        if name in _FUTURE_FIELDS and not self._future_made:
            with _future_lock:
                if not self._future_made:
                    _Future.__init__(self)
                    self._future_made = True
            self._settle()
            return object.__getattribute__(self, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _settle(self) -> None:
        """Bring the Future's own state up to a finished task's (once; the controller calls
        this, on its loop without its lock, when the task finishes, and it is called when
        the Future's state is made). The controller skips the call while that state was
        never made: whichever thread makes it later sees the finished status and settles."""
        if not self.status.finished:
            return
        with _future_lock:
            if not self._future_made or self._settled:
                return
            self._settled = True
        if self.status is Status.COMPLETED:
            _Future.set_result(self, None)  # result() reads the task's own fields
        elif self.status is Status.CANCELLED:
            _Future.cancel(self)
            _Future.set_running_or_notify_cancel(self)
        else:
            _Future.set_exception(self, self._error())

    def done(self) -> bool:
        """True once the task is completed, failed or cancelled."""
        return self.status.finished

    def running(self) -> bool:
        """True while an attempt runs in a worker."""
        return self.status is Status.RUNNING

    def cancelled(self) -> bool:
        """True when the task was cancelled."""
        return self.status is Status.CANCELLED

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the task to finish (at most ``timeout`` seconds: TimeoutError) and return
        its result: what exec() returned for a TaskExecutor task, the return value for a
        function given to ``Queue.submit``. Raises the task's own exception (the worker's
        traceback attached as its ``__cause__``), or TaskCancelledError."""
        __tracebackhide__ = True  # IPython and pytest leave this frame out of tracebacks
        self._wait(timeout)
        if self.status is Status.COMPLETED:
            return self._result_value()
        raise self._error()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait for the task to finish; its exception, or None when it completed. Raises
        TaskCancelledError for a cancelled task, as ``Future.exception`` does."""
        self._wait(timeout)
        if self.status is Status.COMPLETED:
            return None
        error = self._error()
        if self.status is Status.CANCELLED:
            raise error
        return error

    def wait(self, timeout: float | None = None) -> Any:
        """Block until this task has finished; return its result or raise its error (the
        seed's name for :meth:`result`)."""
        __tracebackhide__ = True
        return self.result(timeout)

    def __await__(self) -> Generator[Any, None, Any]:
        """``await task`` gives its result (or raises its error) without blocking the loop."""
        return asyncio.wrap_future(self).__await__()

    def _wait(self, timeout: float | None) -> None:
        timeout = checks.timeout(timeout)
        if self.status.finished:
            return
        if self._owner is None:
            raise TaskFailedError(f"task {self.name!r} is not in a queue; add it first")
        self._owner.wait_until(lambda: self.status.finished, timeout)

    def _result_value(self) -> Any:
        if self._result_bytes is not None:
            self._value = serialization.loads(self._result_bytes, f"result of task {self.name!r}")
            self._result_bytes = None
        return self._value

    def _error(self) -> BaseException:
        if self._failure is not None:
            return self._failure
        if self.status is Status.CANCELLED:
            return TaskCancelledError(f"task {self.name!r} ({self.uid}) was cancelled")
        last = self.error
        known = None if last is None else getattr(errors, last.type, None)
        if (  # failed elsewhere (another controller, a host): nbqueue's own error, rebuilt
            isinstance(known, type)
            and issubclass(known, errors.NbqueueError)
            and known.__init__ is errors.NbqueueError.__init__
            and f"nbqueue.errors.{last.type}" in last.classes  # type: ignore[union-attr]
        ):
            return known(last.message)  # type: ignore[union-attr]
        return TaskFailedError(f"task {self.name!r} ({self.uid}) failed: {last or 'unknown error'}")
