"""The controller side of the Dask backend: :class:`DaskBackend` turns each attempt into one
Dask future on a worker of its choosing, tracks it, and reports what became of it."""

from __future__ import annotations

import functools
import itertools
import logging
import uuid
from typing import TYPE_CHECKING, Any

from nbqueue import checks, protocol
from nbqueue.backends.base import BackendSink, ExecutionBackend, WorkerInfo
from nbqueue.backends.dask import outcome, wire
from nbqueue.backends.dask.attempt import run_on_dask
from nbqueue.backends.dask.attempts import Attempt, Attempts
from nbqueue.backends.dask.bridge import Bridge
from nbqueue.backends.dask.cancels import Cancellations
from nbqueue.backends.dask.membership import Membership
from nbqueue.errors import ConfigurationError, WorkerCrashedError

if TYPE_CHECKING:
    from nbqueue.backends.base import Runtime
    from nbqueue.registry import ExecutorSpec
    from nbqueue.task import Task

log = logging.getLogger("nbqueue")

#: After an abort, how long an attempt's thread has to notice before its worker restarts.
ABORT_GRACE_SECONDS = 1.0
#: How long shutdown() waits for the cluster to acknowledge cancellations.
SHUTDOWN_WAIT_SECONDS = 5.0


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
        distributed = wire.distributed()
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
        self.db_url = db_url
        self.abort_grace = checks.number(abort_grace, "abort_grace")
        self.connect_timeout = checks.number(connect_timeout, "connect_timeout")
        self._owns_client = self._client is None
        self._token = uuid.uuid4().hex[:12]
        self._topic = f"nbqueue-{self._token}"
        self._seq = itertools.count(1)
        self._sink: BackendSink | None = None
        self._bridge: Bridge | None = None
        self._members: Membership | None = None
        self._cancels: Cancellations | None = None
        self._attempts = Attempts()
        self._published: dict[str, str] = {}  # executor digest -> Variable name

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
        self._sink = sink
        if self._client is None:
            try:
                self._client = wire.distributed().Client(
                    self._target, timeout=self.connect_timeout, set_as_default=False
                )
            except (OSError, TimeoutError) as exc:
                raise ConfigurationError(
                    f"cannot connect to the Dask scheduler at {self._target!r}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        self._bridge = bridge = Bridge(runtime)
        self._cancels = Cancellations(self._client, bridge, self._topic)
        self._members = Membership(self._client, bridge, self._on_gone, sink.capacity_changed)
        self._client.subscribe_topic(self._topic, self._on_topic_event)
        self._members.start()

    def shutdown(self) -> None:
        bridge = self._bridge
        if bridge is not None and bridge.stopped:
            return
        attempts = self._attempts.clear()
        futures = [a.future for a in attempts]
        variables = list(self._published.values())
        keys = [a.key for a in attempts]
        self._published.clear()
        client = self._client
        if bridge is None or client is None:
            return
        bridge.stopped = True
        assert self._members is not None
        self._members.stop()
        distributed = wire.distributed()

        def release() -> None:
            if keys:  # running tasks stop at their next cancellation point
                client.log_event(wire.cancel_topic(self._topic), keys)
            if futures:
                client.cancel(futures)
            for name in variables:
                distributed.Variable(name, client=client).delete()

        pending = bridge.io(release)
        if pending is not None:
            try:
                pending.result(SHUTDOWN_WAIT_SECONDS)
            except Exception:
                log.warning("nbqueue: the Dask cluster did not acknowledge shutdown in time")
        try:
            client.unsubscribe_topic(self._topic)
        except Exception:
            pass
        bridge.shutdown()
        if self._owns_client:
            try:
                client.close(timeout=SHUTDOWN_WAIT_SECONDS)
            except Exception:
                log.warning("nbqueue: closing the Dask client failed", exc_info=True)

    # -- dispatch ------------------------------------------------------------------------
    def free_slots(self) -> int:
        return sum(self._free().values())

    def _free(self) -> dict[str, int]:
        """Free threads by worker address (threads minus attempts sent there, minus stopped
        ones still running)."""
        if self._members is None or self._bridge is None or self._bridge.stopped:
            return {}
        load = self._attempts.load()
        free = {a: n - load.get(a, 0) for a, n in self._members.usable().items()}
        return {a: n for a, n in free.items() if n > 0}

    def capacity(self) -> int:
        """The cluster's worker threads (those of a worker being restarted included; a
        paused or retiring worker has none to offer)."""
        return 0 if self._members is None else self._members.capacity()

    def submit(self, batch: list[tuple[Task[Any], ExecutorSpec]]) -> None:
        """Each attempt goes to the worker with the most free threads, and may run only
        there (see :func:`~nbqueue.backends.dask.attempt.run_on_dask`)."""
        assert self._bridge is not None and self._members is not None
        client, free = self._client, self._free()
        for task, spec in batch:
            if not free:  # more than free_slots(): back to the queue, no retry counted
                self._bridge.post(self._report_lost, task.uid, None)
                continue
            address = max(free, key=free.__getitem__)
            free[address] -= 1
            if not free[address]:
                del free[address]
            key = f"nbqueue-{task.type}-{task.uid}-{self._token}-{next(self._seq)}"
            try:
                kind, digest = spec.ref  # a task file is imported by path on the worker
                executor = None
                if kind == "pickle" and spec.payload is not None:
                    executor = self._publish("executor", digest, spec.payload)
                shared = tuple((d, self._publish("shared", d, p)) for d, p in task._shared)
                future = client.submit(
                    run_on_dask,
                    key,
                    self._topic,
                    self._members.ids[address],
                    task.header(),
                    task._payload,
                    task.type,
                    spec.ref,
                    executor,
                    shared,
                    self.db_url,
                    key=key,
                    pure=False,
                    priority=task.priority,
                    workers=[address],
                    allow_other_workers=False,
                )
            except Exception as exc:
                error = WorkerCrashedError(
                    f"could not submit task {task.name!r} to Dask: {type(exc).__name__}: {exc}"
                )
                self._bridge.post(self._report_lost, task.uid, error)
                continue
            self._attempts.add(Attempt(task.uid, key, task.name, future, address))
            future.add_done_callback(functools.partial(self._on_future_done, key))

    def _publish(self, kind: str, digest: str, payload: bytes) -> str:
        """The name of the Variable on the scheduler holding ``payload`` (a registered
        executor, a queue.put() object), set once; each worker process fetches it once.
        (Not a dependency in the task graph: Dask would then run every task on the worker
        holding it.)"""
        assert self._bridge is not None
        name = self._published.get(digest)
        if name is None:
            name = self._published[digest] = f"nbqueue-{kind}-{self._token}-{digest}"
            client = self._client
            self._bridge.io(lambda: wire.distributed().Variable(name, client=client).set(payload))
        return name

    def _report_lost(self, uid: str, error: BaseException | None) -> None:
        assert self._sink is not None
        self._sink.task_lost(uid, error)
        self._sink.capacity_changed()

    # -- cancel and abort ----------------------------------------------------------------
    def cancel(self, uid: str) -> None:
        assert self._bridge is not None and self._cancels is not None
        attempt = self._attempts.of_task(uid)
        if attempt is None or attempt.cancel_requested:
            return
        attempt.cancel_requested = True
        self._cancels.raise_flags([attempt.key])
        if not attempt.started:
            # Not started: cancel the future (a task starting right now sees the flag).
            future, client = attempt.future, self._client
            self._bridge.io(lambda: client.cancel([future]))

    def abort(self, uid: str) -> None:
        assert self._bridge is not None
        attempt = self._attempts.of_task(uid)
        if attempt is None:
            return
        self._stop(attempt)
        if attempt.started:
            self._bridge.later(self.abort_grace, self._restart_if_stuck, attempt.key)

    def _restart_if_stuck(self, key: str) -> None:
        assert self._members is not None and self._sink is not None
        where = self._attempts.zombies.get(key)
        if where is None or not self._members.can_restart(where):
            return  # its thread ended, or the worker is gone or already restarting
        self._members.restart(where, f"the thread of {key} did not stop")
        for attempt in self._attempts.on(where):  # disturbed: no retry counted
            self._stop(attempt)
            self._sink.task_lost(attempt.uid, None)
        self._sink.capacity_changed()

    # -- bookkeeping of attempts -----------------------------------------------------------
    def _stop(self, attempt: Attempt) -> None:
        """Forget an attempt and stop it: raise its flag and cancel its future. If it had
        started, its thread may go on until it notices the flag (or its worker goes): it
        counts as busy until then."""
        assert self._bridge is not None and self._cancels is not None
        assert self._members is not None
        future, key, client = self._attempts.forget(attempt), attempt.key, self._client
        self._cancels.raise_flags([key])
        self._bridge.io(lambda: client.cancel([future]))
        if attempt.exited:
            self._cancels.clear(key)
        elif attempt.started and attempt.address in self._members.workers:
            self._attempts.zombies[key] = attempt.address
        else:
            self._cancels.clear_later(key)

    def workers(self) -> list[WorkerInfo]:
        if self._members is None:
            return []
        return self._members.info(self._attempts.load(started_only=True))

    # -- what the cluster reports ----------------------------------------------------------
    def _on_topic_event(self, event: Any) -> None:
        """On the client's loop: messages from our tasks."""
        assert self._bridge is not None
        self._bridge.post(self._on_messages, event[1])

    def _on_messages(self, messages: list[list[Any]]) -> None:
        assert self._sink is not None and self._members is not None
        assert self._cancels is not None
        freed = False
        for message in messages:
            kind, key = message[0], message[1]
            attempt = self._attempts.of_key(key)
            if kind == "exit":
                if attempt is not None:
                    attempt.exited = True
                elif self._attempts.zombies.pop(key, None) is not None:
                    self._cancels.clear(key)
                    freed = True
                continue
            if attempt is None:
                continue
            if kind == "started":
                address, _name, pid, when = message[2:6]
                self._members.pids[address] = pid
                if not attempt.started:
                    attempt.started = True
                    self._sink.task_started(attempt.uid, address, when)
            elif kind == protocol.PROGRESS and attempt.started:
                self._sink.task_progress(attempt.uid, message[2])
            elif kind == protocol.OUTPUT and attempt.started:
                self._sink.task_output(attempt.uid, message[2])
        if freed:
            self._sink.capacity_changed()

    def _on_gone(self, address: str, ours: bool) -> None:
        """A worker left the cluster: what ran there is over, and what was sent there will
        not run anywhere else. Its attempts are lost, and a retry counts unless the removal
        was orderly or our own restart, also for one that had not reported starting yet:
        its start may have been the last thing the worker sent, and a task that kills its
        worker must not be run again and again."""
        assert self._sink is not None and self._cancels is not None
        gone = self._attempts.zombies_on(address)
        if gone:
            self._cancels.clear(*gone)
        for attempt in self._attempts.on(address):
            self._stop(attempt)
            error = None if ours else outcome.loss(attempt.name, address)
            self._sink.task_lost(attempt.uid, error)

    def _on_future_done(self, key: str, future: Any) -> None:
        """On Dask's callback thread: fetch the outcome, then report it on the loop."""
        assert self._bridge is not None
        status, value, error = future.status, None, None
        try:
            if status == "finished":
                value = future.result()
            elif status == "error":
                error = future.exception()
        except BaseException as exc:  # e.g. the result was lost with its worker
            status, error = "error", exc
        self._bridge.post(self._on_done, key, status, value, error)

    def _on_done(self, key: str, status: str, value: Any, error: BaseException | None) -> None:
        assert self._sink is not None and self._members is not None
        assert self._cancels is not None
        sink = self._sink
        attempt = self._attempts.of_key(key)
        if attempt is None:
            return  # aborted or lost meanwhile
        self._attempts.forget(attempt)
        uid = attempt.uid
        cancelled = status == "cancelled" and attempt.cancel_requested
        if cancelled and attempt.started and not attempt.exited:
            self._attempts.zombies[key] = attempt.address  # it runs until it sees its flag
        else:
            self._cancels.clear(key)
        # A re-run in another process at the attempt's address (LOST): the first run had
        # started there (a retry counts, unless we restarted that worker) or it had not
        # and the process we knew there was already gone (none counts). Either way, who
        # is at that address now must be asked again.
        lost = status == "finished" and value[0][0] == wire.LOST
        if lost:
            self._members.forget_identity(attempt.address)
        elif status == "finished" and not attempt.started:
            address, _name, pid = value[1]
            self._members.pids[address] = pid
        penalty = attempt.started and not self._members.ours(attempt.address)
        outcome.report(
            sink,
            uid,
            attempt.name,
            status=status,
            value=value,
            error=error,
            started=attempt.started,
            cancel_requested=attempt.cancel_requested,
            lost=outcome.loss(attempt.name, attempt.address) if penalty else None,
        )
        sink.capacity_changed()
