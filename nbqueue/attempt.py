"""One attempt of one task, the way every worker runs it (local processes, Dask workers,
and ``Task.execute`` in this process): validation rules, exec(), the completion hooks,
and whether another attempt will follow."""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from nbqueue import context, retry
from nbqueue.errors import (
    TaskNotProcessedError,
    TaskTimeoutError,
    TaskValidationError,
)
from nbqueue.executor import TaskExecutor, as_executor
from nbqueue.records import ErrorRecord, Status, TaskResult, ValidationResult

if TYPE_CHECKING:
    from nbqueue.task import Task

T = TypeVar("T")
Call = Callable[..., Any]


def validate(task: Task[Any], rules: Iterable[Callable[[Task[Any]], bool]]) -> ValidationResult:
    """Task.validate: the first rule that returns something falsy, or raises, fails."""
    for rule in rules:
        if not callable(rule):
            return ValidationResult(False, f"validation rule {rule!r} is not callable")
        try:
            ok = rule(task)
        except Exception as exc:  # a rule that raises is a failed rule
            return ValidationResult(
                False, f"validation rule {_rule_name(rule)} raised {type(exc).__name__}: {exc}"
            )
        if not ok:
            return ValidationResult(False, f"validation rule {_rule_name(rule)} returned {ok!r}")
    return ValidationResult(True)


def _rule_name(rule: Callable[..., Any]) -> str:
    name = getattr(rule, "__qualname__", None) or repr(rule)
    if name.endswith("<lambda>"):
        try:
            return inspect.getsource(rule).strip()
        except (OSError, TypeError):
            pass
    return name


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
    verdict = validate(task, executor.validation_schema())
    if not verdict:
        raise TaskValidationError(f"task {task.name!r} failed validation: {verdict.reason}")
    token = context.running(task)
    try:
        result = check_result(call(executor.exec, task), task)
    finally:
        context.finished(token)
    call(executor.save_result, task, result, db)
    call(executor.on_complete, task, result, db)
    return result


def will_retry(executor: TaskExecutor[Any, Any], task: Task[Any], error: ErrorRecord) -> bool:
    """Whether the queue will make another attempt after ``error`` (an unusable
    retry_schema() means no)."""
    if task.retry_count >= task.max_retries:
        return False
    try:
        schema = retry.validate_schema(executor.retry_schema(), task.type)
    except Exception:
        return False
    return retry.should_retry(error, schema)


def report_failure(
    executor: TaskExecutor[Any, Any], task: Task[Any], error: BaseException, db: Any,
    call: Call = call_sync,
) -> None:  # fmt: skip
    """Call on_failure; an error raised there is added to the task's errors, not raised."""
    try:
        call(executor.on_failure, task, None, error, db)
    except Exception as hook_error:
        task.add_error(hook_error)


def execute_here(
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
        result: TaskResult[Any] = outcome["result"]
        task.status, task.progress = Status.COMPLETED, 100.0
        task._value = result["value"] if instance.unwraps_result else result
        task._settle()
        return result
    error: BaseException = outcome["error"]
    task.add_error(error)
    if will_retry(instance, task, task.errors[-1]):
        task.retry()
    else:
        task.status = Status.FAILED
        task._failure = error
        report_failure(instance, task, error, None)
        task._settle()
    raise error
