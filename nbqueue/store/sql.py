"""SQLAlchemyAdapter: the tasks table on SQLite or PostgreSQL, with SQLAlchemy 2 Core.

- Claims are conditional updates that only take claimable, ready rows. On PostgreSQL the
  rows are picked with ``FOR UPDATE SKIP LOCKED`` (claimers never wait on each other); on
  SQLite every write runs in one ``BEGIN IMMEDIATE`` transaction, which takes the write lock
  up front, in WAL mode with a busy timeout and ``synchronous=FULL``.
- Every operation is one transaction run by :meth:`SQLAlchemyAdapter._run`, the one place
  driver errors are handled: a dropped connection, a locked SQLite file or a deadlock is
  retried with exponential back-off; what still fails becomes a :class:`DatabaseError`,
  marked ``permanent`` when retrying cannot help (refused data or statement, a damaged
  file). An SQLite file deleted or replaced under the adapter raises DatabaseLostError.
- The tables and column types are in ``nbqueue.store.schema``, the statements in
  ``nbqueue.store.queries``, what a transaction does in ``nbqueue.store.ops``, creating,
  checking and migrating the tables in ``nbqueue.store.migrate``.
- Wake-ups on PostgreSQL: :meth:`SQLAlchemyAdapter.notify` is ``pg_notify`` on the channel
  ``nbqueue_<table>``; each :meth:`SQLAlchemyAdapter.listen` runs a daemon thread with a
  connection of its own (psycopg 3.2+) doing ``LISTEN`` (``nbqueue.store.listen``). On
  SQLite there are no wake-ups: notify() does nothing and listeners must poll.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import random
import re
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from nbqueue import checks
from nbqueue.errors import ConfigurationError, DatabaseError, DatabaseLostError
from nbqueue.store import base, batch, columns, driver, listen, migrate, ops, queries, schema
from nbqueue.store.columns import Row

log = logging.getLogger("nbqueue.store")

T = TypeVar("T")

#: Attempts at one operation before giving up (dropped connection, locked file, deadlock).
#: With the back-off below they span several seconds: enough to ride out a server restart.
DEFAULT_RETRY_ATTEMPTS = 8
#: Upper bound on the time spent retrying one operation, in seconds.
DEFAULT_RETRY_MAX_SECONDS = 30.0
#: First back-off, doubled after each failed attempt up to the cap (with jitter).
RETRY_BASE_SECONDS = 0.1
RETRY_CAP_SECONDS = 2.0
#: How long listen() waits for its first LISTEN before returning anyway (still trying).
LISTEN_READY_SECONDS = 5.0
#: The notification channel is this prefix and the table name.
CHANNEL_PREFIX = "nbqueue_"

_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,47}\Z")


# -- the adapter --------------------------------------------------------------------------
class SQLAlchemyAdapter(base.DatabaseAdapter):
    """The tasks table in an SQLite or PostgreSQL database.

    ``engine_or_url`` is an SQLAlchemy Engine or a URL such as ``"sqlite:///nbqueue.db"`` or
    ``"postgresql+psycopg://user@host/db"``. ``table`` names the tasks table (a
    ``<table>_meta`` table sits beside it). A failing operation is retried up to
    ``retry_attempts`` times within ``retry_max_seconds``; SQLite waits up to
    ``busy_timeout`` seconds for a lock before that counts as a failure.
    """

    def __init__(
        self,
        engine_or_url: Engine | str | sa.URL,
        *,
        table: str = columns.DEFAULT_TABLE,
        busy_timeout: float = driver.DEFAULT_BUSY_TIMEOUT_SECONDS,
        retry_attempts: int = DEFAULT_RETRY_ATTEMPTS,
        retry_max_seconds: float = DEFAULT_RETRY_MAX_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(clock=clock)
        if not isinstance(table, str) or not _TABLE_NAME.match(table):
            raise ConfigurationError(
                f"table must be a name of letters, digits and underscores (at most 48, not "
                f"starting with a digit), got {table!r}"
            )
        checks.number(busy_timeout, "busy_timeout")
        checks.number(retry_max_seconds, "retry_max_seconds")
        checks.integer(retry_attempts, "retry_attempts", minimum=1)
        if isinstance(engine_or_url, Engine):
            self._engine, self._owns_engine = engine_or_url, False
        elif isinstance(engine_or_url, (str, sa.URL)):
            self._engine, self._owns_engine = driver.create_engine(engine_or_url), True
        else:
            raise ConfigurationError(
                "SQLAlchemyAdapter takes an SQLAlchemy Engine or a database URL such as "
                f"'sqlite:///nbqueue.db', got {type(engine_or_url).__name__}"
            )
        self._dialect = self._engine.dialect.name
        if self._dialect not in driver.SUPPORTED:
            raise ConfigurationError(
                f"nbqueue stores tasks in SQLite or PostgreSQL, not {self._dialect!r} "
                f"({self._engine.url.render_as_string(hide_password=True)})"
            )
        self._memory = self._dialect == "sqlite" and driver.sqlite_in_memory(self._engine.url)
        self._file = (
            driver.SQLiteFile.of(self._engine.url)
            if self._dialect == "sqlite" and not self._memory
            else None
        )
        # One in-memory SQLite connection is shared by every thread: take turns.
        self._serial: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if self._memory else contextlib.nullcontext()
        )
        self._options = {
            driver.BEGIN_OPTION: "DEFERRED",
            driver.BUSY_OPTION: int(busy_timeout * 1000),
        }
        self._retry_attempts = retry_attempts
        self._retry_max_seconds = float(retry_max_seconds)
        self.table = table
        self._queries = queries.Queries(schema.tables(table))
        #: The PostgreSQL notification channel of this table (LISTEN/NOTIFY).
        self.channel = f"{CHANNEL_PREFIX}{table}"
        self._listeners: set[listen.Listener] = set()
        self._listeners_lock = threading.Lock()
        if self._dialect == "sqlite" and not event.contains(
            self._engine, "begin", driver.sqlite_begin
        ):
            event.listen(self._engine, "begin", driver.sqlite_begin)

    def __repr__(self) -> str:
        return f"<SQLAlchemyAdapter {self._where()}>"

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (executor hooks receive it as ``db``)."""
        return self._engine

    @property
    def url(self) -> str | None:
        """The URL with its password, for a worker process to build its own engine; a
        relative SQLite path is made absolute. None for an in-memory SQLite database."""
        if self._memory:
            return None
        url = self._engine.url
        if self._file is not None:
            url = url.set(database=self._file.path)
        return url.render_as_string(hide_password=False)

    # -- the one place database errors are handled ----------------------------------------
    def _run(self, what: str, work: Callable[[Connection], T], *, write: bool = True) -> T:
        """Run ``work`` in one transaction (``BEGIN IMMEDIATE`` on SQLite when ``write``).
        Transient failures -- a dropped connection, a locked SQLite file, a deadlock -- are
        retried with exponential back-off (``work`` runs again from the start); anything
        else, or a failure that outlasts the retries, is raised as DatabaseError with the
        driver's error as its cause, ``permanent`` when retrying cannot help. An SQLite file
        deleted or replaced since it was opened raises DatabaseLostError first."""
        options = dict(self._options)
        if write:
            options[driver.BEGIN_OPTION] = "IMMEDIATE"
        deadline = time.monotonic() + self._retry_max_seconds
        backoff = RETRY_BASE_SECONDS
        attempt = 1
        while True:
            self._check_file()
            try:
                with self._serial, self._engine.connect() as conn:
                    conn.execution_options(**options)
                    with conn.begin():
                        return work(conn)
            except sa_exc.DBAPIError as exc:
                pause = backoff * random.uniform(0.5, 1.0)
                transient = driver.transient(exc, self._dialect)
                if (
                    not transient
                    or attempt >= self._retry_attempts
                    or (time.monotonic() + pause > deadline)
                ):
                    raise self._failure(what, exc, attempt, permanent=not transient) from exc
                log.warning(
                    "nbqueue: %s in %s failed (attempt %d of %d), retrying in %.2f s: %s",
                    what, self._where(), attempt, self._retry_attempts, pause, driver.describe(exc),
                )  # fmt: skip
            except sa_exc.SQLAlchemyError as exc:  # refused before it reached the driver
                raise DatabaseError(
                    f"could not {what} in {self._where()}: {exc}", permanent=True
                ) from exc
            time.sleep(pause)
            backoff = min(backoff * 2, RETRY_CAP_SECONDS)
            attempt += 1

    def _failure(
        self, what: str, exc: sa_exc.DBAPIError, attempt: int, *, permanent: bool
    ) -> DatabaseError:
        """The DatabaseError for a driver error that is given up on."""
        cause = driver.describe(exc)
        if self._file is not None and driver.sqlite_damaged(exc):
            return DatabaseError(
                f"could not {what}: the SQLite file {self._file.path} is damaged ({cause}). "
                "Restore it from a backup, or move it away to start an empty queue.",
                permanent=True,
            )
        return DatabaseError(
            f"could not {what} in {self._where()} (attempt {attempt}): {cause}",
            permanent=permanent,
        )

    def _check_file(self) -> None:
        """Raise DatabaseLostError when the SQLite file opened is no longer at its path:
        SQLite would go on writing to the deleted file, or silently start an empty one."""
        change = None if self._file is None else self._file.change()
        if change is not None:
            assert self._file is not None
            self._engine.dispose()  # pooled connections still hold the old file open
            raise DatabaseLostError(
                f"the SQLite file {self._file.path} of this queue was {change} while in use; "
                "nothing more is written to it. Restore the file, or close the adapter "
                "and open it again to start afresh."
            )

    def _where(self) -> str:
        url = self._engine.url.render_as_string(hide_password=True)
        return f"{url} table {self.table!r}"

    # -- primitives ------------------------------------------------------------------------
    def _open(self) -> None:
        self._run(
            "open the tasks table",
            lambda conn: migrate.create_or_check(conn, self._queries, self._where()),
        )
        if self._file is not None:
            self._file.remember()

    def _close(self) -> None:
        if self._file is not None:
            self._file.forget()
        with self._listeners_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener.stop()
        if self._owns_engine:
            self._engine.dispose()

    def _write(self, plan: batch.Plan) -> tuple[list[str], list[Row], int]:
        return self._run(plan.describe(), lambda conn: ops.write(conn, self._queries, plan))

    def _load(self, uids: list[str] | None, names: tuple[str, ...] | None) -> list[Row]:
        return self._run(
            "load rows", lambda conn: ops.load(conn, self._queries, uids, names), write=False
        )

    def _load_by_key(self, keys: list[str], names: tuple[str, ...] | None) -> list[Row]:
        return self._run(
            "load rows by key",
            lambda conn: ops.load_by_key(conn, self._queries, keys, names),
            write=False,
        )

    def _load_changed(
        self, since: dt.datetime, names: tuple[str, ...] | None, skip_owner: str | None
    ) -> list[Row]:
        query = self._queries.select_changed(since, names, skip_owner)
        return self._run(
            "load changed rows", lambda conn: ops.rows(conn.execute(query)), write=False
        )

    def _heartbeat(self, owner: str, uids: list[str], expires: dt.datetime) -> list[str]:
        return self._run(
            "extend leases",
            lambda conn: ops.heartbeat(conn, self._queries, owner, uids, expires),
        )

    def _requeue(
        self, now: dt.datetime, owners: list[str] | None, decide: Callable[[list[Row]], list[Row]]
    ) -> list[str]:
        return self._run(
            "hand back tasks whose lease was lost",
            lambda conn: ops.requeue(conn, self._queries, now, owners, decide),
        )

    def _lease_owners(self) -> list[str]:
        return self._run(
            "list lease owners",
            lambda conn: list(conn.execute(self._queries.lease_owners()).scalars()),
            write=False,
        )

    # -- executors, hosts ------------------------------------------------------------------
    def _save_executor(self, task_type: str, digest: str, blob: bytes, now: dt.datetime) -> None:
        values = {"type": task_type, "digest": digest, "payload": blob, "created_at": now}
        self._run(
            f"save the executor for type {task_type!r}",
            lambda conn: conn.execute(self._queries.upsert_executor(self._dialect), values),
        )

    def _load_executor(self, task_type: str, digest: str | None) -> tuple[str, bytes] | None:
        def work(conn: Connection) -> tuple[str, bytes] | None:
            row = conn.execute(self._queries.select_executor(task_type, digest)).first()
            return None if row is None else (row.digest, bytes(row.payload))

        return self._run(f"load the executor for type {task_type!r}", work, write=False)

    def _executor_digests(self) -> dict[str, str]:
        def work(conn: Connection) -> dict[str, str]:
            rows = conn.execute(self._queries.select_executor_versions())
            return {row.type: row.digest for row in rows}  # the newest wins

        return self._run("list the stored executors", work, write=False)

    def _host_heartbeat(self, row: Row) -> None:
        self._run(
            f"record a heartbeat of host {row['name']!r}",
            lambda conn: conn.execute(self._queries.upsert_host(self._dialect), row),
        )

    def _load_hosts(self) -> list[Row]:
        return self._run(
            "load hosts", lambda conn: ops.rows(conn.execute(self._queries.select_hosts())),
            write=False,
        )  # fmt: skip

    def _remove_host(self, name: str) -> None:
        self._run(
            f"remove host {name!r}", lambda conn: conn.execute(self._queries.delete_host(name))
        )

    # -- wake-ups ---------------------------------------------------------------------------
    @property
    def notifies_other_processes(self) -> bool:
        """True on PostgreSQL through psycopg 3.2 or later (LISTEN/NOTIFY)."""
        return self._dialect == "postgresql" and driver.psycopg_can_listen(self._engine)

    def _notify(self) -> None:
        if self._dialect != "postgresql":
            return  # SQLite: no wake-ups across processes; listeners poll
        notify = sa.select(sa.func.pg_notify(sa.literal(self.channel), sa.literal("")))
        self._run("notify listeners", lambda conn: conn.execute(notify), write=False)

    def _listen(self, callback: Callable[[], None]) -> Callable[[], None]:
        if not self.notifies_other_processes:
            if self._dialect == "postgresql":
                log.info(
                    "nbqueue: wake-ups need psycopg 3.2 or later (postgresql+psycopg://); "
                    "listeners on %s poll instead", self._where(),
                )  # fmt: skip
            return listen.nothing
        listener = listen.Listener(self._listen_connection, self.channel, callback, self._where())
        with self._listeners_lock:
            self._listeners.add(listener)

        def stop() -> None:
            listener.stop()
            with self._listeners_lock:
                self._listeners.discard(listener)

        listener.start()
        listener.ready.wait(LISTEN_READY_SECONDS)
        return stop

    def _listen_connection(self) -> Any:
        """A psycopg connection of the listener's own, in autocommit mode: made by the
        engine (so its connect arguments and events apply), then taken out of its pool."""
        pooled = self._engine.raw_connection()
        try:
            conn = pooled.driver_connection
            assert conn is not None
            pooled.detach()
            conn.rollback()
            conn.autocommit = True
        except BaseException:
            pooled.close()
            raise
        return conn


# -- helpers ------------------------------------------------------------------------------
