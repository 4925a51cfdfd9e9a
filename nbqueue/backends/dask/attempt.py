"""One attempt of one nbqueue task as a Dask task: :func:`run_on_dask` runs on a Dask
worker, reports through the process's outbox and returns the outcome as the future's
value."""

from __future__ import annotations

import os
import pickle
import threading
import time
from typing import TYPE_CHECKING, Any

from nbqueue import attempt as attempts
from nbqueue import protocol, serialization, shared
from nbqueue.backends import capture, runner
from nbqueue.backends.dask import process, wire
from nbqueue.backends.outbox import DaskOutbox
from nbqueue.errors import ExecutorImportError
from nbqueue.records import ErrorRecord

if TYPE_CHECKING:
    from nbqueue.registry import ExecutorRef
    from nbqueue.task import Task

#: How long a worker waits for a registered executor's payload to be published.
EXECUTOR_FETCH_SECONDS = 60.0


class AttemptRuntime:
    """What a task running on a Dask worker reports to: progress and output go to the
    outbox; the cancellation flag is raised by the controller's cancel topic."""

    def __init__(
        self,
        topic: str,
        key: str,
        outbox: DaskOutbox,
        flag: threading.Event,
        captured: capture.Capture,
    ) -> None:
        self._topic, self._key, self._outbox, self._flag = topic, key, outbox, flag
        self._capture = captured

    def send(self, message: list[Any]) -> None:
        self._outbox.put(message, self._topic)

    def report_progress(self, task: Task[Any], progress: float) -> None:
        self._capture.own_progress(task.uid)
        self._outbox.progress(self._key, progress, self._topic)

    def begin_output(self, uid: str) -> capture.TaskText:
        """What this thread writes from now on is the attempt's output."""
        return self._capture.begin(
            uid,
            lambda text: self._outbox.output(self._key, text, self._topic),
            lambda percent: self._outbox.progress(self._key, percent, self._topic),
        )

    def end_output(self, text: capture.TaskText) -> None:
        """The attempt is over: its output, all of it, is on its way before its outcome
        (``log_event`` queues it on the worker's event loop ahead of the result)."""
        rest = self._capture.end(text)
        if rest:
            self._outbox.output(self._key, rest, self._topic)
        self._outbox.flush()

    def cancel_event(self, task: Task[Any]) -> threading.Event:
        return self._flag

    def cancelled(self, task: Task[Any]) -> bool:
        return self._flag.is_set()


def fetch_payload(client: Any, variable: str, digest: str) -> bytes:
    """A payload (a registered executor, a queue.put() object) from the backend's Variable
    on the scheduler (once per worker process: it is cached by content hash)."""
    try:
        payload = (
            wire.distributed().Variable(variable, client=client).get(timeout=EXECUTOR_FETCH_SECONDS)
        )
    except Exception as exc:
        raise ExecutorImportError(
            f"could not fetch {variable!r} from the Dask scheduler: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(payload, bytes) or serialization.digest(payload) != digest:
        raise ExecutorImportError(f"the payload in variable {variable!r} is not the one expected")
    return payload


def run_on_dask(
    key: str,
    topic: str,
    worker_id: str,
    header: tuple[Any, ...],
    payload: bytes,
    task_type: str,
    ref: ExecutorRef,
    executor_variable: str | None,
    shared_variables: tuple[tuple[str, str], ...],
    db_url: str | None,
) -> tuple[tuple[Any, ...], tuple[str, str, int], float]:
    """The Dask task: one attempt of one nbqueue task, submitted to run only on the worker
    whose Dask id is ``worker_id``. Returns ``(outcome, (address, name, pid), started_at)``
    where ``outcome`` is what :func:`nbqueue.backends.runner.run_one` returns, or ``(LOST,)`` when
    this is another worker process (Dask re-running the attempt at the same address after
    the first one died): the controller decides about retries, so it runs nothing.

    That check is the exactly-once guarantee, and it costs no call to the scheduler: the
    future may only run at the address it was submitted to, so a re-run elsewhere is
    impossible, and a re-run at that address is a new worker process, with a new id."""
    distributed = wire.distributed()
    dask_worker = distributed.get_worker()
    where = (str(dask_worker.address), str(dask_worker.name), os.getpid())
    if str(dask_worker.id) != worker_id:
        return (wire.LOST,), where, time.time()
    client = distributed.get_client()
    flags = process.cancel_flags(client, topic)
    runtime = AttemptRuntime(
        topic, key, process.outbox(dask_worker), flags.flag(key), process.output_capture()
    )
    try:
        started = time.time()
        runtime.send(["started", key, *where, started])
        text = runtime.begin_output(header[0])
        try:
            executors = process.executors()
            try:
                if executor_variable is not None and not executors.has_payload(ref[1]):
                    executors.add_payload(ref[1], fetch_payload(client, executor_variable, ref[1]))
                for digest, variable in shared_variables:  # queue.put() objects, once each
                    if not shared.has(digest):
                        loaded = pickle.loads(fetch_payload(client, variable, digest))
                        shared.provide(digest, loaded)
            except ExecutorImportError as exc:
                record = ErrorRecord.from_exception(exc)
                return (protocol.FAILED, record, None, []), where, started
            outcome = runner.run_one(
                runtime,
                executors,
                header,
                payload,
                task_type,
                ref,
                lambda: process.engine(db_url),
                attempts.call_sync,
            )
        finally:
            runtime.end_output(text)
            runtime.send(["exit", key])
    finally:
        flags.release(key)
    return outcome, where, started
