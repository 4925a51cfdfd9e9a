"""Task: one unit of work, its options, its state, and what happened to it."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import inspect
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypedDict, TypeVar

from nbqueue import config
from nbqueue.errors import ConfigurationError, TaskCancelledError, TaskFailedError

if TYPE_CHECKING:
    from nbqueue.executor import TaskExecutor
    from nbqueue.queue import Queue

DataT = TypeVar("DataT")
ResultT = TypeVar("ResultT")


class Status(str, enum.Enum):
    """Where a task is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"  # waiting out its back-off before the next attempt
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value

    @property
    def finished(self) -> bool:
        """True for completed, failed and cancelled."""
        return self in _FINISHED


_FINISHED = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})


class TaskResult(TypedDict, Generic[ResultT], total=False):
    """What exec() returns: a mapping with ``processed: bool`` plus any fields of your own.

    A plain function registered as an executor may return anything; its return value is
    wrapped as ``{"processed": True, "value": <return value>}``.
    """

    processed: bool
    value: ResultT


@dataclasses.dataclass(frozen=True)
class ErrorRecord:
    """One error in a task's history: the exception's class name, message and traceback."""

    type: str
    message: str
    traceback: str | None = None
    at: dt.datetime = dataclasses.field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    #: Fully qualified names of the exception's class and bases (for retry_schema classes).
    classes: tuple[str, ...] = ()

    @classmethod
    def from_exception(cls, error: BaseException) -> ErrorRecord:
        tb = "".join(traceback.format_exception(error)) if error.__traceback__ else None
        classes = tuple(f"{c.__module__}.{c.__qualname__}" for c in type(error).__mro__)
        return cls(type(error).__name__, str(error), tb, classes=classes)

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.message else self.type


@dataclasses.dataclass(frozen=True)
class TaskStatus:
    """A snapshot of one task, as returned by ``Task.get_status()`` and
    ``Queue.get_task_statuses()``. The status names are also reachable as
    ``TaskStatus.PENDING`` ... ``TaskStatus.CANCELLED``."""

    PENDING: ClassVar[Status] = Status.PENDING
    RUNNING: ClassVar[Status] = Status.RUNNING
    RETRYING: ClassVar[Status] = Status.RETRYING
    COMPLETED: ClassVar[Status] = Status.COMPLETED
    FAILED: ClassVar[Status] = Status.FAILED
    CANCELLED: ClassVar[Status] = Status.CANCELLED

    uid: str
    name: str
    type: str
    status: Status
    progress: float
    priority: int
    retry_count: int
    max_retries: int
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    run_at: dt.datetime | None
    worker: str | None
    error: str | None
    user_id: Any
    metadata: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class ValidationResult:
    """The outcome of ``Task.validate``; truthy when every rule passed."""

    passed: bool
    reason: str = "validation passed"

    def __bool__(self) -> bool:
        return self.passed


def has_property(obj: Any, name: str) -> bool:
    """True when ``obj`` has ``name`` as a mapping key or an attribute (the seed's
    ``hasProperty``), for use in validation rules."""
    if isinstance(obj, Mapping):
        return name in obj
    return obj is not None and hasattr(obj, name)


def _seconds(value: float | dt.timedelta | None, option: str, *, allow_zero: bool) -> float:
    if isinstance(value, dt.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(
            f"Task {option} must be a number of seconds or a datetime.timedelta, got {value!r}"
        )
    if value != value or value < 0 or (value == 0 and not allow_zero):
        need = "zero or more" if allow_zero else "more than zero"
        raise ConfigurationError(f"Task {option} must be {need} seconds, got {value!r}")
    return float(value)


def _utc(value: dt.datetime) -> dt.datetime:
    """Aware UTC datetime; a naive one is taken as local time, like datetime.now()."""
    return value.astimezone(dt.timezone.utc)


def _epoch(value: dt.datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _from_epoch(value: float | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromtimestamp(value, dt.timezone.utc)


def _rule_name(rule: Callable[..., Any]) -> str:
    name = getattr(rule, "__qualname__", None) or repr(rule)
    if name.endswith("<lambda>"):
        try:
            return inspect.getsource(rule).strip()
        except (OSError, TypeError):
            pass
    return name


class _Runtime:
    """Worker-side hooks a task reports to while it runs (progress, cancellation)."""

    def report_progress(self, task: Task[Any], progress: float) -> None:
        raise NotImplementedError

    def cancel_event(self, task: Task[Any]) -> threading.Event:
        raise NotImplementedError


class Task(Generic[DataT]):
    """One unit of work: what to run (``type``), with what (``data``), and how (priority,
    retries, delay, timeout, run_at). Its state (status, progress, result, errors) is kept
    up to date by the queue it is added to."""

    __slots__ = (
        "__weakref__",
        "_exception",
        "_payload",
        "_queue",
        "_ready_at",
        "_result",
        "_result_bytes",
        "_runtime",
        "_seq",
        "created_at",
        "data",
        "delay",
        "description",
        "errors",
        "finished_at",
        "max_retries",
        "metadata",
        "name",
        "priority",
        "progress",
        "retry_count",
        "run_at",
        "started_at",
        "status",
        "timeout",
        "type",
        "uid",
        "user_id",
        "worker",
    )  # fmt: skip

    def __init__(
        self,
        name: str,
        type: str,
        description: str | None = None,
        priority: int = 0,
        max_retries: int | None = None,
        delay: float | dt.timedelta = 0,
        timeout: float | dt.timedelta | None = None,
        run_at: dt.datetime | None = None,
        data: DataT | None = None,
        user_id: Any = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        uid: str | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"Task name must be a non-empty string, got {name!r}")
        if not isinstance(type, str) or not type:
            raise ConfigurationError(f"Task type must be a non-empty string, got {type!r}")
        if description is not None and not isinstance(description, str):
            raise ConfigurationError(f"Task description must be a string, got {description!r}")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise ConfigurationError(f"Task priority must be an int, got {priority!r}")
        if max_retries is None:
            max_retries = config.default_max_retries()
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError(f"Task max_retries must be an int >= 0, got {max_retries!r}")
        if run_at is not None and not isinstance(run_at, dt.datetime):
            raise ConfigurationError(f"Task run_at must be a datetime, got {run_at!r}")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise ConfigurationError(f"Task metadata must be a mapping, got {metadata!r}")
        if uid is not None and (not isinstance(uid, str) or not uid):
            raise ConfigurationError(f"Task uid must be a non-empty string, got {uid!r}")
        self.uid: str = uid or uuid.uuid4().hex
        self.name = name
        self.type = type
        self.description = description
        self.priority = priority
        self.max_retries = max_retries
        self.delay = _seconds(delay, "delay", allow_zero=True)
        self.timeout = _seconds(
            config.default_timeout() if timeout is None else timeout, "timeout", allow_zero=False
        )
        self.run_at = None if run_at is None else _utc(run_at)
        self.data: DataT | None = data
        self.user_id = user_id
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.created_at = dt.datetime.now(dt.timezone.utc)
        self.status = Status.PENDING
        self.progress = 0.0
        self.retry_count = 0
        self.started_at: dt.datetime | None = None
        self.finished_at: dt.datetime | None = None
        self.errors: list[ErrorRecord] = []
        self.worker: str | None = None
        self._result: Any = None
        self._result_bytes: bytes | None = None
        self._exception: BaseException | None = None
        self._queue: Queue | None = None
        self._runtime: _Runtime | None = None
        self._payload: bytes | None = None
        self._ready_at = max(self.created_at.timestamp() + self.delay, _epoch(self.run_at) or 0.0)
        self._seq = 0

    def __repr__(self) -> str:
        return (
            f"<Task {self.name!r} type={self.type!r} uid={self.uid[:8]} "
            f"status={self.status.value} progress={self.progress:.0f}%>"
        )

    def _repr_html_(self) -> str:
        from nbqueue import display

        return display.task_html(self)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        """In a notebook kernel with ipywidgets, a live progress bar."""
        from nbqueue import display

        return display.task_mimebundle(self, include, exclude)

    @property
    def queue(self) -> Queue | None:
        """The queue this task was added to, if any."""
        return self._queue

    # -- results ---------------------------------------------------------------------------
    @property
    def result(self) -> TaskResult[Any] | None:
        """What exec() returned, once the task has completed (None before)."""
        if self._result_bytes is not None:
            from nbqueue import serialization

            self._result = serialization.loads(self._result_bytes)
            self._result_bytes = None
        return self._result  # type: ignore[no-any-return]

    @result.setter
    def result(self, value: TaskResult[Any] | None) -> None:
        self._result, self._result_bytes = value, None

    @property
    def error(self) -> ErrorRecord | None:
        """The most recent error, if any."""
        return self.errors[-1] if self.errors else None

    def wait(self, timeout: float | None = None) -> TaskResult[Any] | None:
        """Block until this task has finished; return its result or raise its error.

        In a notebook the kernel's event loop keeps turning while waiting, so widgets update.
        Raises TimeoutError when ``timeout`` seconds pass first."""
        if self.status.finished:
            pass
        elif self._queue is None:
            raise TaskFailedError(f"task {self.name!r} is not in a queue; add it first")
        else:
            self._queue._wait_for(lambda: self.status.finished, timeout)
        if self.status is Status.COMPLETED:
            return self.result
        raise self._failure()

    def _failure(self) -> BaseException:
        if self._exception is not None:
            return self._exception
        if self.status is Status.CANCELLED:
            return TaskCancelledError(f"task {self.name!r} ({self.uid}) was cancelled")
        last = self.error
        return TaskFailedError(f"task {self.name!r} ({self.uid}) failed: {last or 'unknown error'}")

    # -- the seed's lifecycle methods ------------------------------------------------------
    def sleep(self, seconds: float) -> Any:
        """Pause for ``seconds``; a cancellation point. In a sync exec() it blocks; in an
        ``async def exec`` use ``await task.sleep(s)``. Raises TaskCancelledError when the
        task has been cancelled."""
        seconds = _seconds(seconds, "sleep", allow_zero=True)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._sleep_blocking(seconds)
            return _done()
        return self._sleep_async(seconds)

    def _sleep_blocking(self, seconds: float) -> None:
        if self._runtime is None:
            time.sleep(seconds)
        elif self._runtime.cancel_event(self).wait(seconds):
            raise TaskCancelledError(f"task {self.name!r} was cancelled")

    async def _sleep_async(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            self._check_cancelled()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.05))

    def _check_cancelled(self) -> None:
        if self._runtime is not None and self._runtime.cancel_event(self).is_set():
            raise TaskCancelledError(f"task {self.name!r} was cancelled")

    def validate(self, rules: Iterable[Callable[[Task[Any]], bool]]) -> ValidationResult:
        """Run validation rules; the result is falsy, with a reason naming the first failing
        rule, when any rule returns something falsy or raises."""
        for rule in rules:
            if not callable(rule):
                return ValidationResult(False, f"validation rule {rule!r} is not callable")
            try:
                ok = rule(self)
            except Exception as exc:  # a rule that raises is a failed rule
                return ValidationResult(
                    False, f"validation rule {_rule_name(rule)} raised {type(exc).__name__}: {exc}"
                )
            if not ok:
                return ValidationResult(
                    False, f"validation rule {_rule_name(rule)} returned {ok!r}"
                )
        return ValidationResult(True)

    def execute(
        self,
        executor: TaskExecutor[Any, Any] | Callable[..., Any],
        retry_schema: Iterable[str | type[BaseException]] | None = None,
    ) -> TaskResult[Any]:
        """Run one attempt here, in this process: validation, exec() within the task's
        timeout, and the completion hooks. Returns the result; on error records it, sets the
        status to ``retrying`` when ``retry_schema`` and ``max_retries`` allow another
        attempt (``failed`` otherwise) and re-raises."""
        from nbqueue import executor as executor_module

        return executor_module.execute_in_process(self, executor, retry_schema)

    def retry(self) -> bool:
        """Prepare another attempt: False when ``max_retries`` is used up, else count the
        retry, reset progress and timestamps, and return True."""
        if self.retry_count >= self.max_retries:
            return False
        self.retry_count += 1
        self.status = Status.RETRYING
        self.progress = 0.0
        self.started_at = self.finished_at = None
        return True

    def cancel(self) -> bool:
        """Cancel this task (through its queue when it is in one). True when it was pending,
        retrying or running."""
        if self._queue is not None:
            return self._queue.cancel(self.uid)
        if self._runtime is not None:
            self._runtime.cancel_event(self).set()
            return True
        if self.status.finished:
            return False
        self.status = Status.CANCELLED
        self.finished_at = dt.datetime.now(dt.timezone.utc)
        return True

    def update_progress(self, progress: float) -> None:
        """Report progress, 0..100; inside a worker it streams to the controller. A
        cancellation point."""
        if (
            isinstance(progress, bool)
            or not isinstance(progress, (int, float))
            or not (0 <= progress <= 100)
        ):
            raise ConfigurationError(f"progress must be a number from 0 to 100, got {progress!r}")
        self.progress = float(progress)
        if self._runtime is not None:
            self._check_cancelled()
            self._runtime.report_progress(self, self.progress)

    def get_status(self) -> TaskStatus:
        """A snapshot of this task's state."""
        last = self.error
        return TaskStatus(
            uid=self.uid, name=self.name, type=self.type, status=self.status,
            progress=self.progress, priority=self.priority, retry_count=self.retry_count,
            max_retries=self.max_retries, created_at=self.created_at,
            started_at=self.started_at, finished_at=self.finished_at, run_at=self.run_at,
            worker=self.worker, error=None if last is None else str(last),
            user_id=self.user_id, metadata=self.metadata,
        )  # fmt: skip

    def ready_to_run(self, now: float | None = None) -> bool:
        """True when the task is pending and its delay and run_at have passed."""
        return self.status is Status.PENDING and self._ready_at <= (
            time.time() if now is None else now
        )

    def add_error(self, error: BaseException | str) -> None:
        """Attach error context; it travels back to the controller with the task."""
        if isinstance(error, BaseException):
            self.errors.append(ErrorRecord.from_exception(error))
        else:
            self.errors.append(ErrorRecord(type="Error", message=str(error)))

    # -- wire form (controller <-> worker) -------------------------------------------------
    def _header(self) -> tuple[Any, ...]:
        return (
            self.uid, self.name, self.type, self.description, self.priority, self.retry_count,
            self.max_retries, self.delay, self.timeout, _epoch(self.run_at), self.user_id,
            self.created_at.timestamp(),
        )  # fmt: skip

    @classmethod
    def _from_header(cls, header: tuple[Any, ...], data: Any, metadata: Any) -> Task[Any]:
        task: Task[Any] = cls.__new__(cls)
        (task.uid, task.name, task.type, task.description, task.priority) = header[:5]
        (task.retry_count, task.max_retries, task.delay, task.timeout) = header[5:9]
        run_at, task.user_id, created = header[9:]
        task.run_at = _from_epoch(run_at)
        task.created_at = _from_epoch(created)  # type: ignore[assignment]
        task.data, task.metadata = data, metadata
        task.status, task.progress = Status.RUNNING, 0.0
        task.started_at = dt.datetime.now(dt.timezone.utc)
        task.finished_at = task.worker = task._queue = task._runtime = None
        task.errors, task._result, task._result_bytes, task._exception = [], None, None, None
        task._payload, task._ready_at, task._seq = None, 0.0, 0
        return task


class _Done:
    """An awaitable that is already finished, so ``await task.sleep(s)`` also works in code
    that called sleep without a running loop."""

    def __await__(self) -> Any:
        return iter(())


def _done() -> _Done:
    return _Done()
