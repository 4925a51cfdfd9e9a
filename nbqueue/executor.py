"""TaskExecutor: the hooks that run a task type, and the one place an attempt is run."""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

from nbqueue import retry
from nbqueue.errors import (
    ConfigurationError,
    TaskNotProcessedError,
    TaskTimeoutError,
    TaskValidationError,
)
from nbqueue.task import DataT, ErrorRecord, ResultT, Status, Task, TaskResult

ValidationRule = Callable[[Task[Any]], bool]
T = TypeVar("T")


class TaskExecutor(Generic[DataT, ResultT]):
    """Base class for task executors: one subclass per file in the task directory (the file
    name is the task type), or one registered with ``Queue.register``. ``DataT`` is the type
    of ``task.data``; ``ResultT`` what exec() returns, a TypedDict subclassing
    ``TaskResult`` (so it has ``processed: bool``).

    Override ``exec`` (sync or ``async``); the other hooks are optional. Hooks run in a
    worker process. ``db`` is an SQLAlchemy Engine when the queue has a database, else None.
    """

    def __init__(self, task_type: str | None = None) -> None:
        self.task_type = task_type

    def validation_schema(self) -> list[ValidationRule]:
        """Rules that must all return True before exec() runs; a failure is never retried."""
        return []

    def retry_schema(self) -> list[str | type[BaseException]]:
        """Which errors to retry: empty retries any error up to ``max_retries``; otherwise
        regexes searched in ``"ExceptionName: message"`` or exception classes."""
        return []

    def exec(self, task: Task[DataT]) -> ResultT | Awaitable[ResultT]:
        """Do the work; return a mapping with ``processed: True`` plus your own fields
        (type it as a TypedDict subclassing ``TaskResult``)."""
        raise NotImplementedError(f"{type(self).__name__} must override exec(task)")

    def on_complete(self, task: Task[DataT], result: ResultT, db: Any) -> Any:
        """Called after a successful exec() and save_result()."""

    def on_failure(
        self, task: Task[DataT], result: ResultT | None, error: BaseException, db: Any
    ) -> Any:
        """Called when an attempt failed and will not be retried."""

    def save_result(self, task: Task[DataT], result: ResultT, db: Any) -> Any:
        """Called after a successful exec(), before on_complete(); persist the result here."""


class FunctionExecutor(TaskExecutor[Any, Any]):
    """Wraps a plain function (or coroutine function) ``fn(task)`` as an executor. A return
    value that is not a mapping with ``processed`` is wrapped as
    ``{"processed": True, "value": ...}``."""

    def __init__(self, fn: Callable[..., Any], task_type: str | None = None) -> None:
        super().__init__(task_type)
        self.fn = fn

    def exec(self, task: Task[Any]) -> Any:
        if inspect.iscoroutinefunction(self.fn):
            return self._exec_async(task)
        return _wrap_value(self.fn(task))

    async def _exec_async(self, task: Task[Any]) -> TaskResult[Any]:
        return _wrap_value(await self.fn(task))


def _wrap_value(value: Any) -> TaskResult[Any]:
    if isinstance(value, Mapping) and "processed" in value:
        return value  # type: ignore[return-value]
    return {"processed": True, "value": value}


def as_executor(obj: Any, task_type: str) -> TaskExecutor[Any, Any]:
    """An executor instance from a TaskExecutor subclass, an instance, or a function."""
    if isinstance(obj, type) and issubclass(obj, TaskExecutor):
        return obj(task_type)
    if isinstance(obj, TaskExecutor):
        if obj.task_type is None:
            obj.task_type = task_type
        return obj
    if callable(obj):
        return FunctionExecutor(obj, task_type)
    raise ConfigurationError(
        f"an executor must be a TaskExecutor subclass, an instance of one, or a function; "
        f"got {obj!r}"
    )


def default_type_name(obj: Any) -> str:
    """The task type a registered executor gets when none is given: its name."""
    name = getattr(obj, "__name__", None) or type(obj).__name__
    if name == "<lambda>":
        raise ConfigurationError("a lambda has no name; call register(fn, type='my-type')")
    return str(name)


Call = Callable[..., Any]


def call_sync(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a hook; run it to completion if it returns an awaitable (no loop is running)."""
    value = fn(*args)
    if inspect.isawaitable(value):
        return asyncio.run(_await(value))
    return value


async def _await(value: Awaitable[T]) -> T:
    return await value


def check_result(result: Any, task: Task[Any]) -> TaskResult[Any]:
    """exec() must return a mapping whose ``processed`` is True."""
    if not isinstance(result, Mapping) or "processed" not in result:
        raise TaskNotProcessedError(
            f"exec() for task {task.name!r} must return a mapping with 'processed', "
            f"got {type(result).__name__}"
        )
    if result["processed"] is not True:
        raise TaskNotProcessedError(
            f"exec() for task {task.name!r} returned processed={result['processed']!r}"
        )
    return result  # type: ignore[return-value]


def run_attempt(
    executor: TaskExecutor[Any, Any], task: Task[Any], db: Any, call: Call = call_sync
) -> TaskResult[Any]:
    """One attempt: validation rules, exec(), save_result(), on_complete(). Raises whatever
    went wrong; the caller decides about retries and calls on_failure."""
    verdict = task.validate(executor.validation_schema())
    if not verdict:
        raise TaskValidationError(f"task {task.name!r} failed validation: {verdict.reason}")
    result = check_result(call(executor.exec, task), task)
    call(executor.save_result, task, result, db)
    call(executor.on_complete, task, result, db)
    return result


def will_retry(executor: TaskExecutor[Any, Any], task: Task[Any], error: ErrorRecord) -> bool:
    """Whether the queue will make another attempt after ``error``."""
    return task.retry_count < task.max_retries and retry.should_retry(
        error, retry.validate_schema(executor.retry_schema(), task.type)
    )


def report_failure(
    executor: TaskExecutor[Any, Any],
    task: Task[Any],
    error: BaseException,
    db: Any,
    call: Call = call_sync,
) -> None:
    """Call on_failure; an error raised there is added to the task's errors, not raised."""
    try:
        call(executor.on_failure, task, None, error, db)
    except Exception as hook_error:
        task.add_error(hook_error)


def execute_in_process(
    task: Task[Any],
    executor: TaskExecutor[Any, Any] | Callable[..., Any],
    retry_schema: Iterable[str | type[BaseException]] | None = None,
) -> TaskResult[Any]:
    """Task.execute: one attempt in a thread of this process, bounded by the task's timeout
    (a timed-out attempt is abandoned, not killed: use a Queue to have it stopped)."""
    instance = as_executor(executor, task.type)
    if retry_schema is not None:
        schema = list(retry_schema)
        instance.retry_schema = lambda: schema  # type: ignore[method-assign]
    outcome: dict[str, Any] = {}

    def attempt() -> None:
        try:
            outcome["result"] = run_attempt(instance, task, None)
        except BaseException as exc:  # handed to the calling thread
            outcome["error"] = exc

    task.status, task.progress = Status.RUNNING, 0.0
    task.started_at, task.finished_at = dt.datetime.now(dt.timezone.utc), None
    thread = threading.Thread(target=attempt, name=f"nbqueue-execute-{task.uid[:8]}", daemon=True)
    thread.start()
    thread.join(task.timeout)
    task.finished_at = dt.datetime.now(dt.timezone.utc)
    if thread.is_alive():
        outcome["error"] = TaskTimeoutError(
            f"task {task.name!r} timed out after {task.timeout:g} s"
        )
    if "error" not in outcome:
        task.status, task.progress, task.result = Status.COMPLETED, 100.0, outcome["result"]
        return outcome["result"]  # type: ignore[no-any-return]
    error: BaseException = outcome["error"]
    task.add_error(error)
    if will_retry(instance, task, task.errors[-1]):
        task.retry()
    else:
        task.status = Status.FAILED
        report_failure(instance, task, error, None)
    raise error
