"""The running task, from inside it: what a task reports to while it runs in a worker
(progress, cancellation), and :func:`current_task` for functions given to
``Queue.submit``, which do not receive their task as an argument."""

from __future__ import annotations

import contextvars
import threading
from typing import TYPE_CHECKING, Any, Protocol

from nbqueue.errors import NbqueueError

if TYPE_CHECKING:
    from nbqueue.task import Task


class AttemptHooks(Protocol):
    """Where a task running in a worker reports: the worker process (local or on Dask)."""

    def report_progress(self, task: Task[Any], progress: float) -> None:
        """Send ``progress`` (0..100) to the controller."""

    def cancel_event(self, task: Task[Any]) -> threading.Event:
        """The flag that is set when the task is cancelled."""

    def cancelled(self, task: Task[Any]) -> bool:
        """Whether the task was cancelled (a cancellation point asks this for every task:
        it does not make the flag when there is none yet)."""


_current: contextvars.ContextVar[Task[Any]] = contextvars.ContextVar("nbqueue_current_task")


def current_task() -> Task[Any]:
    """The task being run, from code running inside it (a function given to
    ``Queue.submit`` or ``map``, an executor's ``exec``): report progress with
    ``current_task().update_progress(50)``, pause at a cancellation point with
    ``current_task().sleep(1)``. Raises NbqueueError outside a task."""
    try:
        return _current.get()
    except LookupError:
        raise NbqueueError(
            "nbqueue.current_task() is only available inside a running task (a function "
            "given to Queue.submit or map, or an executor's exec)"
        ) from None


def running(task: Task[Any]) -> contextvars.Token[Task[Any]]:
    """Make ``task`` the current task of this thread (or coroutine); returns the token that
    :func:`finished` takes."""
    return _current.set(task)


def finished(token: contextvars.Token[Task[Any]]) -> None:
    """Undo :func:`running`."""
    _current.reset(token)
