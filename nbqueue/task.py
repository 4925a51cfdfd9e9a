"""Task: one unit of work, its options, its state, and what happened to it.

A Task is a :class:`concurrent.futures.Future`: ``result()``, ``exception()``, ``done()``,
``add_done_callback()``, ``concurrent.futures.wait`` / ``as_completed`` and ``await task``
all work. Its state is kept up to date by the queue it is added to, on the queue's
controller thread.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import datetime as dt
import os
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from nbqueue import checks, config, context
from nbqueue.errors import (
    ConfigurationError,
    SerializationError,
    TaskCancelledError,
)
from nbqueue.future import TaskFuture
from nbqueue.records import (
    ErrorRecord,
    Status,
    TaskResult,
    TaskStatus,
    ValidationResult,
)

if TYPE_CHECKING:
    from nbqueue.executor import TaskExecutor
    from nbqueue.queue import Queue

DataT = TypeVar("DataT")


class Task(TaskFuture, Generic[DataT]):
    """One unit of work: what to run (``type``), with what (``data``), and how (priority,
    retries, delay, timeout, run_at). Its state (status, progress, result, errors, output)
    is kept up to date by the queue it is added to. ``key`` names the work: adding or
    submitting a task whose key an existing task has (unless that one failed or was
    cancelled) gives that task instead of running the work again."""

    __slots__ = (
        "_hooks",
        "_payload",
        "_ready_at",
        "_seq",
        "_shared",
        "created_at",
        "data",
        "delay",
        "description",
        "errors",
        "finished_at",
        "key",
        "max_retries",
        "metadata",
        "name",
        "output",
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

    uid: str
    name: str
    type: str
    description: str | None
    priority: int
    max_retries: int
    delay: float
    timeout: float
    run_at: dt.datetime | None
    data: Any
    user_id: Any
    metadata: dict[str, Any]
    key: str | None
    created_at: dt.datetime
    status: Status
    progress: float
    retry_count: int
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    worker: str | None
    errors: list[ErrorRecord]
    output: str
    _hooks: context.AttemptHooks | None
    _payload: bytes | None
    _shared: tuple[tuple[str, bytes], ...]
    _ready_at: float
    _seq: int

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
        key: str | None = None,
        uid: str | None = None,
    ) -> None:
        self._blank()
        self.name = checks.text(name, "Task name")
        self.type = checks.text(type, "Task type", max_length=checks.MAX_TYPE_LENGTH)
        if description is not None:
            checks.text(description, "Task description", allow_empty=True)
        self.description = description
        self.priority = checks.integer(priority, "Task priority")
        if max_retries is None:
            max_retries = config.default_max_retries()
        self.max_retries = checks.integer(max_retries, "Task max_retries", minimum=0)
        self.delay = checks.seconds(delay, "Task delay")
        if timeout is None:
            timeout = config.default_timeout()
        self.timeout = checks.seconds(timeout, "Task timeout", allow_zero=False)
        self.run_at = None if run_at is None else checks.moment(run_at, "Task run_at")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise checks.fail("Task metadata", "a mapping", metadata)
        if key is not None:
            checks.text(key, "Task key", max_length=checks.MAX_KEY_LENGTH)
        if uid is not None:
            checks.text(uid, "Task uid", max_length=checks.MAX_UID_LENGTH)
        self.uid = uid or _new_uid()
        self.key = key
        self.data = data
        self.user_id = user_id
        self.metadata = dict(metadata or {})
        self.created_at = dt.datetime.now(dt.timezone.utc)
        run_at_epoch = 0.0 if self.run_at is None else self.run_at.timestamp()
        self._ready_at = max(self.created_at.timestamp() + self.delay, run_at_epoch)

    def _blank(self) -> None:
        """Every field at its starting value (the options are set by the caller)."""
        self.description = self.run_at = self.key = None
        self.data = self.user_id = None
        self.metadata = {}
        self.priority, self.delay, self.timeout, self.max_retries = 0, 0.0, 0.0, 0
        self.status, self.progress, self.retry_count = Status.PENDING, 0.0, 0
        self.started_at = self.finished_at = self.worker = None
        self.errors = []
        self.output = ""
        self._value = self._result_bytes = self._failure = None
        self._owner = self._hooks = self._payload = None
        self._shared = ()
        self._ready_at, self._seq = 0.0, 0
        self._future_made = self._settled = False

    @classmethod
    def restore(cls, uid: str, name: str, type: str, created_at: dt.datetime) -> Task[Any]:
        """A task rebuilt from elsewhere (a stored row, a worker's copy): identity only,
        every other field at its starting value, no option checks."""
        task: Task[Any] = cls.__new__(cls)
        task._blank()
        task.uid, task.name, task.type, task.created_at = uid, name, type, created_at
        return task

    def __repr__(self) -> str:
        return (
            f"<Task {self.name!r} type={self.type!r} uid={self.uid[:8]} "
            f"status={self.status.value} progress={self.progress:.0f}%>"
        )

    @property
    def queue(self) -> Queue | None:
        """The queue this task was added to, if any."""
        return None if self._owner is None else self._owner.queue

    # -- the seed's lifecycle methods ------------------------------------------------------
    def sleep(self, seconds: float) -> Any:
        """Pause for ``seconds``; a cancellation point. In a sync exec() it blocks; in an
        ``async def exec`` use ``await task.sleep(s)``. Raises TaskCancelledError when the
        task has been cancelled."""
        seconds = checks.seconds(seconds, "sleep")
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._sleep_blocking(seconds)
            return _done()
        return self._sleep_async(seconds)

    def _sleep_blocking(self, seconds: float) -> None:
        if self._hooks is None:
            time.sleep(seconds)
        elif self._hooks.cancel_event(self).wait(seconds):
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
        if self._hooks is not None and self._hooks.cancelled(self):
            raise TaskCancelledError(f"task {self.name!r} was cancelled")

    def validate(self, rules: Iterable[Callable[[Task[Any]], bool]]) -> ValidationResult:
        """Run validation rules; the result is falsy, with a reason naming the first failing
        rule, when any rule returns something falsy or raises."""
        from nbqueue import attempt

        return attempt.validate(self, rules)

    def execute(
        self,
        executor: TaskExecutor[Any, Any] | Callable[..., Any],
        retry_schema: Iterable[str | builtins.type[BaseException]] | None = None,
    ) -> TaskResult[Any]:
        """Run one attempt here, in this process: validation, exec() within the task's
        timeout, and the completion hooks. Returns the result; on error records it, sets the
        status to ``retrying`` when ``retry_schema`` and ``max_retries`` allow another
        attempt (``failed`` otherwise) and re-raises."""
        from nbqueue import attempt

        return attempt.execute_here(self, executor, retry_schema)

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
        """Cancel this task (through its queue when it is in one): pending and retrying
        tasks at once, a running one at its next cancellation point (or its worker is
        stopped). True when it was pending, retrying or running; False once it has finished
        (cancelled included)."""
        if self._owner is not None:
            return self._owner.cancel(self.uid)
        if self._hooks is not None:
            self._hooks.cancel_event(self).set()
            return True
        if self.status.finished:
            return False
        self.status = Status.CANCELLED
        self.finished_at = dt.datetime.now(dt.timezone.utc)
        self._settle()
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
        if self._hooks is not None:
            self._check_cancelled()
            self._hooks.report_progress(self, self.progress)

    def get_status(self) -> TaskStatus:
        """A snapshot of this task's state."""
        last = self.error
        result = None
        if self.status is Status.COMPLETED:
            with contextlib.suppress(SerializationError):  # (its class is not importable here)
                result = self._result_value()
        return TaskStatus(
            uid=self.uid, name=self.name, type=self.type, status=self.status,
            progress=self.progress, priority=self.priority, retry_count=self.retry_count,
            max_retries=self.max_retries, created_at=self.created_at,
            started_at=self.started_at, finished_at=self.finished_at, run_at=self.run_at,
            worker=self.worker, error=None if last is None else str(last),
            user_id=self.user_id, metadata=self.metadata, key=self.key, output=self.output,
            result=result,
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

    # -- wire form (controller -> worker) --------------------------------------------------
    def header(self) -> tuple[Any, ...]:
        """What a worker needs besides the pickled inputs (``data``, ``metadata`` and
        ``user_id``, in ``_payload``); see :meth:`from_header`."""
        return (
            self.uid, self.name, self.type, self.description, self.priority, self.retry_count,
            self.max_retries, self.delay, self.timeout, _epoch(self.run_at),
            self.created_at.timestamp(), self.key,
        )  # fmt: skip

    @classmethod
    def from_header(cls, header: tuple[Any, ...], inputs: tuple[Any, Any, Any]) -> Task[Any]:
        """The worker's copy of a task, running; ``inputs`` is (data, metadata, user_id)."""
        uid, name, task_type, description, priority, retry_count = header[:6]
        max_retries, delay, timeout, run_at, created, key = header[6:]
        task = cls.restore(uid, name, task_type, _from_epoch(created))
        task.description, task.priority, task.retry_count = description, priority, retry_count
        task.max_retries, task.delay, task.timeout = max_retries, delay, timeout
        task.run_at, task.key = _from_epoch(run_at), key
        task.data, task.metadata, task.user_id = inputs
        task.status, task.started_at = Status.RUNNING, dt.datetime.now(dt.timezone.utc)
        return task


def _new_uid() -> str:
    """What ``uuid.uuid4().hex`` gives (random, version 4), a few times faster."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # the version
    raw[8] = raw[8] & 0x3F | 0x80  # the variant (RFC 4122)
    return raw.hex()


def _epoch(value: dt.datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _from_epoch(value: Any) -> Any:
    return None if value is None else dt.datetime.fromtimestamp(value, dt.timezone.utc)


class _Done:
    """An awaitable that is already finished, so ``await task.sleep(s)`` also works in code
    that called sleep without a running loop."""

    def __await__(self) -> Generator[Any, None, None]:
        yield from ()


def _done() -> _Done:
    return _Done()
