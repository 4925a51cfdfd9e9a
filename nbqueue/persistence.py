"""A queue's side of its database: one thread that writes every state change in batches,
claims tasks for this controller's workers, renews their leases, and reads what other
controllers and worker hosts changed.

The controller never waits for the database: it records rows and asks for claims; the
answers come back on its event loop. A database hiccup (a dropped connection, a locked
SQLite file) is retried by the adapter; if it outlasts that, the batch is kept and written
again later, so nothing is lost.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from nbqueue import config

if TYPE_CHECKING:
    from nbqueue.runtime import Runtime
    from nbqueue.store import DatabaseAdapter, Row
    from nbqueue.task import Task

log = logging.getLogger("nbqueue")

#: Commits arrive out of timestamp order, so each sync looks back this far.
SYNC_OVERLAP_SECONDS = 5.0
#: After a failed write, wait this long before trying the batch again.
WRITE_RETRY_SECONDS = 1.0

ClaimAnswer = Callable[[list["Row"], list[str], int], None]
SyncAnswer = Callable[[list["Row"]], None]
#: (type, digest, payload or None, refusal message or None) of executors found in the database
Shipped = tuple[str, str, "bytes | None", "str | None"]
ShippedAnswer = Callable[[list[Shipped]], None]


class Persistence:
    """Writes, claims, heartbeats and sync for one controller (``owner``)."""

    def __init__(
        self,
        adapter: DatabaseAdapter,
        runtime: Runtime,
        *,
        owner: str,
        lease_seconds: float,
        running: Callable[[], list[str]],
        on_claimed: ClaimAnswer,
        on_synced: SyncAnswer,
        capacity: int,
        known_executors: Callable[[], dict[str, str]],
        on_executors: ShippedAnswer,
        on_leases_lost: Callable[[list[str]], None],
    ) -> None:
        self.adapter = adapter
        self.owner = owner
        self.lease_seconds = lease_seconds
        self._runtime = runtime
        self._running = running
        self._on_claimed = on_claimed
        self._on_synced = on_synced
        self._capacity = capacity  # task slots of this controller's workers (0: a client)
        self._known_executors = known_executors
        self._on_executors = on_executors
        self._on_leases_lost = on_leases_lost
        self._executors: list[tuple[str, str, bytes]] = []  # to store
        self._new_tasks = False  # a batch with new tasks: wake the other hosts
        self._stop_listening: Callable[[], None] | None = None
        self._cond = threading.Condition()
        self._rows: dict[str, Row] = {}
        self._urgent = False  # something other than progress is waiting to be written
        self._deleted: set[str] = set()
        self._claim_uids: list[str] = []
        self._claim_limit = 0
        self._claim_types: list[str] = []
        self._stopping = False
        self._since: dt.datetime | None = None
        self._last_write = 0.0
        self._written: dict[str, dt.datetime] = {}  # uid -> updated_at of our last write
        self._next_sync = 0.0
        self._next_heartbeat = 0.0
        self._sync_seconds = config.sync_seconds()
        self._quiet = 0  # >0 while the controller applies rows read from the database
        self._thread = threading.Thread(target=self._run, name="nbqueue-db", daemon=True)

    def start(self) -> None:
        if self._capacity > 0 and self.adapter.notifies_other_processes:
            # new tasks wake this host at once; the poll stays as a fallback
            self._stop_listening = self.adapter.listen(self.wake)
        self._thread.start()

    def wake(self) -> None:
        """Look for new tasks now (a notification from another controller)."""
        with self._cond:
            self._next_sync = 0.0
            self._cond.notify()

    def save_executor(self, task_type: str, digest: str, payload: bytes) -> None:
        """Store a notebook-defined executor so worker hosts can run its tasks."""
        with self._cond:
            self._executors.append((task_type, digest, payload))
            self._urgent = True
            self._cond.notify()

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """Changes made inside come from the database: do not write them back (nests)."""
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1

    def synced_until(self, moment: dt.datetime) -> None:
        """Changes up to ``moment`` are known (read at start-up)."""
        self._since = moment

    # -- called by the controller (its lock held) -----------------------------------------
    def observe(self, kind: str, task: Task[Any] | None) -> None:
        """Events listener: record the row each change needs."""
        if task is None or self._quiet or kind == "dispatched":
            return  # (a claim already marked the row running)
        if kind == "added":
            self._new_tasks = True
        from nbqueue import rows

        if kind == "removed":
            with self._cond:
                self._rows.pop(task.uid, None)
                self._deleted.add(task.uid)
                self._cond.notify()
            return
        row = rows.task_to_row(task) if kind == "added" else rows.task_state_row(task)
        self.write(row, urgent=kind != "progress")

    def write(self, row: Row, *, urgent: bool = True) -> None:
        """Queue a row (full or partial) for the next batch."""
        with self._cond:
            uid = row["uid"]
            self._deleted.discard(uid)
            previous = self._rows.get(uid)
            self._rows[uid] = row if previous is None else {**previous, **row}
            if urgent and not self._urgent:
                self._urgent = True
                self._cond.notify()

    def request_claims(self, uids: Sequence[str], limit: int, types: list[str]) -> None:
        """Claim these uids, and up to ``limit`` of the best ready tasks of ``types``."""
        with self._cond:
            self._claim_uids.extend(uids)
            self._claim_limit += limit
            self._claim_types = types
            self._cond.notify()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is left and stop the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._stop_listening is not None:
            self._stop_listening()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._capacity > 0:
            try:
                self.adapter.remove_host(self.owner)
            except Exception:
                log.warning("nbqueue: could not remove host %s from the database", self.owner)
        self.adapter.close()

    # -- the thread ------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._due():
                    self._cond.wait(self._wait_time())
                stopping = self._stopping
            try:
                self._cycle(final=stopping)
            except Exception:  # keep the thread alive; the adapter already retried
                log.exception("nbqueue: database operation failed; retrying later")
                with self._cond:
                    if not self._stopping:
                        self._cond.wait(WRITE_RETRY_SECONDS)
            if stopping:
                return

    def _due(self) -> bool:
        now = time.monotonic()
        writes = bool(self._rows) and (
            self._urgent or now - self._last_write >= config.PROGRESS_FLUSH_SECONDS
        )
        return (
            writes
            or bool(self._deleted)
            or bool(self._executors)
            or bool(self._claim_uids)
            or self._claim_limit > 0
            or now >= self._next_sync
            or now >= self._next_heartbeat
        )

    def _wait_time(self) -> float:
        now = time.monotonic()
        times = [self._next_sync, self._next_heartbeat]
        if self._rows:
            times.append(self._last_write + config.PROGRESS_FLUSH_SECONDS)
        return max(0.001, min(times) - now)

    def _cycle(self, *, final: bool) -> None:
        with self._cond:
            batch, self._rows, self._urgent = self._rows, {}, False
            deleted, self._deleted = self._deleted, set()
            uids, self._claim_uids = self._claim_uids, []
            limit, self._claim_limit = self._claim_limit, 0
            types = self._claim_types
            executors, self._executors = self._executors, []
            new_tasks, self._new_tasks = self._new_tasks, False
        try:
            for task_type, digest, payload in executors:
                self.adapter.save_executor(task_type, digest, payload)
            executors = []
            if batch:
                written = self.adapter.save(list(batch.values()))
                self._last_write = time.monotonic()
                for uid in batch:
                    self._written[uid] = written
            if deleted:
                self.adapter.delete(deleted)
        except Exception:
            with self._cond:  # keep the batch: newer rows for the same task win
                for uid, row in batch.items():
                    self._rows[uid] = {**row, **self._rows.get(uid, {})}
                self._deleted |= deleted - set(self._rows)
                self._urgent = True
                self._claim_uids[:0] = uids
                self._claim_limit += limit
                self._executors[:0] = executors
                self._new_tasks = self._new_tasks or new_tasks
            raise
        if new_tasks:
            self.adapter.notify()
        if final:
            return
        self._claim(uids, limit, types)
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.lease_seconds / 3
            running = self._running()
            if running:
                held = set(self.adapter.heartbeat(self.owner, running, self.lease_seconds))
                lost = [uid for uid in running if uid not in held]
                if lost:  # expired while this controller was stalled: someone else has them
                    self._runtime.call_soon(self._on_leases_lost, lost)
            if self._capacity > 0:
                self.adapter.host_heartbeat(
                    self.owner, hostname=socket.gethostname(), pid=os.getpid(),
                    running=len(running), capacity=self._capacity,
                )  # fmt: skip
        if now >= self._next_sync:
            self._next_sync = now + self._sync_seconds
            self._sync()

    def _claim(self, uids: list[str], limit: int, types: list[str]) -> None:
        if not uids and limit <= 0:
            return
        won: list[str] = []
        claimed: list[Row] = []
        try:
            if uids:
                won = self.adapter.claim(uids, self.owner, self.lease_seconds)
            if limit > 0 and types:
                claimed = self.adapter.claim_next(self.owner, limit, self.lease_seconds, types)
        finally:
            # always answer, so the controller's count of claims in flight stays right
            self._runtime.call_soon(self._on_claimed, claimed, won, len(uids) + limit)

    def _sync(self) -> None:
        if self._capacity > 0:
            self._load_executors()
        self.adapter.requeue_expired()
        started = dt.datetime.now(dt.timezone.utc)
        since = self._since or dt.datetime.fromtimestamp(0, dt.timezone.utc)
        # what this controller wrote itself comes back too: skip exactly that version
        changed = [
            row
            for row in self.adapter.load_changed(since)
            if row["updated_at"] != self._written.get(row["uid"])
        ]
        self._since = started - dt.timedelta(seconds=SYNC_OVERLAP_SECONDS)
        self._runtime.call_soon(self._on_synced, changed)

    def _load_executors(self) -> None:
        """Executors registered in a notebook somewhere, new or changed since last time."""
        from nbqueue.errors import SignatureError

        known = self._known_executors()
        found: list[Shipped] = []
        for task_type, digest in self.adapter.executor_digests().items():
            if known.get(task_type) in (digest, "file"):
                continue
            try:
                loaded = self.adapter.load_executor(task_type, digest)
            except SignatureError as exc:
                found.append((task_type, digest, None, str(exc)))
                continue
            if loaded is not None:
                found.append((task_type, digest, loaded[1], None))
        if found:
            self._runtime.call_soon(self._on_executors, found)
