"""Functions given to ``Queue.submit`` and ``map``: how a call becomes a task (its data,
its default name, the Task options it may carry)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from nbqueue import checks, executor
from nbqueue.errors import ConfigurationError
from nbqueue.task import Task

#: Task options ``submit`` and ``map`` take in ``task_options``.
TASK_OPTIONS = frozenset({
    "name", "description", "priority", "max_retries", "delay", "timeout", "run_at",
    "user_id", "metadata",
})  # fmt: skip


def call_task(
    task_type: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any],
    key: str | None, options: dict[str, Any],
) -> Task[Any]:  # fmt: skip
    """The task of one submitted call (named after the call unless ``options`` name it)."""
    options.setdefault("name", call_name(fn, args, kwargs))
    return Task(type=task_type, data=executor.call_data(args, kwargs), key=key, **options)


def results_in_order(tasks: list[Task[Any]], timeout: float | None) -> Iterator[Any]:
    """``Executor.map``'s results: in order, all within ``timeout`` seconds; the tasks not
    done when the iteration stops (an error, a timeout, the caller) are cancelled."""
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        for task in tasks:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            yield task.result(left)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()


def task_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The Task options given to ``submit`` or ``map``, checked."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise checks.fail("task_options", "a mapping of Task options", options)
    unknown = set(options) - TASK_OPTIONS
    if unknown:
        raise ConfigurationError(
            f"task_options has unknown option(s) {sorted(unknown)}; the options are "
            f"{sorted(TASK_OPTIONS)}"
        )
    return dict(options)


def call_name(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    """``fit(0.1, depth=3)``, shortened to 80 characters."""
    shown = [_short(a) for a in args] + [f"{k}={_short(v)}" for k, v in kwargs.items()]
    name = f"{getattr(fn, '__name__', type(fn).__name__)}({', '.join(shown)})"
    return name if len(name) <= 80 else name[:79] + "…"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 24 else text[:23] + "…"
