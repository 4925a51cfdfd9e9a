"""A queue's side of its database: one thread that writes every state change in batches,
claims tasks for this controller's workers, renews their leases, and reads what other
controllers and worker hosts changed.

The controller never waits for the database: it records rows and asks for claims; the
answers come back on its loop through :class:`StoreClient`, the one interface between the
two. Containment: a database hiccup (a dropped connection, a locked SQLite file) is retried
by the adapter and, if it outlasts that, the batch is kept and written again later; a row the
database refuses is found (the batch is split) and fails its own task only; a database that
is lost or damaged is reported to the controller, which makes it loud.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from nbqueue import config
from nbqueue.controller.storeclient import StoreClient
from nbqueue.controller.sync import Sync
from nbqueue.errors import DatabaseError, DatabaseLostError, RowRejectedError

if TYPE_CHECKING:
    from nbqueue.controller.loop import ControllerLoop
    from nbqueue.store import ClaimRequest, DatabaseAdapter, Row, WriteResult

log = logging.getLogger("nbqueue")

#: At most this many rows are written in one transaction: a claim waiting behind a burst of
#: new tasks is answered after one such batch, not after the whole burst.
MAX_BATCH_ROWS = 500
#: After a failed write, wait this long before trying again (doubling up to the cap).
WRITE_RETRY_SECONDS = 1.0
WRITE_RETRY_CAP_SECONDS = 30.0


class Persistence:
    """Writes, claims, heartbeats and sync for one controller (lease owner ``owner``)."""

    def __init__(
        self, adapter: DatabaseAdapter, loop: ControllerLoop, client: StoreClient, *,
        owner: str, name: str, lease_seconds: float, capacity: int,
    ) -> None:  # fmt: skip
        self.adapter = adapter
        self.owner = owner
        self.name = name
        self.lease_seconds = lease_seconds
        self._loop = loop
        self._client = client
        self._capacity = capacity  # task slots of this controller's workers (0: a client)
        self._cond = threading.Condition()
        self._rows: dict[str, Row] = {}
        self._urgent = False  # something other than progress is waiting to be written
        self._deleted: set[str] = set()
        self._executors: list[tuple[str, str, bytes]] = []  # to store
        self._claim_uids: list[str] = []
        self._claim_limit = 0
        self._claim_types: list[str] = []
        self._new_tasks = False  # a batch with new tasks: wake the other hosts
        self._unstorable: set[str] = set()
        self._queued = 0  # rows handed to write() so far
        self._committed = 0  # of which written (or refused) for good
        self._flushing = 0  # flush() calls waiting
        self._stopping = False
        self._failed: DatabaseError | None = None
        self._last_write = 0.0
        self._retry_pause = WRITE_RETRY_SECONDS
        self._written: dict[str, dt.datetime] = {}  # uid -> updated_at of our last write
        self._sync = Sync(
            adapter, loop, client, owner=owner, name=name, lease_seconds=lease_seconds,
            capacity=capacity, written=self._written,
        )  # fmt: skip
        self._stop_listening: Callable[[], None] | None = None
        self._thread = threading.Thread(target=self._run, name="nbqueue-db", daemon=True)

    def start(self, synced_until: dt.datetime) -> None:
        self._sync.start(synced_until)
        if self._capacity > 0 and self.adapter.notifies_other_processes:
            # new tasks wake this host at once; the poll stays as a fallback
            self._stop_listening = self.adapter.listen(self.wake)
        self._thread.start()

    def wake(self) -> None:
        """Look for new tasks now (a notification from another controller)."""
        with self._cond:
            self._sync.wake()
            self._cond.notify()

    # -- called by the controller (its lock held) -----------------------------------------
    def write(self, row: Row, *, urgent: bool = True) -> None:
        """Queue a row (full or partial) for the next batch."""
        with self._cond:
            uid = row["uid"]
            if uid in self._unstorable:
                return
            self._queued += 1
            self._deleted.discard(uid)
            previous = self._rows.get(uid)
            self._rows[uid] = row if previous is None else {**previous, **row}
            if urgent and not self._urgent:
                self._urgent = True
                self._cond.notify()

    def delete(self, uid: str) -> None:
        """Delete a task's row (written before the rows that follow)."""
        with self._cond:
            self._rows.pop(uid, None)
            self._deleted.add(uid)
            self._cond.notify()

    def added(self) -> None:
        """The batch has new tasks: wake idle hosts after writing it."""
        self._new_tasks = True

    def save_executor(self, task_type: str, digest: str, payload: bytes) -> None:
        """Store a notebook-defined executor so worker hosts can run its tasks."""
        with self._cond:
            self._executors.append((task_type, digest, payload))
            self._urgent = True
            self._cond.notify()

    def request_claims(self, uids: Sequence[str], limit: int, types: list[str]) -> None:
        """Claim these uids, and up to ``limit`` of the best ready tasks of ``types``."""
        with self._cond:
            self._claim_uids.extend(uids)
            self._claim_limit += limit
            self._claim_types = types
            self._cond.notify()

    def flush(self, timeout: float | None) -> bool:
        """Block until every row written so far is committed; False on timeout. Raises the
        database's failure if it is lost."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._queued
            self._urgent = True
            self._flushing += 1  # the next batch takes every row
            self._cond.notify()
            try:
                while self._committed < target:
                    if self._failed is not None:
                        raise self._failed
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._cond.wait(left if left is not None else 1.0)
            finally:
                self._flushing -= 1
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Write what is left and stop the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._stop_listening is not None:
            self._stop_listening()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._capacity > 0 and self._failed is None:
            try:
                self.adapter.remove_host(self.name)
            except Exception:
                log.warning("nbqueue: could not remove host %s from the database", self.name)
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
                self._retry_pause = WRITE_RETRY_SECONDS
            except DatabaseError as exc:
                if exc.permanent:
                    self._fail(exc)
                    return
                log.warning(
                    "nbqueue: the database is unavailable (%s); retrying in %.0f s, nothing is "
                    "lost meanwhile", exc, self._retry_pause,
                )  # fmt: skip
                with self._cond:
                    if not self._stopping:
                        self._cond.wait(self._retry_pause)
                self._retry_pause = min(self._retry_pause * 2, WRITE_RETRY_CAP_SECONDS)
            except Exception as exc:  # a bug: keep the thread alive, say it once per pause
                log.exception("nbqueue: database thread error; retrying later")
                with self._cond:
                    if not self._stopping:
                        self._cond.wait(self._retry_pause)
                del exc
            if stopping:
                return

    def _fail(self, error: DatabaseError) -> None:
        log.error("nbqueue: the task database failed for good: %s", error)
        warnings.warn(f"nbqueue: the task database failed: {error}", RuntimeWarning, stacklevel=1)
        self._client.database_failed(error)
        with self._cond:
            self._failed = error
            self._cond.notify_all()

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
            or now >= self._sync.next_due()
        )

    def _wait_time(self) -> float:
        now = time.monotonic()
        times = [self._sync.next_due()]
        if self._rows:
            times.append(self._last_write + config.PROGRESS_FLUSH_SECONDS)
        return max(0.001, min(times) - now)

    def _cycle(self, *, final: bool) -> None:
        with self._cond:
            batch = self._take_rows(everything=final or self._flushing > 0)
            deleted, self._deleted = self._deleted, set()
            uids, self._claim_uids = self._claim_uids, []
            limit, self._claim_limit = self._claim_limit, 0
            types = self._claim_types
            executors, self._executors = self._executors, []
            new_tasks, self._new_tasks = self._new_tasks, False
            queued = None if self._rows else self._queued  # (rows left: not all written)
        claim = None
        if not final and (uids or (limit > 0 and types)):
            from nbqueue.store import ClaimRequest  # (SQLAlchemy: only with a database)

            # Claimed rows are read back with no column but uid (and what orders them): the
            # controller has the tasks it added, and reads the others whole (Sync.whole).
            claim = ClaimRequest(
                self.owner, self.lease_seconds, tuple(uids), limit if types else 0,
                tuple(types), columns=(),
            )  # fmt: skip
        result: WriteResult | None = None
        try:
            for task_type, digest, payload in executors:
                self.adapter.save_executor(task_type, digest, payload)
            executors = []
            if batch or deleted or claim is not None:
                result = self._write(batch, deleted, claim)
        except DatabaseError:
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
        finally:
            if uids or limit > 0:  # always answer, so the count of claims in flight is right
                won, claimed = (result.won, result.claimed) if result else ([], [])
                self._answer_claims(claimed, won, len(uids) + limit, more=queued is None)
        with self._cond:
            if queued is not None:
                self._committed = max(self._committed, queued)
            self._cond.notify_all()
        if new_tasks:
            self.adapter.notify()
        if not final:
            self._sync.housekeeping()

    def _take_rows(self, *, everything: bool) -> dict[str, Row]:
        """The rows of the next batch: every row, or the oldest MAX_BATCH_ROWS (the rest
        wait for the next cycle, which comes at once). Called with the condition held."""
        if everything or len(self._rows) <= MAX_BATCH_ROWS:
            batch, self._rows, self._urgent = self._rows, {}, False
            return batch
        first = list(itertools.islice(self._rows, MAX_BATCH_ROWS))
        return {uid: self._rows.pop(uid) for uid in first}

    def _write(
        self, batch: dict[str, Row], deleted: set[str], claim: ClaimRequest | None
    ) -> WriteResult:
        """Save ``batch``, delete, claim: one transaction. Rows the database refuses are
        found (the batch is split) and fail their own task; the rest is written."""
        while True:
            try:
                result = self.adapter.write(list(batch.values()), delete=deleted, claim=claim)
            except RowRejectedError as exc:
                for uid, problem in exc.rejected.items():
                    self._refuse(uid, RowRejectedError({uid: problem}))
                    batch.pop(uid, None)
                continue
            except DatabaseError as exc:
                if isinstance(exc, DatabaseLostError) or not exc.permanent or not batch:
                    raise
                self._isolate(batch)  # writes the good rows, refuses the bad ones
                batch = {}
                continue
            self._last_write = time.monotonic()
            for uid in batch:
                self._written[uid] = result.updated_at
            return result

    def _isolate(self, batch: dict[str, Row]) -> None:
        """Save ``batch`` in halves until each row the database refuses is alone. When no
        row at all can be saved, it is the database that fails: raised as it is."""
        saved = 0

        def save(part: list[tuple[str, Row]]) -> None:
            nonlocal saved
            try:
                written = self.adapter.save([row for _, row in part])
            except DatabaseError as exc:
                if not exc.permanent:
                    raise
                if len(part) > 1:
                    half = len(part) // 2
                    save(part[:half])
                    save(part[half:])
                    return
                refused.append((part[0][0], exc))
                return
            saved += len(part)
            for uid, _ in part:
                self._written[uid] = written

        refused: list[tuple[str, DatabaseError]] = []
        save(list(batch.items()))
        if refused and not saved:
            self.adapter.lease_owners()  # a database that fails this read too is the fault
        for uid, exc in refused:
            self._refuse(uid, exc)

    def _refuse(self, uid: str, error: Exception) -> None:
        log.error("nbqueue: the database refused the row of task %s: %s", uid, error)
        self._unstorable.add(uid)
        self._loop.call_soon(self._client.unstorable, uid, error)

    def _answer_claims(self, claimed: list[Row], won: list[str], asked: int, *, more: bool) -> None:
        """Hand the claimed rows to the controller (whole rows of tasks it does not know);
        ``more``: rows were left for the next batch."""
        whole = self._sync.whole(claimed)
        self._loop.call_soon(self._client.claimed, whole, won, asked, more)
