"""Dispatch with a database: the database orders the tasks, and this controller claims the
best ready ones for its free worker slots (plus a reserve, so that a freed slot is refilled
without a round trip). Also the database's side of the controller: every state change is
written, and what other controllers and hosts write is read back (:class:`StoreClient`).
Every method runs with the controller's lock held, on its loop, unless said otherwise.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from nbqueue import rows
from nbqueue.controller import owners
from nbqueue.controller.dispatch import Dispatcher
from nbqueue.controller.persistence import Persistence
from nbqueue.controller.storeclient import Shipped
from nbqueue.errors import (
    CorruptRowError,
    DatabaseError,
    NbqueueError,
    QueueTimeoutError,
    SerializationError,
    SignatureError,
    UnsignedPayloadWarning,
)
from nbqueue.records import ErrorRecord, Status
from nbqueue.task import Task

if TYPE_CHECKING:
    from nbqueue.controller.core import Controller
    from nbqueue.registry import ExecutorSpec
    from nbqueue.store import DatabaseAdapter, Row

log = logging.getLogger("nbqueue")
#: Claim about this much work ahead of the workers, at the pace they go (at most
#: RESERVE_MAX tasks, at least RESERVE_FACTOR per slot; RESERVE_FACTOR times what they hold
#: while the pace is unknown), so that freed slots are refilled without a database round
#: trip and claims come in large batches -- and long tasks are not hoarded from other hosts.
RESERVE_SECONDS = 1.0
RESERVE_MAX = 2000
RESERVE_FACTOR = 4


class DatabaseDispatcher(Dispatcher):
    """Claims for one controller; implements the persistence thread's ``StoreClient``."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.store: Persistence | None = None  # set once the database is open
        self.reserved: collections.deque[Task[Any]] = collections.deque()  # claimed, unsent
        self.claiming = 0  # task slots asked of the database, not answered yet
        self.wanted: list[str] = []  # uids run_tasks() asked for, claimed as slots free up
        self.sweep = False  # run_tasks(): claim until nothing ready is left
        self.starved = False  # the last claim found nothing more: wait for news first
        #: uids removed here: rows read (or claimed) before their delete was committed must
        #: not bring them back
        self.removed: set[str] = set()
        self.quiet = 0  # > 0 while applying rows read from the database: do not write them back
        self.shipped: set[tuple[str, str]] = set()  # executors (type, digest) sent to the store

    # -- the database's life -------------------------------------------------------------
    def open(self, adapter: DatabaseAdapter, *, name: str, lease: float) -> None:
        """Open (or create) the table, take over every stored task, start the writer."""
        controller = self.controller
        assert controller.loop is not None
        adapter.open()
        loaded_at = dt.datetime.now(dt.timezone.utc)
        stored = adapter.load()
        self.store = Persistence(
            adapter, controller.loop, self, owner=owners.owner_id(), name=name,
            lease_seconds=lease, capacity=controller.backend.capacity(),
        )  # fmt: skip
        stored.sort(key=lambda row: row["created_at"])
        with controller.lock:
            for row in stored:
                self.adopt(row)
        controller.events.subscribe(self.observe)
        for spec in controller.registry.specs():
            self.executor_registered(spec)
        self.store.start(loaded_at)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    def flush(self, timeout: float | None) -> None:
        assert self.store is not None
        if not self.store.flush(timeout):
            raise QueueTimeoutError(f"nbqueue: the database did not commit within {timeout:g} s")

    def executor_registered(self, spec: ExecutorSpec) -> None:
        """Store a notebook-defined executor for worker hosts, once per (type, digest): a
        function given to submit() again is registered again, and is not stored again."""
        shipped = (spec.type, spec.ref[1])
        if self.store is None or spec.payload is None or spec.refused or shipped in self.shipped:
            return
        self.shipped.add(shipped)
        self.store.save_executor(spec.type, spec.ref[1], spec.payload)

    # -- Dispatcher ------------------------------------------------------------------------
    def added(self, task: Task[Any]) -> None:
        assert self.store is not None
        # raises for a value it cannot store (or may not store unsigned)
        self.store.write(rows.task_to_row(task, signer=self.store.adapter.signer))
        self.store.added()
        self.starved = False

    def retry_at(self, task: Task[Any], when: float) -> None:
        """The stored ready_at says when; a claim finds it then."""

    def requeued(self, task: Task[Any]) -> None:
        """Its row goes back to pending; a claim finds it."""

    def forget(self, task: Task[Any]) -> bool:
        if task in self.reserved:
            self.reserved.remove(task)
            return True
        return False

    def take(self, free: int, processing: bool) -> list[Task[Any]]:
        tasks = self.controller.tasks
        taken: list[Task[Any]] = []
        while len(taken) < free and self.reserved:
            task = self.reserved.popleft()
            if tasks.get(task.uid) is task and not task.status.finished:
                taken.append(task)
        self._ask(free - len(taken), processing)
        return taken

    def _ask(self, free_after: int, processing: bool) -> None:
        """Ask the database for enough tasks to fill the free slots and keep a reserve."""
        if self.store is None or self.controller.closed:
            return
        reserve = free_after + self._ahead()
        free = reserve - len(self.reserved) - self.claiming
        if free <= 0:
            return
        uids: list[str] = []
        while self.wanted and len(uids) < free:
            task = self.controller.tasks.get(self.wanted.pop(0))
            if task is not None and task.status.waiting:
                uids.append(task.uid)
        limit = free - len(uids) if (processing or self.sweep) and not self.starved else 0
        if not uids and limit <= 0:
            return
        self.claiming += len(uids) + limit
        self.store.request_claims(uids, limit, self.controller.registry.claimable())

    def _ahead(self) -> int:
        """How many tasks to hold claimed beyond the free slots."""
        backend = self.controller.backend
        pace = backend.pace()
        if pace is None:  # (what the workers hold: their prefetch makes it deep for short tasks)
            window = len(self.controller.running) + backend.free_slots()
            return RESERVE_FACTOR * max(backend.capacity(), window)
        least = RESERVE_FACTOR * backend.capacity()
        return max(least, min(RESERVE_MAX, int(pace * RESERVE_SECONDS)))

    def run(self, tasks: Iterable[Task[Any]] | None) -> None:
        if tasks is None:
            self.sweep, self.starved = True, False
        else:
            self.wanted.extend(t.uid for t in tasks)

    def stop(self) -> list[Task[Any]]:
        self.sweep = False
        self.wanted.clear()
        given_back = list(self.reserved)
        self.reserved.clear()
        return given_back

    def clear(self) -> None:
        self.reserved.clear()
        self.wanted.clear()

    # -- writing what changes -----------------------------------------------------------
    def observe(self, kind: str, task: Task[Any] | None) -> None:
        """Events listener: record the row each change needs."""
        if task is None or self.quiet or self.store is None:
            return
        if kind in ("added", "dispatched"):
            return  # (added() wrote it; a claim already marked the row running)
        if kind == "removed":
            self.removed.add(task.uid)
            self.store.delete(task.uid)
            return
        output = kind in ("output", "finished")
        row = rows.task_state_row(task, output=output, signer=self.store.adapter.signer)
        self.store.write(row, urgent=kind not in ("progress", "output"))

    def adopt(self, row: Row, *, claimed: bool = False) -> Task[Any]:
        """A task from a stored row joins this queue (a corrupt row becomes a failed task,
        failed in the database too when this controller claimed it or it is damaged)."""
        assert self.store is not None
        task, corrupt = rows.task_or_placeholder(row, signer=self.store.adapter.signer)
        refused = corrupt is not None and isinstance(corrupt.__cause__, SignatureError)
        if refused and not claimed:
            # this controller's NBQUEUE_SECRET may be the wrong one: fail it here only
            warnings.warn(str(corrupt), UnsignedPayloadWarning, stacklevel=2)
        elif corrupt is not None:  # fail it in the database, so nobody waits for it
            self.store.write(rows.task_state_row(task))
        self.quiet += 1
        try:
            self.controller.adopt(task)
        finally:
            self.quiet -= 1
        return task

    # -- StoreClient: what the database thread reports ------------------------------------
    def leased(self) -> list[str]:
        with self.controller.lock:
            return list(self.controller.running) + [t.uid for t in self.reserved]

    def known_executors(self) -> dict[str, str]:
        with self.controller.lock:
            registry = self.controller.registry
            known = dict.fromkeys(registry.types, "file")
            known.update(registry.digests())
            return known

    def unknown(self, uids: list[str]) -> list[str]:
        with self.controller.lock:
            tasks = self.controller.tasks
            return [uid for uid in uids if uid not in tasks and uid not in self.removed]

    def claimed(self, claimed: list[Row], won: list[str], asked: int, more: bool) -> None:
        controller = self.controller
        with controller.lock:
            self.claiming -= asked
            found = [controller.tasks.get(uid) for uid in won]
            for row in claimed:
                if row["uid"] in self.removed:
                    continue  # claimed just before our delete of it was committed
                task = controller.tasks.get(row["uid"])
                if task is None:
                    task = self.adopt(row, claimed=True)
                elif task.status.finished:  # its row went back (a lost lease): ours is newer
                    assert self.store is not None
                    self.store.write(rows.task_state_row(task, output=True))
                    continue
                found.append(task)
            if len(claimed) + len(won) < asked and not more:
                # nothing more is ready: ask again after the next sync, an add() or a
                # notification, not in a loop (rows left to write may be new tasks: the
                # next claim, with their batch, may find them)
                self.sweep, self.starved = False, True
            for task in found:
                if task is not None and not task.status.finished and task._owner is controller:
                    self.reserved.append(task)  # ours (leased); pending until it is sent
            controller.dispatch()
            controller.notify()

    def synced(self, changed: list[Row]) -> None:
        """Apply what other controllers and worker hosts wrote."""
        controller = self.controller
        with controller.lock:
            self.quiet += 1
            try:
                for row in changed:
                    self._apply(row)
            finally:
                self.quiet -= 1
            self.starved = False
            controller.dispatch()
            controller.notify()

    def _apply(self, row: Row) -> None:
        controller = self.controller
        uid = row["uid"]
        task = controller.tasks.get(uid)
        if task is None:
            if uid not in self.removed:
                self.adopt(row)
            return
        if uid in controller.running or task in self.reserved or task.status.finished:
            return  # ours to report, or settled
        try:
            assert self.store is not None
            rows.apply_state(task, row, signer=self.store.adapter.signer)
        except CorruptRowError:
            return
        if task.status.finished:
            controller.active -= 1
            controller.emit("finished", task)
            controller.settle_later(task)
        else:
            controller.emit("progress", task)

    def executors_found(self, found: list[Shipped]) -> None:
        controller = self.controller
        with controller.lock:
            for task_type, digest, payload, refusal in found:
                try:
                    if payload is None:
                        raise SerializationError(refusal)
                    controller.registry.add_shipped(task_type, digest, payload)
                except NbqueueError as exc:
                    log.error("nbqueue: executor %r from the database refused: %s", task_type, exc)
                    controller.registry.refuse(task_type, digest, str(exc))
            controller.dispatch()

    def leases_lost(self, uids: list[str]) -> None:
        """Leases that expired under this controller (it was stalled or cut off): those
        tasks may already run elsewhere, so stop them here and write nothing more of them."""
        controller = self.controller
        with controller.lock:
            for uid in uids:
                task = controller.tasks.get(uid)
                if task is None:
                    continue
                if self.forget(task):
                    pass
                elif controller.running.pop(uid, None) is not None:
                    controller.backend.abort(uid)
                    controller.cancelling.pop(uid, None)
                else:
                    continue
                log.warning("nbqueue: lost the lease on task %s (%s); stopping it", task.name, uid)
            controller.notify()

    def unstorable(self, uid: str, error: Exception) -> None:
        controller = self.controller
        with controller.lock:
            task = controller.tasks.get(uid)
            if task is None or task.status.finished:
                return
            self.forget(task)
            if uid in controller.running:
                controller.backend.abort(uid)
            task.errors.append(ErrorRecord.from_exception(error))
            controller.running.pop(uid, None)
            controller.finish(task, Status.FAILED, error)

    def database_failed(self, error: DatabaseError) -> None:
        controller = self.controller
        with controller.lock:
            controller.failure = error
            controller.notify()
