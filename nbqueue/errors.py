"""The exceptions nbqueue raises.

Every exception derives from :class:`NbqueueError`. A subclass's docstring is its default
message, so ``raise TaskTimeoutError()`` already says something useful; most call sites add
specifics (the task, the type, what to do next).
"""

from __future__ import annotations


class NbqueueError(Exception):
    """nbqueue error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(NbqueueError, ValueError):
    """Invalid option value; check the argument named in this message."""


class UnknownTaskTypeError(NbqueueError, KeyError):
    """No executor is registered for this task type; add a file to the task directory or
    call Queue.register()."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class ExecutorImportError(NbqueueError):
    """The task file for this type failed to import; fix the file and call Queue.init() again."""


class SerializationError(NbqueueError):
    """A value could not be pickled or unpickled; use picklable data (plain Python objects,
    numpy arrays, DataFrames) or define the class in an importable module."""


class TaskValidationError(NbqueueError):
    """The task failed a rule of its executor's validation_schema(); it is never retried."""


class TaskTimeoutError(NbqueueError):
    """The task ran longer than its timeout; its worker was stopped. Raise Task(timeout=...)
    if the work needs longer."""


class TaskCancelledError(NbqueueError):
    """The task was cancelled."""


class WorkerCrashedError(NbqueueError):
    """The worker process running this task died (a crash, os._exit or a signal); the worker
    has been replaced."""


class TaskNotProcessedError(NbqueueError):
    """exec() returned a result whose 'processed' is not True."""


class TaskFailedError(NbqueueError):
    """The task failed; the original error is attached as __cause__ where it could be rebuilt."""


class QueueNotInitializedError(NbqueueError):
    """The queue has not been started; call queue.init() first."""


class QueueShutDownError(NbqueueError):
    """The queue has been shut down; create a new Queue."""
