"""Run a queue's tasks on a Dask cluster (``pip install "nbqueue[dask]"``).

The controller keeps what it always keeps: priorities, validation, retries with back-off,
timeouts, the status table. This backend only turns each attempt into one Dask future and
reports back, like the local worker processes do:

* **dispatch** -- ``client.submit(run_on_dask, ...)`` with a key of its own per attempt
  (``nbqueue-<type>-<uid>-...``), at most as many in flight as the cluster has worker threads,
  so the controller's priority order is the order work starts in. A registered executor's
  cloudpickled payload is published once in a ``distributed.Variable``; each worker process
  fetches it once and keeps the unpickled executor by content hash. A task file is imported
  by path on the worker, which works wherever the path exists (a ``LocalCluster``, a shared
  file system).
* **live reports** -- the task function sends ``started``, ``progress`` (coalesced) and
  ``exit`` with ``Worker.log_event`` on a topic of this backend's own; the controller
  receives them through ``Client.subscribe_topic``. The result, or the error, is the
  future's value.
* **cancellation** -- the controller publishes the attempt's key on a second topic of this
  backend's (``Client.log_event``); each worker process subscribes to it once
  (``Client.subscribe_topic`` on its worker client) and raises the ``threading.Event`` that
  ``task.sleep()`` and ``update_progress()`` check. The controller repeats the message
  until the attempt has ended, so one published before a worker had subscribed is not
  lost. An attempt that has not started yet also has its future cancelled.
* **abort** (a timeout, or a cancelled task that ignored the flag) -- the flag is set and the
  future cancelled; a thread cannot be killed, so when it has not ended after
  ``abort_grace`` seconds its worker is restarted (``Client.restart_workers``; needs a
  nanny). Tasks that shared that worker go back to the queue without counting a retry.
* **worker loss** -- the scheduler's ``remove-worker`` event (topic ``"all"``) names the lost
  worker; attempts that had started there are reported lost with ``WorkerCrashedError`` and
  the controller retries them by the task's own rules. Dask itself would re-run such a task
  elsewhere; to keep the decision with the controller each attempt first *claims* itself (a
  second ``distributed.Event``), and a re-run that finds its claim taken returns at once
  without running anything. ``KilledWorker`` and connection errors from a future count as
  worker loss too.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import importlib
import itertools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nbqueue import protocol, serialization
from nbqueue.backends.base import BackendSink, ExecutionBackend, WorkerInfo
from nbqueue.errors import (
    ConfigurationError,
    ExecutorImportError,
    TaskCancelledError,
    WorkerCrashedError,
)
from nbqueue.registry import ExecutorCache
from nbqueue.task import ErrorRecord, _Runtime

if TYPE_CHECKING:
    from nbqueue.registry import ExecutorRef, ExecutorSpec
    from nbqueue.runtime import Runtime
    from nbqueue.task import Task

log = logging.getLogger("nbqueue")

INSTALL_HINT = 'pip install "nbqueue[dask]"'

#: The controller repeats a cancellation this often until the attempt has ended.
CANCEL_RESEND_SECONDS = 1.0
#: Cancellations a worker keeps for attempts that have not started there (yet).
EARLY_CANCELS_KEPT = 4096
#: A progress-only batch waits this long for more updates (one log_event per flush).
PROGRESS_COALESCE_SECONDS = 0.02
#: After an abort, how long the attempt's thread may take to notice its flag before its
#: worker is restarted.
ABORT_GRACE_SECONDS = 1.0
#: How often the backend re-reads the cluster's workers (events keep it current between).
REFRESH_SECONDS = 5.0
#: Bound on one Client.restart_workers call.
RESTART_TIMEOUT_SECONDS = 60.0
#: How long a worker waits for a registered executor's payload to be published.
EXECUTOR_FETCH_SECONDS = 60.0
#: How long shutdown() waits for the cluster to acknowledge cancellations.
SHUTDOWN_WAIT_SECONDS = 5.0
#: The claim (and cancellation) of an attempt stopped before it reported starting, or lost
#: with its worker, is kept this long, so that a run Dask had already begun still sees it.
LOST_CLAIM_SECONDS = 30.0

#: An attempt that found its claim already taken: Dask re-ran it after its worker died.
LOST = "lost"


def _distributed() -> Any:
    """``distributed``, imported on first use (it is an optional dependency)."""
    try:
        return importlib.import_module("distributed")
    except ImportError as exc:
        raise ConfigurationError(
            f"DaskBackend needs dask.distributed, which is not installed ({exc}); install "
            f"it with: {INSTALL_HINT}"
        ) from exc


def _claim_name(key: str) -> str:
    return f"{key}:claim"


def _cancel_topic(topic: str) -> str:
    return f"{topic}-cancel"


# == the worker side: runs inside Dask worker processes ====================================
class _SharedExecutorCache(ExecutorCache):
    """ExecutorCache for a Dask worker, whose task threads load executors concurrently."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def add_payload(self, digest: str, payload: bytes) -> None:
        with self._lock:
            super().add_payload(digest, payload)

    def get(self, task_type: str, ref: ExecutorRef) -> Any:
        with self._lock:
            return super().get(task_type, ref)


class _Outbox:
    """Messages from the tasks of one Dask worker to controllers, sent by one thread with
    ``Worker.log_event`` (one event per topic per flush). Order is kept; a progress message
    still waiting to be sent is updated in place instead of adding another."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self._cond = threading.Condition()
        self._pending: dict[str, list[list[Any]]] = {}
        self._progress: dict[tuple[str, str], list[Any]] = {}
        self._urgent = False
        threading.Thread(target=self._run, name="nbqueue-dask-outbox", daemon=True).start()

    def put(self, topic: str, message: list[Any]) -> None:
        with self._cond:
            self._pending.setdefault(topic, []).append(message)
            self._urgent = True
            self._cond.notify()

    def progress(self, topic: str, key: str, value: float) -> None:
        with self._cond:
            waiting = self._progress.get((topic, key))
            if waiting is not None:
                waiting[2] = value
                return
            message = ["progress", key, value]
            self._progress[(topic, key)] = message
            self._pending.setdefault(topic, []).append(message)
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                if not self._urgent:
                    self._cond.wait(PROGRESS_COALESCE_SECONDS)
                batch = self._pending
                self._pending, self._progress, self._urgent = {}, {}, False
            for topic, messages in batch.items():
                try:
                    self.worker.log_event(topic, messages)
                except Exception:  # the worker is closing; nothing to report to
                    log.debug("nbqueue: could not send %d message(s)", len(messages))


_worker_state_lock = threading.Lock()
_outbox: _Outbox | None = None
_executors: _SharedExecutorCache | None = None
_engines: dict[str, Any] = {}


def _worker_outbox(worker: Any) -> _Outbox:
    global _outbox
    with _worker_state_lock:
        if _outbox is None or _outbox.worker is not worker:
            _outbox = _Outbox(worker)
        return _outbox


def _worker_executors() -> _SharedExecutorCache:
    global _executors
    with _worker_state_lock:
        if _executors is None:
            _executors = _SharedExecutorCache()
        return _executors


def _engine(db_url: str | None) -> Any:
    if db_url is None:
        return None
    with _worker_state_lock:
        if db_url not in _engines:
            import sqlalchemy

            _engines[db_url] = sqlalchemy.create_engine(db_url)
        return _engines[db_url]


class _CancelFlags:
    """The cancellation flags of one backend's attempts in one worker process, raised by the
    keys the controller publishes on the backend's cancel topic (the handler runs on the
    worker client's event loop)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flags: dict[str, threading.Event] = {}
        self._early: collections.OrderedDict[str, None] = collections.OrderedDict()

    def __call__(self, event: Any) -> None:
        with self._lock:
            for key in event[1]:
                flag = self._flags.get(key)
                if flag is not None:
                    flag.set()
                else:  # not started here (yet): remember, in case it does
                    self._early[key] = None
                    if len(self._early) > EARLY_CANCELS_KEPT:
                        self._early.popitem(last=False)

    def flag(self, key: str) -> threading.Event:
        with self._lock:
            flag = self._flags[key] = threading.Event()
            if self._early.pop(key, 0) is None:
                flag.set()
            return flag

    def release(self, key: str) -> None:
        with self._lock:
            self._flags.pop(key, None)


_cancel_flags: dict[tuple[int, str], _CancelFlags] = {}


def _worker_cancel_flags(client: Any, topic: str) -> _CancelFlags:
    """This process's flags for a backend, subscribed to its cancel topic on first use."""
    with _worker_state_lock:
        flags = _cancel_flags.get((id(client), topic))
        if flags is None:
            flags = _cancel_flags[(id(client), topic)] = _CancelFlags()
            client.subscribe_topic(_cancel_topic(topic), flags)
        return flags


class _AttemptRuntime(_Runtime):
    """What a task running on a Dask worker reports to: progress goes to the outbox; the
    cancellation flag is raised by the controller's cancel topic."""

    def __init__(self, topic: str, key: str, outbox: _Outbox, flag: threading.Event) -> None:
        self._topic, self._key, self._outbox, self._flag = topic, key, outbox, flag

    def send(self, message: list[Any]) -> None:
        self._outbox.put(self._topic, message)

    def report_progress(self, task: Task[Any], progress: float) -> None:
        self._outbox.progress(self._topic, self._key, progress)

    def cancel_event(self, task: Task[Any]) -> threading.Event:
        return self._flag


def _executor_payload(client: Any, variable: str, digest: str) -> bytes:
    """A registered executor's cloudpickled payload, from the backend's Variable on the
    scheduler (once per worker process: it is cached by content hash)."""
    try:
        payload = (
            _distributed().Variable(variable, client=client).get(timeout=EXECUTOR_FETCH_SECONDS)
        )
    except Exception as exc:
        raise ExecutorImportError(
            f"could not fetch the executor from the Dask scheduler (variable {variable!r}): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(payload, bytes) or serialization.digest(payload) != digest:
        raise ExecutorImportError(f"the executor in variable {variable!r} is not the one expected")
    return payload


def run_on_dask(
    key: str,
    topic: str,
    header: tuple[Any, ...],
    payload: bytes,
    task_type: str,
    ref: ExecutorRef,
    executor_variable: str | None,
    db_url: str | None,
) -> tuple[tuple[Any, ...], tuple[str, str, int], float]:
    """The Dask task: one attempt of one nbqueue task. Returns ``(outcome, (address, name,
    pid), started_at)`` where ``outcome`` is what :func:`nbqueue.worker.run_one` returns, or
    ``(LOST,)`` when this is Dask re-running an attempt whose worker died."""
    from nbqueue import executor as executor_module
    from nbqueue import worker as worker_module

    distributed = _distributed()
    worker = distributed.get_worker()
    client = distributed.get_client()
    where = (str(worker.address), str(worker.name), os.getpid())
    flags = _worker_cancel_flags(client, topic)
    runtime = _AttemptRuntime(topic, key, _worker_outbox(worker), flags.flag(key))
    try:
        claim = distributed.Event(_claim_name(key), client=client)
        if claim.is_set():
            return (LOST,), where, time.time()
        claim.set()
        started = time.time()
        runtime.send(["started", key, *where, started])
        try:
            executors = _worker_executors()
            if executor_variable is not None and not executors.has_payload(ref[1]):
                try:
                    executors.add_payload(
                        ref[1], _executor_payload(client, executor_variable, ref[1])
                    )
                except ExecutorImportError as exc:
                    record = ErrorRecord.from_exception(exc)
                    return (protocol.FAILED, record, None, []), where, started
            outcome = worker_module.run_one(
                runtime,
                executors,
                header,
                payload,
                task_type,
                ref,
                lambda: _engine(db_url),
                executor_module.call_sync,
            )
        finally:
            runtime.send(["exit", key])
    finally:
        flags.release(key)
    return outcome, where, started


# == the controller side ===================================================================
@dataclasses.dataclass(eq=False)
class _Attempt:
    uid: str
    key: str
    name: str
    future: Any
    worker: str | None = None  # address, once it reported "started"
    exited: bool = False  # its thread has ended (the future's value may still be on its way)
    cancel_requested: bool = False


class _ClusterEvents:
    """One subscription to the scheduler's ``"all"`` topic per client, shared by every
    backend on that client (a client has one handler per topic); a handler that was there
    before is kept and still called."""

    _lock = threading.Lock()
    _by_client: dict[int, _ClusterEvents] = {}

    def __init__(self, client: Any) -> None:
        self.client = client
        self.listeners: list[Callable[[Any], None]] = []
        self.previous: Callable[[Any], Any] | None = getattr(client, "_event_handlers", {}).get(
            "all"
        )

    def __call__(self, event: Any) -> Any:
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:
                log.exception("nbqueue: Dask cluster event handler failed")
        if self.previous is not None:
            return self.previous(event)
        return None

    @classmethod
    def add(cls, client: Any, listener: Callable[[Any], None]) -> None:
        with cls._lock:
            fanout = cls._by_client.get(id(client))
            if fanout is None or fanout.client is not client:
                fanout = cls._by_client[id(client)] = cls(client)
                client.subscribe_topic("all", fanout)
            fanout.listeners.append(listener)

    @classmethod
    def remove(cls, client: Any, listener: Callable[[Any], None]) -> None:
        with cls._lock:
            fanout = cls._by_client.get(id(client))
            if fanout is None or fanout.client is not client:
                return
            if listener in fanout.listeners:
                fanout.listeners.remove(listener)
            if fanout.listeners:
                return
            del cls._by_client[id(client)]
            handlers: dict[str, object] = getattr(client, "_event_handlers", {})
            if handlers.get("all") is not fanout:
                return  # someone subscribed after us: theirs stays
            try:
                if fanout.previous is not None:
                    client.subscribe_topic("all", fanout.previous)
                else:
                    client.unsubscribe_topic("all")
            except Exception:  # the client is closing
                pass


def _is_worker_loss(error: BaseException) -> bool:
    distributed = _distributed()
    comm_closed = importlib.import_module("distributed.comm.core").CommClosedError
    return isinstance(error, (distributed.KilledWorker, comm_closed, OSError, TimeoutError))


class DaskBackend(ExecutionBackend):
    """Runs a queue's tasks on a Dask cluster:
    ``Queue(..., backend=DaskBackend(client_or_address))``.

    ``client_or_address`` is a ``distributed.Client`` (used as is and left open at
    shutdown), a scheduler address such as ``"tcp://10.0.0.5:8786"``, or a cluster object
    such as a ``LocalCluster`` (a client is connected at ``init()`` and closed at shutdown).
    The workers need nbqueue installed, and, for executors from a task directory, the task
    files at the same path. ``db_url`` is handed to workers for the ``db`` argument of the
    hooks (a queue with a database sets it to the database's URL). Restarting a worker
    whose task cannot be stopped needs workers started with a nanny (the default of
    ``LocalCluster`` and ``dask worker``).
    """

    def __init__(
        self,
        client_or_address: Any,
        *,
        db_url: str | None = None,
        abort_grace: float = ABORT_GRACE_SECONDS,
        connect_timeout: float = 30.0,
    ) -> None:
        distributed = _distributed()
        self._client: Any = None
        self._target: Any = None
        if isinstance(client_or_address, distributed.Client):
            if client_or_address.asynchronous:
                raise ConfigurationError(
                    "DaskBackend needs a synchronous distributed.Client (not one created "
                    "with asynchronous=True); or pass the scheduler address"
                )
            self._client = client_or_address
        elif isinstance(client_or_address, str) or hasattr(client_or_address, "scheduler_address"):
            self._target = client_or_address
        else:
            raise ConfigurationError(
                "DaskBackend takes a distributed.Client, a scheduler address such as "
                f"'tcp://127.0.0.1:8786', or a cluster object; got {client_or_address!r}"
            )
        for option, value in (("abort_grace", abort_grace), ("connect_timeout", connect_timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigurationError(f"{option} must be a number >= 0, got {value!r}")
        self.db_url = db_url
        self.abort_grace = float(abort_grace)
        self.connect_timeout = float(connect_timeout)
        self._owns_client = self._client is None
        self._token = uuid.uuid4().hex[:12]
        self._topic = f"nbqueue-{self._token}"
        self._seq = itertools.count(1)
        self._sink: BackendSink | None = None
        self._runtime: Runtime | None = None
        self._io: concurrent.futures.ThreadPoolExecutor | None = None
        self._restarter: concurrent.futures.ThreadPoolExecutor | None = None
        self._stopped = False
        self._attempts: dict[str, _Attempt] = {}  # by task uid
        self._by_key: dict[str, _Attempt] = {}
        self._zombies: dict[str, str] = {}  # key -> worker: stopped, thread may still run
        self._flagged: set[str] = set()  # cancelled keys whose thread may still run
        self._resending = False
        self._workers: dict[str, tuple[int, str]] = {}  # address -> (nthreads, name)
        self._pids: dict[str, int] = {}
        self._restarting: set[str] = set()
        self._restarted: set[str] = set()  # addresses we restarted: their losses are ours
        self._restarts: dict[str, int] = {}  # by worker name (it survives a restart)
        self._published: dict[str, str] = {}  # executor digest -> Variable name
        self._refreshing = False
        self._refresh_again = False
        self._ticker: Any = None

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` in use (None before ``init()`` when given an address)."""
        return self._client

    def __repr__(self) -> str:
        where = self._client if self._client is not None else self._target
        return f"<nbqueue.DaskBackend {where!r}>"

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, sink: BackendSink, runtime: Runtime) -> None:
        if self._sink is not None:
            raise ConfigurationError(
                "this DaskBackend already serves a queue; give each Queue a DaskBackend of its "
                "own (they may share one Client)"
            )
        self._sink, self._runtime = sink, runtime
        if self._client is None:
            distributed = _distributed()
            try:
                self._client = distributed.Client(
                    self._target, timeout=self.connect_timeout, set_as_default=False
                )
            except (OSError, TimeoutError) as exc:
                raise ConfigurationError(
                    f"cannot connect to the Dask scheduler at {self._target!r}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        self._io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="nbqueue-dask")
        self._restarter = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="nbqueue-dask-restart"
        )
        self._client.subscribe_topic(self._topic, self._on_topic_event)
        _ClusterEvents.add(self._client, self._on_cluster_event)
        self._apply_workers(self._fetch_workers())
        self._ticker = runtime.call_later(REFRESH_SECONDS, self._tick)

    def shutdown(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._ticker is not None:
            self._ticker.cancel()
        attempts = list(self._attempts.values())
        futures = [a.future for a in attempts]
        variables = list(self._published.values())
        keys = [a.key for a in attempts]
        self._attempts.clear()
        self._by_key.clear()
        self._published.clear()
        client = self._client
        if client is None:
            return

        def release() -> None:
            if keys:  # running tasks stop at their next cancellation point
                client.log_event(_cancel_topic(self._topic), keys)
            if futures:
                client.cancel(futures)
            for key in keys:
                self._event(_claim_name(key)).clear()
            for name in variables:
                _distributed().Variable(name, client=client).delete()

        pending = self._submit_io(release)
        if pending is not None:
            try:
                pending.result(SHUTDOWN_WAIT_SECONDS)
            except Exception:
                log.warning("nbqueue: the Dask cluster did not acknowledge shutdown in time")
        try:
            client.unsubscribe_topic(self._topic)
        except Exception:
            pass
        _ClusterEvents.remove(client, self._on_cluster_event)
        for pool in (self._io, self._restarter):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        if self._owns_client:
            try:
                client.close(timeout=SHUTDOWN_WAIT_SECONDS)
            except Exception:
                log.warning("nbqueue: closing the Dask client failed", exc_info=True)

    # -- dispatch ------------------------------------------------------------------------
    def free_slots(self) -> int:
        if self._stopped:
            return 0
        usable = {a: n for a, (n, _) in self._workers.items() if a not in self._restarting}
        stuck = sum(1 for where in self._zombies.values() if where in usable)
        return max(0, sum(usable.values()) - len(self._attempts) - stuck)

    def capacity(self) -> int:
        """The cluster's worker threads (those of a worker being restarted included; a
        paused or retiring worker has none to offer)."""
        return sum(n for n, _ in self._workers.values())

    def submit(self, batch: list[tuple[Task[Any], ExecutorSpec]]) -> None:
        assert self._runtime is not None
        client = self._client
        for task, spec in batch:
            key = f"nbqueue-{task.type}-{task.uid}-{self._token}-{next(self._seq)}"
            try:
                executor_variable = self._publish_executor(spec)
                future = client.submit(
                    run_on_dask,
                    key,
                    self._topic,
                    task._header(),
                    task._payload,
                    task.type,
                    spec.ref,
                    executor_variable,
                    self.db_url,
                    key=key,
                    pure=False,
                    priority=task.priority,
                )
            except Exception as exc:
                error = WorkerCrashedError(
                    f"could not submit task {task.name!r} to Dask: {type(exc).__name__}: {exc}"
                )
                self._runtime.call_soon(self._locked, self._report_lost, task.uid, error)
                continue
            attempt = _Attempt(task.uid, key, task.name, future)
            self._attempts[task.uid] = attempt
            self._by_key[key] = attempt
            future.add_done_callback(functools.partial(self._on_future_done, key))

    def _publish_executor(self, spec: ExecutorSpec) -> str | None:
        """None for a task file (imported by path on the worker). A registered executor's
        payload is put in a Variable on the scheduler, once; each worker process fetches it
        once. (Not a dependency in the task graph: Dask would then run every task on the
        worker holding it.)"""
        kind, digest = spec.ref
        if kind != "pickle":
            return None
        name = self._published.get(digest)
        if name is None:
            name = self._published[digest] = f"nbqueue-executor-{self._token}-{digest}"
            payload = spec.payload
            self._submit_io(lambda: _distributed().Variable(name, client=self._client).set(payload))
        return name

    def _report_lost(self, uid: str, error: BaseException | None) -> None:
        assert self._sink is not None
        self._sink.task_lost(uid, error)
        self._sink.capacity_changed()

    # -- cancel and abort ----------------------------------------------------------------
    def cancel(self, uid: str) -> None:
        attempt = self._attempts.get(uid)
        if attempt is None or attempt.cancel_requested:
            return
        attempt.cancel_requested = True
        self._raise_flags([attempt.key])
        if attempt.worker is None:
            # Not started yet: cancelling the future is enough (reported as cancelled when
            # Dask confirms); should it be starting right now, the flag stops it.
            future = attempt.future
            self._submit_io(lambda: self._client.cancel([future]))

    def abort(self, uid: str) -> None:
        attempt = self._attempts.get(uid)
        if attempt is None:
            return
        self._stop(attempt)
        if attempt.worker is not None:
            assert self._runtime is not None
            key = attempt.key
            self._runtime.call_later(
                self.abort_grace, lambda: self._locked(self._restart_if_stuck, key)
            )

    def _restart_if_stuck(self, key: str) -> None:
        where = self._zombies.get(key)
        if where is None or where not in self._workers or where in self._restarting:
            return  # its thread ended, or the worker is gone or already restarting
        self._restart(where, f"the thread of {key} did not stop")

    def _restart(self, address: str, reason: str) -> None:
        assert self._sink is not None
        self._restarting.add(address)
        self._restarted.add(address)
        name = self._workers.get(address, (0, address))[1]
        self._restarts[name] = self._restarts.get(name, 0) + 1
        for attempt in list(self._attempts.values()):
            if attempt.worker == address:  # disturbed by the restart: no retry counted
                self._stop(attempt)
                self._sink.task_lost(attempt.uid, None)
        log.info("nbqueue: restarting Dask worker %s: %s", address, reason)
        client = self._client

        def restart() -> None:
            try:
                result: Any = client.restart_workers(
                    [address], timeout=RESTART_TIMEOUT_SECONDS, raise_for_error=False
                )
            except Exception as exc:
                result = exc
            self._post(self._restarted_worker, address, result)

        if self._restarter is not None:
            self._restarter.submit(restart)
        self._sink.capacity_changed()

    def _restarted_worker(self, address: str, result: Any) -> None:
        self._restarting.discard(address)
        if isinstance(result, BaseException) or (
            isinstance(result, dict) and result.get(address) not in ("OK", "removed")
        ):
            log.warning(
                "nbqueue: could not restart Dask worker %s (%s); a task thread that never "
                "yields keeps one of its threads busy. Start workers with a nanny so that "
                "they can be restarted",
                address,
                result,
            )
        self._request_refresh()

    # -- bookkeeping of attempts -----------------------------------------------------------
    def _forget(self, attempt: _Attempt) -> Any:
        """Stop tracking an attempt; returns its future (dropping the last reference to a
        future releases its key on the cluster)."""
        self._attempts.pop(attempt.uid, None)
        self._by_key.pop(attempt.key, None)
        future, attempt.future = attempt.future, None
        return future

    def _stop(self, attempt: _Attempt) -> None:
        """Forget an attempt and stop it: raise its flag and cancel its future. If it had
        started, its thread may go on until it notices the flag (or its worker goes): it
        counts as busy until then."""
        future, key = self._forget(attempt), attempt.key
        self._raise_flags([key])
        self._submit_io(lambda: self._client.cancel([future]))
        if attempt.exited:
            self._clear(key)
        elif attempt.worker is not None and attempt.worker in self._workers:
            self._zombies[key] = attempt.worker
        else:
            self._clear_later(key)

    def _clear(self, *keys: str) -> None:
        """Forget the claims and flags of attempts that can no longer run."""
        self._flagged.difference_update(keys)
        names = [_claim_name(k) for k in keys]

        def clear() -> None:
            for name in names:
                self._event(name).clear()

        self._submit_io(clear)

    def _raise_flags(self, keys: list[str]) -> None:
        """Publish cancellations, and keep repeating them until those attempts end."""
        self._flagged.update(keys)
        self._publish_flags(keys)
        if not self._resending and self._runtime is not None:
            self._resending = True
            self._runtime.call_later(CANCEL_RESEND_SECONDS, self._resend_flags)

    def _publish_flags(self, keys: list[str]) -> None:
        topic = _cancel_topic(self._topic)
        self._submit_io(lambda: self._client.log_event(topic, keys))

    def _resend_flags(self) -> None:
        assert self._runtime is not None
        with self._runtime.lock:
            if self._stopped or not self._flagged:
                self._resending = False
                return
            self._publish_flags(sorted(self._flagged))
        self._runtime.call_later(CANCEL_RESEND_SECONDS, self._resend_flags)

    def _clear_later(self, key: str) -> None:
        """Clear a lost attempt's claim once any re-run Dask had already begun is past its
        claim check."""
        assert self._runtime is not None
        self._runtime.call_later(LOST_CLAIM_SECONDS, lambda: self._locked(self._clear, key))

    # -- what the cluster reports ----------------------------------------------------------
    def _on_topic_event(self, event: Any) -> None:
        """On the client's loop: messages from our tasks."""
        self._post(self._on_messages, event[1])

    def _on_cluster_event(self, event: Any) -> None:
        """On the client's loop: the scheduler's cluster-wide events."""
        msg = event[1]
        if isinstance(msg, dict) and msg.get("action") in ("add-worker", "remove-worker"):
            self._post(self._on_membership, msg)

    def _on_messages(self, messages: list[list[Any]]) -> None:
        assert self._sink is not None
        freed = False
        for message in messages:
            kind, key = message[0], message[1]
            attempt = self._by_key.get(key)
            if kind == "exit":
                if attempt is not None:
                    attempt.exited = True
                elif self._zombies.pop(key, None) is not None:
                    self._clear(key)
                    freed = True
                continue
            if attempt is None:
                continue
            if kind == "started":
                address, _name, pid, when = message[2:6]
                self._pids[address] = pid
                if attempt.worker is None:
                    attempt.worker = address
                    self._sink.task_started(attempt.uid, address, when)
            elif kind == "progress" and attempt.worker is not None:
                self._sink.task_progress(attempt.uid, message[2])
        if freed:
            self._sink.capacity_changed()

    def _on_membership(self, msg: dict[str, Any]) -> None:
        assert self._sink is not None
        address = msg.get("worker")
        if msg["action"] == "remove-worker" and isinstance(address, str):
            self._workers.pop(address, None)
            self._worker_gone(address, expected=bool(msg.get("expected")))
            self._sink.capacity_changed()
        self._request_refresh()

    def _worker_gone(self, address: str, *, expected: bool) -> None:
        """A worker left the cluster: what ran there is over. Attempts that had started there
        are lost (a retry counts unless the removal was orderly or our own restart); the
        ones Dask had only queued there it runs elsewhere."""
        assert self._sink is not None
        self._restarting.discard(address)
        gone = [key for key, where in self._zombies.items() if where == address]
        for key in gone:
            del self._zombies[key]
        if gone:
            self._clear(*gone)
        ours = expected or address in self._restarted
        for attempt in list(self._attempts.values()):
            if attempt.worker == address:
                self._stop(attempt)
                self._sink.task_lost(attempt.uid, None if ours else self._loss(attempt))

    def _loss(self, attempt: _Attempt) -> WorkerCrashedError:
        where = f"Dask worker {attempt.worker}" if attempt.worker else "its Dask worker"
        return WorkerCrashedError(
            f"{where} was lost while running task {attempt.name!r} (the worker process died "
            "or lost its connection to the scheduler)"
        )

    def _on_future_done(self, key: str, future: Any) -> None:
        """On Dask's callback thread: fetch the outcome, then report it on the loop."""
        status, value, error = future.status, None, None
        try:
            if status == "finished":
                value = future.result()
            elif status == "error":
                error = future.exception()
        except BaseException as exc:  # e.g. the result was lost with its worker
            status, error = "error", exc
        self._post(self._on_done, key, status, value, error)

    def _on_done(self, key: str, status: str, value: Any, error: BaseException | None) -> None:
        assert self._sink is not None
        sink = self._sink
        attempt = self._by_key.get(key)
        if attempt is None:
            return  # aborted or lost meanwhile
        self._forget(attempt)
        uid = attempt.uid
        if (
            status == "cancelled"
            and attempt.cancel_requested
            and attempt.worker is not None
            and not attempt.exited
        ):
            self._zombies[key] = attempt.worker  # it may run until it notices its flag
        else:
            self._clear(key)
        if status == "finished":
            outcome, (address, _name, pid), started = value
            if outcome[0] == LOST:
                ours = attempt.worker is not None and attempt.worker in self._restarted
                sink.task_lost(uid, None if ours else self._loss(attempt))
            else:
                if attempt.worker is None:
                    self._pids[address] = pid
                    sink.task_started(uid, address, started)
                if outcome[0] == protocol.DONE:
                    sink.task_completed(uid, outcome[1], outcome[2])
                else:
                    sink.task_failed(uid, outcome[1], outcome[2], outcome[3])
        elif status == "cancelled":
            if attempt.cancel_requested:
                cancelled = TaskCancelledError(f"task {attempt.name!r} was cancelled")
                sink.task_failed(uid, ErrorRecord.from_exception(cancelled), None, [])
            else:
                sink.task_lost(
                    uid,
                    WorkerCrashedError(
                        f"the Dask future of task {attempt.name!r} was cancelled outside "
                        "nbqueue (a client.restart() or a scheduler restart?)"
                    ),
                )
        else:
            assert error is not None
            if _is_worker_loss(error):
                sink.task_lost(
                    uid,
                    WorkerCrashedError(
                        f"Dask could not run task {attempt.name!r}: {type(error).__name__}: {error}"
                    ),
                )
            else:
                from nbqueue.worker import _pickle_error

                sink.task_failed(uid, ErrorRecord.from_exception(error), _pickle_error(error), [])
        sink.capacity_changed()

    # -- the cluster's workers -----------------------------------------------------------
    def _fetch_workers(self) -> dict[str, tuple[int, str]] | None:
        """The cluster's workers: address -> (usable threads, name); a worker that is paused
        or retiring has none to offer. Blocking (one scheduler call)."""
        try:
            try:
                info = self._client.scheduler_info(n_workers=-1)
            except TypeError:  # distributed before n_workers
                info = self._client.scheduler_info()
        except Exception:
            log.warning("nbqueue: could not list the Dask cluster's workers", exc_info=True)
            return None
        return {
            address: (
                int(meta.get("nthreads", 0)) if meta.get("status", "running") == "running" else 0,
                str(meta.get("name", address)),
            )
            for address, meta in dict(info.get("workers", {})).items()
        }

    def _apply_workers(self, workers: dict[str, tuple[int, str]] | None) -> None:
        assert self._sink is not None
        self._refreshing = False
        if workers is not None:
            # Workers that left without an event reaching us (a missed or overwritten "all"
            # subscription): snapshots are taken in order, so one seen before and missing
            # now has gone.
            vanished = set(self._workers) - set(workers)
            self._workers = workers
            for address in vanished:
                self._worker_gone(address, expected=False)
            for address in set(self._pids) - set(workers):
                del self._pids[address]
            unknown = [a for a in workers if a not in self._pids]
            if unknown and self._restarter is not None:
                self._restarter.submit(self._fetch_pids, unknown)
            self._sink.capacity_changed()
        if self._refresh_again:
            self._refresh_again = False
            self._request_refresh()

    def _fetch_pids(self, addresses: list[str]) -> None:
        """The process ids of new workers, for ``workers()`` (on the helper thread for slow
        calls: a worker whose event loop is blocked answers late)."""
        try:
            pids = self._client.run(os.getpid, workers=addresses)
        except Exception:
            return
        self._post(lambda: self._pids.update({a: p for a, p in pids.items() if a in self._workers}))

    def _request_refresh(self) -> None:
        if self._refreshing:
            self._refresh_again = True  # the snapshot in flight may predate this change
            return
        self._refreshing = True
        if self._submit_io(lambda: self._post(self._apply_workers, self._fetch_workers())) is None:
            self._refreshing = False

    def _tick(self) -> None:
        assert self._runtime is not None
        with self._runtime.lock:
            if self._stopped:
                return
            self._request_refresh()
        self._ticker = self._runtime.call_later(REFRESH_SECONDS, self._tick)

    def workers(self) -> list[WorkerInfo]:
        busy: dict[str, int] = {}
        for attempt in self._attempts.values():
            if attempt.worker is not None:
                busy[attempt.worker] = busy.get(attempt.worker, 0) + 1
        for where in self._zombies.values():
            busy[where] = busy.get(where, 0) + 1
        return [
            WorkerInfo(address, self._pids.get(address), address not in self._restarting,
                       busy.get(address, 0), nthreads, self._restarts.get(name, 0))
            for address, (nthreads, name) in sorted(self._workers.items())
        ]  # fmt: skip

    # -- plumbing ------------------------------------------------------------------------
    def _event(self, name: str) -> Any:
        return _distributed().Event(name, client=self._client)

    def _submit_io(self, fn: Callable[[], None]) -> concurrent.futures.Future[None] | None:
        """Run a blocking cluster call on this backend's helper thread, in order."""
        if self._io is None:
            return None

        def run() -> None:
            try:
                fn()
            except Exception:
                if not self._stopped:
                    log.warning("nbqueue: a Dask call failed", exc_info=True)

        try:
            return self._io.submit(run)
        except RuntimeError:  # shut down
            return None

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        """From any thread: run ``fn(*args)`` on the controller's loop with its lock held."""
        runtime = self._runtime
        if runtime is None or self._stopped:
            return
        try:
            runtime.call_soon(self._locked, fn, *args)
        except RuntimeError:  # the loop has closed
            pass

    def _locked(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._runtime is not None
        with self._runtime.lock:
            if not self._stopped:
                fn(*args)
