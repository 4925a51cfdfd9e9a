"""The storage interface: a few primitives on rows of the tasks table.

A backend stores rows (plain dicts of column name to value) and never sees a Task object;
``nbqueue.rows`` is the one place a Task becomes a row and back. The public methods are
written once here (argument checks, the clock, splitting a batch into inserts and updates);
a backend implements the ``_``-prefixed primitives.

The row contract, shared by every backend:

- text: ``uid``, ``type``, ``name``, ``description``, ``status``, ``error``, ``worker``,
  ``lease_owner``
- int: ``priority``, ``retry_count``, ``max_retries``
- float: ``progress``; ``delay`` and ``timeout`` in seconds; ``ready_at`` in epoch seconds
- timezone-aware UTC datetime: ``created_at``, ``updated_at``, ``run_at``, ``started_at``,
  ``finished_at``, ``lease_expires_at``
- JSON documents as their text: ``data``, ``metadata``, ``user_id``, ``result``, ``errors``
- bytes: ``data_blob`` (inputs that are not JSON, pickled), ``result_blob``

``updated_at`` is stamped by the adapter on every write; ``lease_owner`` and
``lease_expires_at`` belong to :meth:`DatabaseAdapter.claim` and friends.

Beside the tasks, for scale-out over a shared database:

- executors (``<table>_executors``): pickled notebook-defined executors by ``(type,
  digest)``, stored signed when NBQUEUE_SECRET is set, so worker hosts can load them;
- hosts (``<table>_hosts``): one row per ``nbqueue worker`` host, refreshed by its heartbeat;
- wake-ups: :meth:`DatabaseAdapter.notify` wakes the :meth:`DatabaseAdapter.listen`
  callbacks of every process on the same table (PostgreSQL LISTEN/NOTIFY).

The primitives for these have in-process defaults (what MemoryAdapter uses): a backend that
does not override them keeps executors and hosts in this adapter object, and wakes only
listeners of this adapter object.
"""

from __future__ import annotations

import abc
import datetime as dt
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from nbqueue import serialization
from nbqueue.errors import ConfigurationError, NbqueueError

log = logging.getLogger("nbqueue.store")

#: One row of the tasks table: column name -> value (see the module docstring).
Row = dict[str, Any]

#: Version of the table layout below; recorded in ``<table>_meta`` when the table is made.
SCHEMA_VERSION = 1
DEFAULT_TABLE = "tasks"

PENDING, RUNNING, RETRYING = "pending", "running", "retrying"
COMPLETED, FAILED, CANCELLED = "completed", "failed", "cancelled"
STATUSES = frozenset({PENDING, RUNNING, RETRYING, COMPLETED, FAILED, CANCELLED})
#: Rows in these states are claimed once their ``ready_at`` has passed.
CLAIMABLE = (PENDING, RETRYING)

#: Every column, in table order.
COLUMNS: tuple[str, ...] = (
    # the seed's tasks table
    "uid", "type", "name", "description", "status", "data", "error", "started_at",
    "finished_at",
    # what the queue needs on top
    "priority", "progress", "retry_count", "max_retries", "delay", "timeout", "run_at",
    "ready_at", "user_id", "metadata", "result", "errors", "created_at", "updated_at",
    "worker", "lease_owner", "lease_expires_at", "data_blob", "result_blob",
)  # fmt: skip
#: Columns a new row must have. A row without all of them only updates an existing row
#: (a state change for a task some other controller has deleted is then dropped).
REQUIRED = frozenset({
    "uid", "type", "name", "status", "priority", "progress", "retry_count", "max_retries",
    "delay", "timeout", "created_at", "ready_at",
})  # fmt: skip
_KNOWN = frozenset(COLUMNS)

#: The columns of a row of the executors table (payload: the pickle, signed or not).
EXECUTOR_COLUMNS = ("type", "digest", "payload", "created_at")
#: The columns of a row of the hosts table, as :meth:`DatabaseAdapter.load_hosts` gives them.
HOST_COLUMNS = ("name", "hostname", "pid", "started_at", "last_seen", "running", "capacity")
#: Length limits of the text columns of the executors and hosts tables.
MAX_TYPE_LENGTH = 255
MAX_DIGEST_LENGTH = 128
MAX_NAME_LENGTH = 255


def utc_from_epoch(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)


class DatabaseAdapter(abc.ABC):
    """Where a queue keeps its tasks: the rows of one table.

    Every method is safe to call from several threads. ``clock`` (epoch seconds, default
    ``time.time``) is the adapter's notion of now, for readiness, leases and ``updated_at``.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        if not callable(clock):
            raise ConfigurationError(f"clock must be a callable returning seconds, got {clock!r}")
        self._clock = clock
        self._opened = False
        self._open_lock = threading.Lock()
        # The in-process defaults for executors, hosts and wake-ups (see the module docstring).
        self._local_lock = threading.Lock()
        self._local_executors: dict[tuple[str, str], tuple[bytes, dt.datetime, int]] = {}
        self._local_hosts: dict[str, Row] = {}
        self._local_listeners: dict[int, Callable[[], None]] = {}
        self._local_seq = itertools.count()

    @property
    def url(self) -> str | None:
        """A URL another process can open its own connection with; None when the storage
        lives in this process only."""
        return None

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

    def save(self, rows: Iterable[Mapping[str, Any]]) -> dt.datetime:
        """Write a batch of rows in one transaction. A row with every REQUIRED column is
        inserted or replaces the stored columns it names; a row with fewer columns updates
        an existing row only. Columns a row leaves out keep their stored values. Returns the
        ``updated_at`` it stamped on them."""
        now = utc_from_epoch(self._clock())
        complete: list[Row] = []
        partial: list[Row] = []
        for row in rows:
            checked = _checked_row(row)
            checked["updated_at"] = now
            (complete if checked.keys() >= REQUIRED else partial).append(checked)
        if complete or partial:
            self._ensure_open()
            self._save(complete, partial)
        return now

    def delete(self, uids: Iterable[str]) -> int:
        """Delete these rows; returns how many existed."""
        wanted = _uids(uids)
        self._ensure_open()
        return self._delete(wanted) if wanted else 0

    def load(self, uids: Iterable[str] | None = None) -> list[Row]:
        """Every row, or the rows with these uids (unknown uids are skipped)."""
        wanted = None if uids is None else _uids(uids)
        self._ensure_open()
        return self._load(wanted) if wanted != [] else []

    def load_changed(self, since: dt.datetime) -> list[Row]:
        """Rows written after ``since`` (their ``updated_at`` is later). Transactions
        commit in their own order, so a caller syncing with this should ask from a little
        before the newest ``updated_at`` it has seen and ignore rows it already has."""
        if not isinstance(since, dt.datetime):
            raise ConfigurationError(f"since must be a datetime, got {since!r}")
        self._ensure_open()
        return self._load_changed(since.astimezone(dt.timezone.utc))

    def claim(self, uids: Iterable[str], owner: str, lease_seconds: float) -> list[str]:
        """Atomically move those of these rows that are pending (or retrying) and ready to
        ``running``, leased to ``owner`` for ``lease_seconds``. Returns the uids won, in
        the order given: a row is won by exactly one claimer, however many try at once."""
        wanted = _uids(uids)
        _check_owner(owner)
        expires_in = _lease(lease_seconds)
        self._ensure_open()
        now = self._clock()
        expires = utc_from_epoch(now + expires_in)
        won = set(self._claim(wanted, owner, now, expires)) if wanted else set()
        return [uid for uid in wanted if uid in won]

    def claim_next(
        self, owner: str, limit: int, lease_seconds: float, types: Iterable[str] | None = None
    ) -> list[Row]:
        """Claim up to ``limit`` of the best ready rows (priority desc, then created_at),
        only of ``types`` when given; returns them (as claimed), best first. Rows another
        claimer holds are skipped rather than waited for."""
        _check_owner(owner)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigurationError(f"limit must be an int >= 1, got {limit!r}")
        wanted_types = None if types is None else _strings(types, "types")
        expires_in = _lease(lease_seconds)
        if wanted_types == []:
            return []
        self._ensure_open()
        now = self._clock()
        expires = utc_from_epoch(now + expires_in)
        rows = self._claim_next(owner, limit, now, expires, wanted_types)
        rows.sort(key=order_key)
        return rows

    def heartbeat(self, owner: str, uids: Iterable[str], lease_seconds: float) -> list[str]:
        """Extend ``owner``'s leases on these running rows to now + ``lease_seconds``;
        returns the uids still held (a missing uid means the lease was lost). Leases are
        not task state: ``updated_at`` is left alone."""
        wanted = _uids(uids)
        _check_owner(owner)
        expires_in = _lease(lease_seconds)
        self._ensure_open()
        expires = utc_from_epoch(self._clock() + expires_in)
        held = set(self._heartbeat(owner, wanted, expires)) if wanted else set()
        return [uid for uid in wanted if uid in held]

    def requeue_expired(self) -> list[str]:
        """Put running rows whose lease has expired (their claimer died) back to pending;
        returns their uids. Running rows without a lease are left alone."""
        self._ensure_open()
        return self._requeue_expired(utc_from_epoch(self._clock()))

    # -- executors shipped to worker hosts -----------------------------------------------
    def save_executor(self, task_type: str, digest: str, payload: bytes) -> None:
        """Store the pickled executor ``payload`` for ``task_type`` under ``digest`` (its
        content hash), for worker hosts to load. Saving the same (type, digest) again
        replaces its payload and makes it the newest of its type. The payload is signed
        when NBQUEUE_SECRET is set."""
        _check_text(task_type, "task_type", MAX_TYPE_LENGTH)
        _check_text(digest, "digest", MAX_DIGEST_LENGTH)
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise ConfigurationError(f"payload must be bytes, got {type(payload).__name__}")
        blob = serialization.sign_for_storage(bytes(payload))
        self._ensure_open()
        self._save_executor(task_type, digest, blob, utc_from_epoch(self._clock()))

    def load_executor(self, task_type: str, digest: str | None = None) -> tuple[str, bytes] | None:
        """``(digest, payload)`` of the executor stored for ``task_type`` under ``digest``,
        or of the newest one for the type when ``digest`` is None; None when there is none.
        Raises SignatureError when the stored payload is unsigned or
        mis-signed for this process's NBQUEUE_SECRET (it must not be unpickled)."""
        _check_text(task_type, "task_type", MAX_TYPE_LENGTH)
        if digest is not None:
            _check_text(digest, "digest", MAX_DIGEST_LENGTH)
        self._ensure_open()
        found = self._load_executor(task_type, digest)
        if found is None:
            return None
        found_digest, blob = found
        what = f"the stored executor for type {task_type!r} (digest {found_digest})"
        return found_digest, serialization.verify_from_storage(blob, what)

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
        _check_text(name, "name", MAX_NAME_LENGTH)
        _check_text(hostname, "hostname", MAX_NAME_LENGTH)
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
        _check_text(name, "name", MAX_NAME_LENGTH)
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
    def _save(self, complete: list[Row], partial: list[Row]) -> None:
        """Upsert ``complete`` rows and update existing rows from ``partial`` ones, in one
        transaction."""

    @abc.abstractmethod
    def _delete(self, uids: list[str]) -> int: ...

    @abc.abstractmethod
    def _load(self, uids: list[str] | None) -> list[Row]: ...

    @abc.abstractmethod
    def _load_changed(self, since: dt.datetime) -> list[Row]: ...

    @abc.abstractmethod
    def _claim(self, uids: list[str], owner: str, now: float, expires: dt.datetime) -> list[str]:
        """Conditional claim: claimable status and ``ready_at <= now``."""

    @abc.abstractmethod
    def _claim_next(
        self, owner: str, limit: int, now: float, expires: dt.datetime, types: list[str] | None
    ) -> list[Row]: ...

    @abc.abstractmethod
    def _heartbeat(self, owner: str, uids: list[str], expires: dt.datetime) -> list[str]: ...

    @abc.abstractmethod
    def _requeue_expired(self, now: dt.datetime) -> list[str]: ...

    # Executors, hosts and wake-ups: in-process defaults, overridden by shared backends.
    def _save_executor(self, task_type: str, digest: str, blob: bytes, now: dt.datetime) -> None:
        with self._local_lock:
            self._local_executors[(task_type, digest)] = (blob, now, next(self._local_seq))

    def _load_executor(self, task_type: str, digest: str | None) -> tuple[str, bytes] | None:
        """``(digest, stored blob)``: by digest, or the newest for the type."""
        with self._local_lock:
            if digest is not None:
                found = self._local_executors.get((task_type, digest))
                return None if found is None else (digest, found[0])
            mine = [(at, seq, d, blob) for (t, d), (blob, at, seq) in
                    self._local_executors.items() if t == task_type]  # fmt: skip
            if not mine:
                return None
            _, _, newest, blob = max(mine)
            return newest, blob

    def _executor_digests(self) -> dict[str, str]:
        with self._local_lock:
            ordered = sorted(
                (at, seq, t, d) for (t, d), (_, at, seq) in self._local_executors.items()
            )
            return {t: d for _, _, t, d in ordered}

    def _host_heartbeat(self, row: Row) -> None:
        with self._local_lock:
            stored = self._local_hosts.get(row["name"])
            if stored is not None and (stored["hostname"], stored["pid"]) == (
                row["hostname"], row["pid"],
            ):  # fmt: skip
                row = {**row, "started_at": stored["started_at"]}
            self._local_hosts[row["name"]] = row

    def _load_hosts(self) -> list[Row]:
        with self._local_lock:
            return [dict(row) for row in self._local_hosts.values()]

    def _remove_host(self, name: str) -> None:
        with self._local_lock:
            self._local_hosts.pop(name, None)

    def _notify(self) -> None:
        with self._local_lock:
            callbacks = list(self._local_listeners.values())
        for callback in callbacks:
            call_listener(callback)

    def _listen(self, callback: Callable[[], None]) -> Callable[[], None]:
        with self._local_lock:
            key = next(self._local_seq)
            self._local_listeners[key] = callback

        def stop() -> None:
            with self._local_lock:
                self._local_listeners.pop(key, None)

        return stop

    # -- shared by backends -------------------------------------------------------------
    @staticmethod
    def _claimed_values(owner: str, now: float, expires: dt.datetime) -> Row:
        """The columns a claim sets."""
        return {
            "status": RUNNING,
            "lease_owner": owner,
            "lease_expires_at": expires,
            "updated_at": utc_from_epoch(now),
        }

    @staticmethod
    def _requeued_values(now: dt.datetime) -> Row:
        """The columns requeue_expired() sets."""
        return {
            "status": PENDING,
            "lease_owner": None,
            "lease_expires_at": None,
            "worker": None,
            "started_at": None,
            "progress": 0.0,
            "updated_at": now,
        }


_EPOCH = utc_from_epoch(0)


def order_key(row: Row) -> tuple[int, int, dt.datetime]:
    """Best first: priority desc, then created_at. A row whose columns are not what they
    should be (a corrupt row) sorts last instead of breaking the sort."""
    priority, created = row.get("priority"), row.get("created_at")
    if type(priority) is int and isinstance(created, dt.datetime) and created.tzinfo:
        return (0, -priority, created)
    return (1, 0, _EPOCH)


def _checked_row(row: Mapping[str, Any]) -> Row:
    if not isinstance(row, Mapping):
        raise ConfigurationError(f"a row must be a mapping of column to value, got {row!r}")
    uid = row.get("uid")
    if not isinstance(uid, str) or not uid:
        raise ConfigurationError(f"a row needs a non-empty string 'uid', got {uid!r}")
    unknown = row.keys() - _KNOWN
    if unknown:
        raise ConfigurationError(
            f"row {uid} has unknown column(s) {sorted(unknown)}; the columns are {list(COLUMNS)}"
        )
    return dict(row)


def call_listener(callback: Callable[[], None]) -> None:
    """Run a listen() callback; its failure is logged, never passed on to the notifier."""
    try:
        callback()
    except Exception:
        log.exception("nbqueue: a wake-up callback failed")


def _check_text(value: str, what: str, limit: int) -> None:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ConfigurationError(
            f"{what} must be a non-empty string of at most {limit} characters, got {value!r}"
        )


def _strings(values: Iterable[str], what: str) -> list[str]:
    if isinstance(values, str):
        raise ConfigurationError(f"{what} must be an iterable of strings, not one string")
    out = list(dict.fromkeys(values))
    for value in out:
        if not isinstance(value, str) or not value:
            raise ConfigurationError(f"{what} must be non-empty strings, got {value!r}")
    return out


def _uids(uids: Iterable[str]) -> list[str]:
    return _strings(uids, "uids")


def _check_owner(owner: str) -> None:
    if not isinstance(owner, str) or not owner:
        raise ConfigurationError(f"owner must be a non-empty string, got {owner!r}")


def _lease(seconds: float) -> float:
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not (seconds > 0 and math.isfinite(seconds))
    ):
        raise ConfigurationError(f"lease_seconds must be a number > 0, got {seconds!r}")
    return float(seconds)
