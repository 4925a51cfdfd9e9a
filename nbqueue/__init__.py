"""nbqueue: a task queue for Jupyter. Tasks run in worker processes while the notebook
stays responsive."""

from typing import Any

from nbqueue.errors import (
    ConfigurationError,
    DatabaseError,
    ExecutorImportError,
    ExecutorImportWarning,
    NbqueueError,
    QueueShutDownError,
    SerializationError,
    SignatureError,
    TaskCancelledError,
    TaskFailedError,
    TaskNotProcessedError,
    TaskTimeoutError,
    TaskValidationError,
    UnknownTaskTypeError,
    UnsignedPayloadWarning,
    WorkerCrashedError,
)
from nbqueue.executor import TaskExecutor
from nbqueue.queue import Queue
from nbqueue.task import ErrorRecord, Status, Task, TaskResult, TaskStatus, has_property

__version__ = "0.1.0"


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext nbqueue``: the ``%nbqueue`` magic and live task widgets."""
    from nbqueue import magics

    magics.load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext nbqueue``."""
    from nbqueue import magics

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
    "ErrorRecord",
    "ExecutorImportError",
    "ExecutorImportWarning",
    "MemoryAdapter",
    "NbqueueError",
    "Queue",
    "QueueShutDownError",
    "SQLAlchemyAdapter",
    "SerializationError",
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
    "UnsignedPayloadWarning",
    "WorkerCrashedError",
    "has_property",
]
