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


class DatabaseError(NbqueueError):
    """The task database could not be reached or refused an operation (after retries)."""


class SchemaMismatchError(DatabaseError):
    """The tasks table in the database does not have the layout this nbqueue expects; it
    has been left untouched. Use another table name or move the old table away."""


class SignatureError(SerializationError):
    """A pickled payload from the database is unsigned or mis-signed and was refused
    (it was not unpickled)."""


class CorruptRowError(SerializationError):
    """A row of the tasks table could not be turned back into a task: a value is missing,
    malformed or has been tampered with. Only that task is affected."""

    def __init__(self, uid: str, problem: str) -> None:
        self.uid = uid
        super().__init__(f"the stored row of task {uid} is corrupt: {problem}")


class WidgetsUnavailableError(NbqueueError, ImportError):
    """ipywidgets is not installed; install it with ``pip install ipywidgets`` for the live
    dashboard (a text snapshot is shown instead)."""


# -- warnings ---------------------------------------------------------------------------------
class ExecutorImportWarning(UserWarning):
    """A task file failed to import; its type is unavailable, the others work."""


class UnsignedPayloadWarning(UserWarning):
    """Pickles are stored unsigned in a database other processes can write to."""


class TypeGenerationWarning(UserWarning):
    """The typing stub for a task directory could not be written (the queue works anyway)."""
