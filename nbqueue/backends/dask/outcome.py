"""What the end of an attempt's Dask future means for the queue: its value is the
attempt's outcome; a cancellation is the user's (or someone else's restart); an error from
Dask itself is a lost worker or a task that could not be run."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from nbqueue import protocol, tracebacks
from nbqueue.backends.dask import wire
from nbqueue.errors import TaskCancelledError, WorkerCrashedError
from nbqueue.records import ErrorRecord

if TYPE_CHECKING:
    from nbqueue.backends.base import BackendSink


def is_worker_loss(error: BaseException) -> bool:
    """Whether Dask failed the future because a worker or a connection went away."""
    distributed = wire.distributed()
    comm_closed = importlib.import_module("distributed.comm.core").CommClosedError
    return isinstance(error, (distributed.KilledWorker, comm_closed, OSError, TimeoutError))


def loss(name: str, worker_address: str | None) -> WorkerCrashedError:
    """The error of an attempt whose worker was lost while it ran."""
    where = f"Dask worker {worker_address}" if worker_address else "its Dask worker"
    return WorkerCrashedError(
        f"{where} was lost while running task {name!r} (the worker process died or lost its "
        "connection to the scheduler)"
    )


def report(
    sink: BackendSink,
    uid: str,
    name: str,
    *,
    status: str,
    value: Any,
    error: BaseException | None,
    started: bool,
    cancel_requested: bool,
    lost: WorkerCrashedError | None,
) -> None:
    """Tell ``sink`` how an attempt's future ended. ``started``: the attempt already
    reported starting (else a finished one is reported started first); ``lost``: the error
    for an outcome of ``LOST`` (None: no retry counts)."""
    if status == "finished":
        outcome, (address, _name, _pid), started_at = value
        if outcome[0] == wire.LOST:
            sink.task_lost(uid, lost)
            return
        if not started:
            sink.task_started(uid, address, started_at)
        if outcome[0] == protocol.DONE:
            sink.task_completed(uid, outcome[1], outcome[2])
        else:
            sink.task_failed(uid, outcome[1], outcome[2], outcome[3])
    elif status == "cancelled":
        if cancel_requested:
            cancelled = TaskCancelledError(f"task {name!r} was cancelled")
            sink.task_failed(uid, ErrorRecord.from_exception(cancelled), None, [])
        else:
            sink.task_lost(
                uid,
                WorkerCrashedError(
                    f"the Dask future of task {name!r} was cancelled outside nbqueue (a "
                    "client.restart() or a scheduler restart?)"
                ),
            )
    else:
        assert error is not None
        if is_worker_loss(error):
            sink.task_lost(
                uid,
                WorkerCrashedError(
                    f"Dask could not run task {name!r}: {type(error).__name__}: {error}"
                ),
            )
        else:
            record = ErrorRecord.from_exception(error)
            sink.task_failed(uid, record, tracebacks.pickled_error(error), [])
