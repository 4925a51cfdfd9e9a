"""TaskExecutor: the hooks that run a task type; and the wrappers that make a plain
function an executor."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from nbqueue.errors import ConfigurationError
from nbqueue.records import TaskResult

if TYPE_CHECKING:
    from nbqueue.task import Task

DataT = TypeVar("DataT")
ResultT = TypeVar("ResultT")
ValidationRule = Callable[["Task[Any]"], bool]


class TaskExecutor(Generic[DataT, ResultT]):
    """Base class for task executors: one subclass per file in the task directory (the file
    name is the task type), or one registered with ``Queue.register``. ``DataT`` is the type
    of ``task.data``; ``ResultT`` what exec() returns, a TypedDict subclassing
    ``TaskResult`` (so it has ``processed: bool``).

    Override ``exec`` (sync or ``async``); the other hooks are optional. Hooks run in a
    worker process. ``db`` is an SQLAlchemy Engine when the queue has a database, else None.
    """

    #: True when exec() returns ``{"processed": True, "value": v}`` and the task's result is
    #: ``v`` itself (functions given to ``Queue.submit``).
    unwraps_result = False

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
        return wrap_value(self.fn(task))

    async def _exec_async(self, task: Task[Any]) -> TaskResult[Any]:
        return wrap_value(await self.fn(task))


class CallExecutor(TaskExecutor[Any, Any]):
    """A function given to ``Queue.submit``: called as ``fn(*args, **kwargs)`` with the
    task's ``data == {"args": [...], "kwargs": {...}}``; its return value is the task's
    result. Inside, ``nbqueue.current_task()`` is the running task."""

    unwraps_result = True

    def __init__(self, fn: Callable[..., Any], task_type: str | None = None) -> None:
        super().__init__(task_type)
        self.fn = fn

    def exec(self, task: Task[Any]) -> Any:
        args, kwargs = call_arguments(task.data)
        if inspect.iscoroutinefunction(self.fn):
            return self._exec_async(args, kwargs)
        return {"processed": True, "value": self.fn(*args, **kwargs)}

    async def _exec_async(self, args: list[Any], kwargs: dict[str, Any]) -> TaskResult[Any]:
        return {"processed": True, "value": await self.fn(*args, **kwargs)}


def call_data(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The ``data`` of a submitted call."""
    return {"args": list(args), "kwargs": dict(kwargs)}


def call_arguments(data: Any) -> tuple[list[Any], dict[str, Any]]:
    """``(args, kwargs)`` from the data of a submitted call."""
    if not isinstance(data, Mapping) or set(data) != {"args", "kwargs"}:
        raise ConfigurationError(
            f"the data of a submitted call must be {{'args': [...], 'kwargs': {{...}}}}, "
            f"got {data!r}"
        )
    return list(data["args"]), dict(data["kwargs"])


def wrap_value(value: Any) -> TaskResult[Any]:
    """A function executor's return value as a TaskResult."""
    if isinstance(value, Mapping) and "processed" in value:
        return value  # type: ignore[return-value]
    return {"processed": True, "value": value}


def as_executor(obj: Any, task_type: str, *, call: bool = False) -> TaskExecutor[Any, Any]:
    """An executor instance from a TaskExecutor subclass, an instance, or a function (a
    ``fn(task)`` executor, or with ``call`` a function submitted with its arguments)."""
    if isinstance(obj, type) and issubclass(obj, TaskExecutor):
        return obj(task_type)
    if isinstance(obj, TaskExecutor):
        if obj.task_type is None:
            obj.task_type = task_type
        return obj
    if callable(obj):
        return CallExecutor(obj, task_type) if call else FunctionExecutor(obj, task_type)
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
