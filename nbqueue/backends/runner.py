"""What a worker process does with a task it is sent: rebuild it, run one attempt, and say
how it went in wire form. Shared by the local worker processes and the Dask workers."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any

from nbqueue import attempt, context, protocol, serialization, tracebacks
from nbqueue.errors import TaskCancelledError
from nbqueue.executor import TaskExecutor
from nbqueue.records import ErrorRecord
from nbqueue.registry import ExecutorCache
from nbqueue.task import Task


def run_one(
    hooks: context.AttemptHooks,
    executors: ExecutorCache,
    header: tuple[Any, ...],
    payload: bytes,
    task_type: str,
    ref: tuple[str, str],
    db: Callable[[], Any],
    call: Callable[..., Any],
) -> tuple[Any, ...]:
    """One attempt, in wire form: ``(DONE, result_bytes, errors)`` or ``(FAILED,
    error_record, exception_bytes_or_None, errors)``. Never raises.

    ``hooks`` receives progress and provides the cancellation flag; ``db()`` gives the
    engine hooks receive; ``call`` calls a hook (and runs it if it is a coroutine)."""
    task: Task[Any] | None = None
    executor: TaskExecutor[Any, Any] | None = None
    try:
        executor = executors.get(task_type, ref)
        inputs = serialization.loads(payload, f"data of task {header[1]!r}")
        task = Task.from_header(header, inputs)
        task._hooks = hooks
        task._check_cancelled()
        result = attempt.run_attempt(executor, task, db(), call)
        value: Any = result["value"] if executor.unwraps_result else result
        result_bytes = serialization.dumps(value, f"result of task {task.name!r}")
        return (protocol.DONE, result_bytes, task.errors)
    except BaseException as exc:  # reported to the controller, which decides what next
        cancelled = (asyncio.CancelledError, concurrent.futures.CancelledError)
        if isinstance(exc, cancelled) and not isinstance(exc, TaskCancelledError):
            exc = TaskCancelledError(f"task {header[1]!r} was cancelled")  # an async exec
        record = ErrorRecord.from_exception(exc)
        record = ErrorRecord(
            record.type, record.message, tracebacks.user_traceback(exc), classes=record.classes
        )
        errors = task.errors if task is not None else []
        if (
            executor is not None
            and task is not None
            and not attempt.will_retry(executor, task, record)
        ):
            attempt.report_failure(executor, task, exc, db(), call)
        return (protocol.FAILED, record, tracebacks.pickled_error(exc), errors)
