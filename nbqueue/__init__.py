"""nbqueue: a task queue for Jupyter. Tasks run in worker processes while the notebook
stays responsive."""

from typing import Any

from nbqueue.context import current_task
from nbqueue.errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseLostError,
    ExecutorImportError,
    ExecutorImportWarning,
    NbqueueError,
    QueueShutDownError,
    QueueTimeoutError,
    RowRejectedError,
    SerializationError,
    SignatureError,
    TaskCancelledError,
    TaskFailedError,
    TaskNotProcessedError,
    TaskTimeoutError,
    TaskValidationError,
    UnknownTaskTypeError,
    UnsignedPayloadError,
    UnsignedPayloadWarning,
    WorkerCrashedError,
    WorkerStartError,
)
from nbqueue.executor import TaskExecutor
from nbqueue.queue import Queue
from nbqueue.records import ErrorRecord, Status, TaskResult, TaskStatus, has_property
from nbqueue.shared import Shared
from nbqueue.task import Task
from nbqueue.ui import formatters as _formatters

__version__ = "0.1.0"

# In a notebook, tasks show as live progress bars and queues as HTML summaries.
_formatters.install_in_running_ipython(Task, Queue)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext nbqueue``: the ``%nbqueue`` magic and the display of tasks and queues."""
    from nbqueue.ui import magics

    magics.load(ipython, Task, Queue)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext nbqueue``."""
    from nbqueue.ui import magics

    magics.unload(ipython)


def __getattr__(name: str) -> Any:
    # The database classes import SQLAlchemy: load them on first use, so that worker
    # processes and in-memory queues start without it.
    if name in ("DatabaseAdapter", "SQLAlchemyAdapter", "MemoryAdapter"):
        from nbqueue import store

        return getattr(store, name)
    raise AttributeError(f"module 'nbqueue' has no attribute {name!r}")


__all__ = [
    "ConfigurationError",
    "DatabaseAdapter",
    "DatabaseError",
    "DatabaseLostError",
    "ErrorRecord",
    "ExecutorImportError",
    "ExecutorImportWarning",
    "MemoryAdapter",
    "NbqueueError",
    "Queue",
    "QueueShutDownError",
    "QueueTimeoutError",
    "RowRejectedError",
    "SQLAlchemyAdapter",
    "SerializationError",
    "Shared",
    "SignatureError",
    "Status",
    "Task",
    "TaskCancelledError",
    "TaskExecutor",
    "TaskFailedError",
    "TaskNotProcessedError",
    "TaskResult",
    "TaskStatus",
    "TaskTimeoutError",
    "TaskValidationError",
    "UnknownTaskTypeError",
    "UnsignedPayloadError",
    "UnsignedPayloadWarning",
    "WorkerCrashedError",
    "WorkerStartError",
    "current_task",
    "has_property",
]
