"""The small value types around a task: its status names, an error in its history, the
snapshot ``get_status()`` returns, what ``exec()`` returns. They depend on nothing else in
nbqueue, so the task model, the executors, the stores and the views can all share them."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import enum
import sys
import traceback
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Generic, TypeVar

if sys.version_info >= (3, 11):
    from typing import TypedDict
else:  # a generic TypedDict needs typing_extensions before 3.11
    from typing_extensions import TypedDict

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
        return self in FINISHED

    @property
    def waiting(self) -> bool:
        """True for pending and retrying: the task will run (again)."""
        return self is Status.PENDING or self is Status.RETRYING


FINISHED = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})


def status_counts(statuses: Iterable[Status]) -> dict[str, int]:
    """How many of ``statuses`` are each status, every status listed (in Status order):
    the one count used by the queue, its summaries and every view."""
    counts = dict.fromkeys((s.value for s in Status), 0)
    # a Counter over the members themselves: one C-level pass, however many tasks
    for status, n in collections.Counter(statuses).items():
        counts[status.value] += n
    return counts


class TaskResult(TypedDict, Generic[ResultT], total=False):
    """What exec() returns: a mapping with ``processed: bool`` plus any fields of your own.

    A plain function registered as an executor may return anything; its return value is
    wrapped as ``{"processed": True, "value": <return value>}``.
    """

    processed: bool
    value: ResultT


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclasses.dataclass(frozen=True)
class ErrorRecord:
    """One error in a task's history: the exception's class name, message and traceback."""

    type: str
    message: str
    traceback: str | None = None
    at: dt.datetime = dataclasses.field(default_factory=_now)
    #: Fully qualified names of the exception's class and bases (for retry_schema classes).
    classes: tuple[str, ...] = ()

    @classmethod
    def from_exception(cls, error: BaseException) -> ErrorRecord:
        tb = "".join(traceback.format_exception(error)) if error.__traceback__ else None
        return cls(type(error).__name__, str(error), tb, classes=class_names(type(error)))

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.message else self.type


def class_names(cls: type) -> tuple[str, ...]:
    """Fully qualified names of a class and its bases, as ErrorRecord.classes keeps them."""
    return tuple(f"{c.__module__}.{c.__qualname__}" for c in cls.__mro__)


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
    key: str | None = None
    #: What the task printed and logged (the last OUTPUT_LIMIT characters).
    output: str = ""
    #: What the task returned, once completed (its result mapping, or for a function
    #: submitted with ``Queue.submit`` its return value).
    result: Any = None


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
