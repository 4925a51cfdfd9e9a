"""The exceptions nbqueue raises.

Every exception derives from :class:`NbqueueError`. A subclass's docstring is its default
message, so ``raise TaskTimeoutError()`` already says something useful; most call sites add
specifics (the task, the type, what to do next).
"""

from __future__ import annotations

import concurrent.futures
import sys


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


class TaskCancelledError(NbqueueError, concurrent.futures.CancelledError):
    """The task was cancelled."""


class WorkerCrashedError(NbqueueError):
    """The worker process running this task died (a crash, os._exit or a signal); the worker
    has been replaced."""


class WorkerStartError(WorkerCrashedError):
    """The worker processes exit before they are ready, again and again: no task can run.
    Raised by the queue's next call (``wait()``, ``add()``); the tasks stay pending. In a
    script, the usual cause is a queue started outside ``if __name__ == "__main__":``."""


class TaskNotProcessedError(NbqueueError):
    """exec() returned a result whose 'processed' is not True."""


class TaskFailedError(NbqueueError):
    """The task failed; the original error is attached as __cause__ where it could be rebuilt."""


class RemoteTraceback(NbqueueError):
    """The traceback of an error raised in a worker, attached as the ``__cause__`` of the
    exception that ``Task.result()`` raises (as ``concurrent.futures`` does for process
    pools), so that both sides show."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        #: the traceback, formatted
        self.text = text

    def __str__(self) -> str:
        return self.text


if sys.version_info >= (3, 11):  # concurrent.futures.TimeoutError is TimeoutError

    class QueueTimeoutError(NbqueueError, TimeoutError):
        """The wait ran out of time; the queue and its tasks go on."""

else:

    class QueueTimeoutError(NbqueueError, concurrent.futures.TimeoutError, TimeoutError):
        """The wait ran out of time; the queue and its tasks go on."""


class QueueShutDownError(NbqueueError):
    """The queue has been shut down; create a new Queue."""


class DatabaseError(NbqueueError):
    """The task database could not be reached or refused an operation (after retries)."""

    #: True when trying the same operation again cannot help: the database refused the data
    #: or the statement, or it is gone or damaged. False for a transient failure (a lost
    #: connection, a locked file) that outlasted the retries: the same write may succeed
    #: later.
    permanent: bool = False

    def __init__(self, message: str | None = None, *, permanent: bool | None = None) -> None:
        super().__init__(message)
        if permanent is not None:
            self.permanent = permanent


class SchemaMismatchError(DatabaseError):
    """The tasks table in the database does not have the layout this nbqueue expects; it
    has been left untouched. Use another table name or move the old table away."""

    permanent = True


class DatabaseLostError(DatabaseError):
    """The database file was deleted or replaced while the queue was using it; what is
    written now would be lost. Restore the file, or close the adapter to start afresh."""

    permanent = True


class RowRejectedError(NbqueueError, ValueError):
    """Rows with values the database cannot store were refused; nothing was written."""

    def __init__(self, rejected: dict[str, str]) -> None:
        #: uid -> what is wrong with that row (a row without a usable uid is keyed
        #: ``"row <index>"``, its position in the batch).
        self.rejected = dict(rejected)
        shown = "; ".join(f"{uid}: {problem}" for uid, problem in list(self.rejected.items())[:5])
        more = len(self.rejected) - 5
        tail = f"; and {more} more" if more > 0 else ""
        super().__init__(f"{len(self.rejected)} row(s) refused, nothing was written: {shown}{tail}")


class SignatureError(SerializationError):
    """A pickled payload from the database is unsigned or mis-signed and was refused
    (it was not unpickled)."""


class UnsignedPayloadError(NbqueueError):
    """A pickle would be stored unsigned in a shared database, where anyone who can write
    to the database could swap it for one that runs code on every controller and host that
    reads it; nothing was stored. Set NBQUEUE_SECRET to the same key on every controller and
    host, or opt out explicitly with NBQUEUE_ALLOW_UNSIGNED=1."""


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
    """Unsigned pickles are accepted from a shared database (the explicit opt-out,
    NBQUEUE_ALLOW_UNSIGNED), or a stored pickle was refused here."""


class TypeGenerationWarning(UserWarning):
    """The typing stub for a task directory could not be written (the queue works anyway)."""
