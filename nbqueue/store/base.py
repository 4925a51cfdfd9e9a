"""The storage interface: a few primitives on rows of the tasks table.

A backend stores rows (``nbqueue.store.columns``), never Task objects (``nbqueue.rows``
converts). The public methods are written once here (argument checks, the clock;
``nbqueue.store.batch`` plans a write); a backend implements the ``_``-prefixed primitives.
For scale-out over a shared database there are also executors (``<table>_executors``,
sealed by the adapter's ``signer``), hosts (``<table>_hosts``, refreshed by each host's
heartbeat) and wake-ups (:meth:`DatabaseAdapter.notify` wakes the :meth:`DatabaseAdapter.listen`
callbacks of every process on the table); their in-process defaults are in
``nbqueue.store.local``.
"""

from __future__ import annotations

import abc
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from nbqueue import checks, signing
from nbqueue.errors import ConfigurationError, NbqueueError
from nbqueue.store import batch, rowcheck
from nbqueue.store.batch import ClaimRequest, WriteResult
from nbqueue.store.columns import (
    MAX_DIGEST_LENGTH,
    MAX_NAME_LENGTH,
    MAX_TYPE_LENGTH,
    Row,
    order_key,
    utc_from_epoch,
)
from nbqueue.store.local import InProcessExtras

__all__ = ["DatabaseAdapter", "Row"]

log = logging.getLogger("nbqueue.store")


class DatabaseAdapter(InProcessExtras, abc.ABC):
    """Where a queue keeps its tasks: the rows of one table.

    Every method is safe to call from several threads. ``clock`` (epoch seconds, default
    ``time.time``) is the adapter's notion of now, for readiness, leases and ``updated_at``.
    """

    _signer: signing.Signer | None = None

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        if not callable(clock):
            raise ConfigurationError(f"clock must be a callable returning seconds, got {clock!r}")
        self._clock = clock
        self._opened = False
        self._open_lock = threading.Lock()
        super().__init__()

    @property
    def url(self) -> str | None:
        """A URL another process can open its own connection with; None when the storage
        lives in this process only."""
        return None

    @property
    def signer(self) -> signing.Signer:
        """Seals the pickles stored here and opens those read: made on first use from
        :attr:`url` and the environment (``signing.for_database``); assign one to choose."""
        if self._signer is None:
            self._signer = signing.for_database(self.url)
        return self._signer

    @signer.setter
    def signer(self, signer: signing.Signer) -> None:
        if not isinstance(signer, signing.Signer):
            raise ConfigurationError(f"signer must be a signing.Signer, got {signer!r}")
        self._signer = signer

    @property
    def notifies_other_processes(self) -> bool:
        """True when :meth:`notify` reaches :meth:`listen` callbacks in other processes
        (PostgreSQL); otherwise whoever waits for work elsewhere must poll."""
        return False

    def __enter__(self) -> DatabaseAdapter:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the public API -----------------------------------------------------------------
    def open(self) -> None:
        """Create the table (and record the schema version) when it is missing; check an
        existing one. Raises SchemaMismatchError, and changes nothing, when it is
        incompatible. Idempotent; the other methods call it on first use."""
        with self._open_lock:
            if not self._opened:
                self._open()
                self._opened = True

    def close(self) -> None:
        """Release connections. The stored rows stay; using the adapter again reopens it."""
        with self._open_lock:
            self._opened = False
            self._close()

    def _ensure_open(self) -> None:
        if not self._opened:
            self.open()

    def write(
        self,
        rows: Iterable[Mapping[str, Any]] = (),
        *,
        delete: Iterable[str] = (),
        claim: ClaimRequest | None = None,
    ) -> WriteResult:
        """Do in one transaction, in this order: save ``rows`` (as :meth:`save`), delete the
        rows with the uids in ``delete``, then claim what ``claim`` asks for (as
        :meth:`claim`, then :meth:`claim_next`). Everything is checked before the database
        is touched (RowRejectedError names every bad row); if any part fails, nothing is
        written."""
        plan = batch.plan(self._clock(), rows, delete, claim)
        if plan.empty:
            return WriteResult(plan.updated_at)
        self._ensure_open()
        won, claimed, deleted = self._write(plan)
        held = set(won)
        claimed.sort(key=order_key)
        if plan.claim_shown is not None:
            claimed = [{name: row[name] for name in plan.claim_shown} for row in claimed]
        return WriteResult(
            plan.updated_at, [uid for uid in plan.claim_uids if uid in held], claimed, deleted
        )

    def save(self, rows: Iterable[Mapping[str, Any]]) -> dt.datetime:
        """Write a batch of rows in one transaction. A row with every REQUIRED column is
        inserted or replaces the stored columns it names; a row with fewer columns updates
        an existing row only. Columns a row leaves out keep their stored values; rows with
        the same uid are merged in order. Returns the ``updated_at`` it stamped on them.
        Every row is checked first: RowRejectedError (listing every bad row) when any holds
        a value the database cannot store, and then nothing is written."""
        return self.write(rows).updated_at

    def delete(self, uids: Iterable[str]) -> int:
        """Delete these rows; returns how many existed."""
        return self.write(delete=uids).deleted

    def load(
        self, uids: Iterable[str] | None = None, *, columns: Iterable[str] | None = None
    ) -> list[Row]:
        """Every row, or the rows with these uids (unknown uids are skipped); with only
        ``columns`` (and uid and updated_at) when given."""
        wanted = None if uids is None else rowcheck.uids(uids)
        names = rowcheck.read_columns(columns)
        if wanted == []:
            return []
        self._ensure_open()
        return self._load(wanted, names)

    def load_by_key(
        self, keys: Iterable[str], *, columns: Iterable[str] | None = None
    ) -> list[Row]:
        """The rows whose ``key`` is one of ``keys``; with only ``columns`` (and uid and
        updated_at) when given."""
        wanted = rowcheck.strings(keys, "keys")
        names = rowcheck.read_columns(columns)
        if not wanted:
            return []
        self._ensure_open()
        return self._load_by_key(wanted, names)

    def load_changed(
        self,
        since: dt.datetime,
        *,
        columns: Iterable[str] | None = None,
        except_leased_by: str | None = None,
    ) -> list[Row]:
        """Rows written after ``since`` (their ``updated_at`` is later); with only
        ``columns`` (and uid and updated_at) when given; without the rows leased by
        ``except_leased_by`` (a controller's own tasks, which only it writes). Transactions
        commit in their own order, so a caller syncing with this should ask from a little
        before the newest ``updated_at`` it has seen and ignore rows it already has."""
        if not isinstance(since, dt.datetime):
            raise ConfigurationError(f"since must be a datetime, got {since!r}")
        names = rowcheck.read_columns(columns)
        if except_leased_by is not None:
            rowcheck.check_owner(except_leased_by)
        self._ensure_open()
        return self._load_changed(since.astimezone(dt.timezone.utc), names, except_leased_by)

    def claim(self, uids: Iterable[str], owner: str, lease_seconds: float) -> list[str]:
        """Atomically move those of these rows that are pending (or retrying) and ready to
        ``running``, leased to ``owner`` for ``lease_seconds``. Returns the uids won, in
        the order given: a row is won by exactly one claimer, however many try at once."""
        wanted = tuple(rowcheck.uids(uids))
        return self.write(claim=ClaimRequest(owner, lease_seconds, uids=wanted)).won

    def claim_next(
        self,
        owner: str,
        limit: int,
        lease_seconds: float,
        types: Iterable[str] | None = None,
        *,
        columns: Iterable[str] | None = None,
    ) -> list[Row]:
        """Claim up to ``limit`` of the best ready rows (priority desc, then created_at),
        only of ``types`` when given; returns them (as claimed, with only ``columns`` and
        uid and updated_at when given), best first. Rows another claimer holds are skipped
        rather than waited for."""
        request = ClaimRequest(
            owner,
            lease_seconds,
            limit=checks.integer(limit, "limit", minimum=1),
            types=None if types is None else tuple(rowcheck.strings(types, "types")),
            columns=None if columns is None else tuple(rowcheck.strings(columns, "columns")),
        )
        return self.write(claim=request).claimed

    def heartbeat(self, owner: str, uids: Iterable[str], lease_seconds: float) -> list[str]:
        """Extend ``owner``'s leases on these running rows to now + ``lease_seconds``;
        returns the uids still held (a missing uid means the lease was lost). Leases are
        not task state: ``updated_at`` is left alone."""
        wanted = rowcheck.uids(uids)
        rowcheck.check_owner(owner)
        expires_in = rowcheck.lease(lease_seconds)
        self._ensure_open()
        expires = utc_from_epoch(self._clock() + expires_in)
        held = set(self._heartbeat(owner, wanted, expires)) if wanted else set()
        return [uid for uid in wanted if uid in held]

    def requeue_expired(
        self, lost: Callable[[Row], Mapping[str, Any]], *, owners: Iterable[str] | None = None
    ) -> list[str]:
        """Hand back the running rows whose attempt was lost, in one transaction: those whose
        lease has expired (their claimer died) -- or, when ``owners`` is given, instead
        every running row leased by one of those owners, expired or not (owners known to be
        dead). ``lost(row)`` gets a copy of each full row and returns the columns to change
        (retry it counting the attempt, or fail it); the adapter also stamps
        ``updated_at`` and clears the lease. Returns their uids. Running rows without a
        lease are left alone; rows another caller is handing back are skipped.

        ``lost`` runs inside the transaction: it must not call the adapter, and it runs again
        if the transaction is retried (keep it free of side effects). If it raises,
        or returns values a database cannot store (RowRejectedError naming every such
        row), no row is changed."""
        if not callable(lost):
            raise ConfigurationError(f"lost must be a callable, got {lost!r}")
        wanted = None if owners is None else rowcheck.strings(owners, "owners")
        if wanted == []:
            return []
        self._ensure_open()
        now = utc_from_epoch(self._clock())

        def decide(found: list[Row]) -> list[Row]:
            return rowcheck.lost_updates(found, lost, now)

        return self._requeue(now, wanted, decide)

    def lease_owners(self) -> list[str]:
        """The distinct lease owners of running rows, sorted (whoever holds leases now:
        the caller recognises the dead ones among them)."""
        self._ensure_open()
        return sorted(self._lease_owners())

    # -- executors shipped to worker hosts -----------------------------------------------
    def save_executor(self, task_type: str, digest: str, payload: bytes) -> None:
        """Store the pickled executor ``payload`` for ``task_type`` under ``digest`` (its
        content hash), for worker hosts to load. Saving the same (type, digest) again
        replaces its payload and makes it the newest of its type. Sealed by :attr:`signer`
        (UnsignedPayloadError, nothing stored, when it may not be stored unsigned)."""
        rowcheck.check_text(task_type, "task_type", MAX_TYPE_LENGTH)
        rowcheck.check_text(digest, "digest", MAX_DIGEST_LENGTH)
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise ConfigurationError(f"payload must be bytes, got {type(payload).__name__}")
        blob = self.signer.seal(bytes(payload), f"executor {task_type!r}")
        self._ensure_open()
        self._save_executor(task_type, digest, blob, utc_from_epoch(self._clock()))

    def load_executor(self, task_type: str, digest: str | None = None) -> tuple[str, bytes] | None:
        """``(digest, payload)`` of the executor stored for ``task_type`` under ``digest``,
        or of the newest one for the type when ``digest`` is None; None when there is none.
        Raises SignatureError when :attr:`signer` refuses the stored payload (unsigned or
        mis-signed: it must not be unpickled)."""
        rowcheck.check_text(task_type, "task_type", MAX_TYPE_LENGTH)
        if digest is not None:
            rowcheck.check_text(digest, "digest", MAX_DIGEST_LENGTH)
        self._ensure_open()
        found = self._load_executor(task_type, digest)
        if found is None:
            return None
        found_digest, blob = found
        what = f"the stored executor for type {task_type!r} (digest {found_digest})"
        return found_digest, self.signer.open(blob, what)

    def executor_blobs(self) -> dict[str, bytes]:
        """The newest executor of every type (what hosts load) as stored, signature unchecked:
        for inspecting signatures (``nbqueue status``), never for unpickling."""
        self._ensure_open()
        found = {t: self._load_executor(t, d) for t, d in self._executor_digests().items()}
        return {t: stored[1] for t, stored in found.items() if stored is not None}

    def executor_digests(self) -> dict[str, str]:
        """The digest of the newest stored executor of every type (what worker hosts load
        to run tasks of types registered in a notebook)."""
        self._ensure_open()
        return self._executor_digests()

    # -- worker hosts ---------------------------------------------------------------------
    def host_heartbeat(
        self, name: str, *, hostname: str, pid: int, running: int, capacity: int
    ) -> None:
        """Record that worker host ``name`` is alive: upsert its row with ``last_seen`` =
        now (the adapter's clock). ``started_at`` is set when the row is made, and again
        when another process (another hostname or pid) takes the name over."""
        rowcheck.check_text(name, "name", MAX_NAME_LENGTH)
        rowcheck.check_text(hostname, "hostname", MAX_NAME_LENGTH)
        for label, value in (("pid", pid), ("running", running), ("capacity", capacity)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 63:
                raise ConfigurationError(f"{label} must be an int >= 0, got {value!r}")
        now = utc_from_epoch(self._clock())
        row: Row = {
            "name": name, "hostname": hostname, "pid": pid, "started_at": now,
            "last_seen": now, "running": running, "capacity": capacity,
        }  # fmt: skip
        self._ensure_open()
        self._host_heartbeat(row)

    def load_hosts(self) -> list[Row]:
        """Every host row (HOST_COLUMNS), by name. Whether a host is still alive is the
        caller's judgement, from ``last_seen``."""
        self._ensure_open()
        return sorted(self._load_hosts(), key=lambda row: row["name"])

    def remove_host(self, name: str) -> None:
        """Delete the row of host ``name`` (a host leaving cleanly); no error if missing."""
        rowcheck.check_text(name, "name", MAX_NAME_LENGTH)
        self._ensure_open()
        self._remove_host(name)

    # -- wake-ups -------------------------------------------------------------------------
    def notify(self) -> None:
        """Wake the listeners on this table (call it after saving new tasks). Best effort:
        a failure is logged, never raised -- listeners also poll."""
        try:
            self._notify()
        except NbqueueError as exc:
            log.warning("nbqueue: could not notify listeners: %s", exc)

    def listen(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` (possibly from another thread: keep it short, thread-safe) when
        :meth:`notify` is called on this table -- in any process when
        :attr:`notifies_other_processes`, else only through this adapter. Also called,
        once, after a lost connection is re-established (a wake-up may have been missed).
        Returns a function that stops listening (idempotent); close() stops every
        listener."""
        if not callable(callback):
            raise ConfigurationError(f"callback must be callable, got {callback!r}")
        return self._listen(callback)

    # -- what a backend implements ------------------------------------------------------
    @abc.abstractmethod
    def _open(self) -> None: ...

    @abc.abstractmethod
    def _close(self) -> None: ...

    @abc.abstractmethod
    def _write(self, plan: batch.Plan) -> tuple[list[str], list[Row], int]:
        """Carry out ``plan`` in one transaction; the uids won, the rows claimed (any
        order), the number of rows deleted. Claims take claimable rows whose ``ready_at <=
        plan.now``, skipping rows another claimer holds."""

    @abc.abstractmethod
    def _load(self, uids: list[str] | None, names: tuple[str, ...] | None) -> list[Row]: ...

    @abc.abstractmethod
    def _load_by_key(self, keys: list[str], names: tuple[str, ...] | None) -> list[Row]: ...

    @abc.abstractmethod
    def _load_changed(
        self, since: dt.datetime, names: tuple[str, ...] | None, skip_owner: str | None
    ) -> list[Row]: ...

    @abc.abstractmethod
    def _heartbeat(self, owner: str, uids: list[str], expires: dt.datetime) -> list[str]: ...

    @abc.abstractmethod
    def _requeue(
        self, now: dt.datetime, owners: list[str] | None, decide: Callable[[list[Row]], list[Row]]
    ) -> list[str]:
        """In one transaction: lock the running rows whose lease expired before ``now`` (or
        every running row leased by one of ``owners``), skipping rows locked by others;
        write ``decide(those rows)`` (rows to update by uid); return their uids."""

    @abc.abstractmethod
    def _lease_owners(self) -> list[str]: ...
