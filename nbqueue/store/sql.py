"""SQLAlchemyAdapter: the tasks table on SQLite or PostgreSQL, with SQLAlchemy 2 Core.

- Claims are conditional updates that only take claimable, ready rows. On PostgreSQL the
  rows are picked with ``FOR UPDATE SKIP LOCKED`` (claimers never wait on each other); on
  SQLite every write runs in one ``BEGIN IMMEDIATE`` transaction, which takes the write lock
  up front, in WAL mode with a busy timeout and ``synchronous=FULL``.
- Every operation is one transaction run by :meth:`SQLAlchemyAdapter._run`, the one place
  driver errors are handled: a dropped connection, a locked SQLite file or a deadlock is
  retried with exponential back-off; what still fails becomes a :class:`DatabaseError`.
- JSON columns are ``json`` on PostgreSQL and TEXT on SQLite, and come back as their text:
  ``nbqueue.rows`` parses them, so a corrupt row fails its own task, not the whole load.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import random
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.pool import StaticPool

from nbqueue.errors import ConfigurationError
from nbqueue.store import base
from nbqueue.store.base import Row

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
#: How long an SQLite connection waits for another's write lock before giving up.
DEFAULT_BUSY_TIMEOUT_SECONDS = 5.0
#: Uids per ``IN (...)`` list, well below SQLite's limit on bound parameters.
CHUNK = 500

_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,47}\Z")
_VERSION_KEY = "schema_version"
# Execution options read by the SQLite "begin" listener.
_BEGIN_OPTION = "nbqueue_sqlite_begin"
_BUSY_OPTION = "nbqueue_sqlite_busy_ms"
_SUPPORTED = ("sqlite", "postgresql")


# -- column types -------------------------------------------------------------------------
class _PostgresJSON(sa.types.UserDefinedType[str]):
    """PostgreSQL ``json``, bound and fetched as text."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "JSON"


class JSONText(sa.types.TypeDecorator[str]):
    """A JSON document: ``json`` on PostgreSQL (readable with ``->>``), TEXT on SQLite; its
    text in Python. The cast on the way out stops drivers from parsing it, so a malformed
    document reaches ``nbqueue.rows`` (and fails one row) instead of failing the query."""

    impl = sa.Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return _PostgresJSON()
        return dialect.type_descriptor(sa.Text())

    def column_expression(self, column: Any) -> Any:
        return sa.cast(column, sa.Text)


class _SQLiteDateTime(sa.types.UserDefinedType[str]):
    """A DATETIME column whose values pass through as text (UTCDateTime parses them)."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "DATETIME"


class UTCDateTime(sa.types.TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes in and out. On SQLite they are stored as fixed-width
    ``YYYY-MM-DD HH:MM:SS.ffffff`` text (so comparisons in SQL are chronological) and parsed
    here: an unparsable value comes back as the raw text for ``nbqueue.rows`` to report,
    instead of breaking the query."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return _SQLiteDateTime()
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if not isinstance(value, dt.datetime):
            return value
        value = _utc(value)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None).isoformat(" ", "microseconds")
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if isinstance(value, str):
            try:
                value = dt.datetime.fromisoformat(value)
            except ValueError:
                return value
        return _utc(value) if isinstance(value, dt.datetime) else value


def _utc(value: dt.datetime) -> dt.datetime:
    """Naive datetimes in the database are UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


# -- the schema ---------------------------------------------------------------------------
def _tables(name: str) -> tuple[sa.Table, sa.Table]:
    """The tasks table and its ``<name>_meta`` table (key/value; holds the schema version)."""
    metadata = sa.MetaData()
    tasks = sa.Table(
        name,
        metadata,
        sa.Column("uid", sa.String(64), primary_key=True),
        sa.Column("type", sa.String(255), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("data", JSONText),
        sa.Column("error", sa.Text),  # the latest error as "Type: message"
        sa.Column("started_at", UTCDateTime),
        sa.Column("finished_at", UTCDateTime),
        sa.Column("priority", sa.BigInteger, nullable=False),
        sa.Column("progress", sa.Double, nullable=False),
        sa.Column("retry_count", sa.BigInteger, nullable=False),
        sa.Column("max_retries", sa.BigInteger, nullable=False),
        sa.Column("delay", sa.Double, nullable=False),
        sa.Column("timeout", sa.Double, nullable=False),
        sa.Column("run_at", UTCDateTime),
        sa.Column("ready_at", sa.Double, nullable=False),  # epoch seconds
        sa.Column("user_id", JSONText),
        sa.Column("metadata", JSONText),
        sa.Column("result", JSONText),
        sa.Column("errors", JSONText),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("worker", sa.String(255)),
        sa.Column("lease_owner", sa.String(255)),
        sa.Column("lease_expires_at", UTCDateTime),
        sa.Column("data_blob", sa.LargeBinary),
        sa.Column("result_blob", sa.LargeBinary),
        sa.Index(f"ix_{name}_ready", "status", "ready_at"),
        sa.Index(f"ix_{name}_lease", "status", "lease_expires_at"),
        sa.Index(f"ix_{name}_updated", "updated_at"),
    )
    meta = sa.Table(
        f"{name}_meta",
        metadata,
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    assert tuple(tasks.c.keys()) == base.COLUMNS
    return tasks, meta


class _Queries:
    """Every statement the adapter runs, by name."""

    def __init__(self, tasks: sa.Table, meta: sa.Table) -> None:
        self.tasks, self.meta = tasks, meta
        c = tasks.c
        self.select_all = sa.select(tasks)
        self.read_version = sa.select(meta.c.value).where(meta.c.key == _VERSION_KEY)
        self.write_version = sa.insert(meta).values(
            key=_VERSION_KEY, value=str(base.SCHEMA_VERSION)
        )
        self.update_some = sa.update(tasks).where(c.uid == sa.bindparam("b_uid"))
        self._ready = sa.and_(c.status.in_(base.CLAIMABLE), c.ready_at <= sa.bindparam("now"))

    def advisory_lock(self) -> sa.Select[Any]:
        """PostgreSQL: serialise open() between controllers starting at the same time."""
        key = zlib.crc32(f"nbqueue:{self.tasks.name}".encode())
        return sa.select(sa.func.pg_advisory_xact_lock(sa.literal(key, sa.BigInteger)))

    def upsert(self, dialect: str, columns: Sequence[str]) -> sa.Insert:
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = insert(self.tasks)
        changed = {name: stmt.excluded[name] for name in columns if name != "uid"}
        return stmt.on_conflict_do_update(index_elements=[self.tasks.c.uid], set_=changed)

    def select_uids(self, uids: list[str]) -> sa.Select[Any]:
        return sa.select(self.tasks).where(self.tasks.c.uid.in_(uids))

    def select_changed(self, since: dt.datetime) -> sa.Select[Any]:
        return sa.select(self.tasks).where(self.tasks.c.updated_at > since)

    def delete(self, uids: list[str]) -> sa.Delete:
        return sa.delete(self.tasks).where(self.tasks.c.uid.in_(uids))

    def claimable(self, uids: list[str]) -> sa.ColumnElement[bool]:
        """These uids, when ready and not held by another claimer (SKIP LOCKED)."""
        c = self.tasks.c
        rows = sa.select(c.uid).where(c.uid.in_(uids), self._ready)
        return c.uid.in_(rows.with_for_update(skip_locked=True))

    def next_claimable(self, limit: int, types: list[str] | None) -> sa.ColumnElement[bool]:
        """The ``limit`` best ready rows not held by another claimer."""
        c = self.tasks.c
        rows = sa.select(c.uid).where(self._ready)
        if types is not None:
            rows = rows.where(c.type.in_(types))
        rows = rows.order_by(c.priority.desc(), c.created_at.asc()).limit(limit)
        return c.uid.in_(rows.with_for_update(skip_locked=True))

    def held(self, owner: str, uids: list[str]) -> sa.ColumnElement[bool]:
        c = self.tasks.c
        return sa.and_(c.uid.in_(uids), c.status == base.RUNNING, c.lease_owner == owner)

    def expired(self, now: dt.datetime) -> sa.ColumnElement[bool]:
        c = self.tasks.c
        return sa.and_(c.status == base.RUNNING, c.lease_expires_at < now)


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
        table: str = base.DEFAULT_TABLE,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT_SECONDS,
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
        _check_number("busy_timeout", busy_timeout, minimum=0.0)
        _check_number("retry_max_seconds", retry_max_seconds, minimum=0.0)
        if isinstance(retry_attempts, bool) or not isinstance(retry_attempts, int):
            raise ConfigurationError(f"retry_attempts must be an int >= 1, got {retry_attempts!r}")
        if retry_attempts < 1:
            raise ConfigurationError(f"retry_attempts must be an int >= 1, got {retry_attempts!r}")
        if isinstance(engine_or_url, Engine):
            self._engine, self._owns_engine = engine_or_url, False
        elif isinstance(engine_or_url, (str, sa.URL)):
            self._engine, self._owns_engine = _create_engine(engine_or_url), True
        else:
            raise ConfigurationError(
                "SQLAlchemyAdapter takes an SQLAlchemy Engine or a database URL such as "
                f"'sqlite:///nbqueue.db', got {type(engine_or_url).__name__}"
            )
        self._dialect = self._engine.dialect.name
        if self._dialect not in _SUPPORTED:
            raise ConfigurationError(
                f"nbqueue stores tasks in SQLite or PostgreSQL, not {self._dialect!r} "
                f"({self._engine.url.render_as_string(hide_password=True)})"
            )
        self._memory = self._dialect == "sqlite" and _sqlite_in_memory(self._engine.url)
        # One in-memory SQLite connection is shared by every thread: take turns.
        self._serial: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if self._memory else contextlib.nullcontext()
        )
        self._options = {
            _BEGIN_OPTION: "DEFERRED",
            _BUSY_OPTION: int(busy_timeout * 1000),
        }
        self._retry_attempts = retry_attempts
        self._retry_max_seconds = float(retry_max_seconds)
        self.table = table
        self._tasks, self._meta = _tables(table)
        self._queries = _Queries(self._tasks, self._meta)
        if self._dialect == "sqlite" and not event.contains(self._engine, "begin", _sqlite_begin):
            event.listen(self._engine, "begin", _sqlite_begin)

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
        if self._dialect == "sqlite" and url.database:
            url = url.set(database=os.path.abspath(url.database))
        return url.render_as_string(hide_password=False)

    # -- the one place database errors are handled ----------------------------------------
    def _run(self, what: str, work: Callable[[Connection], T], *, write: bool = True) -> T:
        """Run ``work`` in one transaction (``BEGIN IMMEDIATE`` on SQLite when ``write``).
        Transient failures -- a dropped connection, a locked SQLite file, a deadlock -- are
        retried with exponential back-off; anything else, or a failure that outlasts the
        retries, is raised as DatabaseError with the driver's error as its cause."""
        options = dict(self._options)
        if write:
            options[_BEGIN_OPTION] = "IMMEDIATE"
        deadline = time.monotonic() + self._retry_max_seconds
        backoff = RETRY_BASE_SECONDS
        attempt = 1
        while True:
            try:
                with self._serial, self._engine.connect() as conn:
                    conn.execution_options(**options)
                    with conn.begin():
                        return work(conn)
            except sa_exc.DBAPIError as exc:
                pause = backoff * random.uniform(0.5, 1.0)
                if (
                    not self._transient(exc)
                    or attempt >= self._retry_attempts
                    or time.monotonic() + pause > deadline
                ):
                    raise base.DatabaseError(
                        f"could not {what} in {self._where()} (attempt {attempt}): {_describe(exc)}"
                    ) from exc
                log.warning(
                    "nbqueue: %s in %s failed (attempt %d of %d), retrying in %.2f s: %s",
                    what, self._where(), attempt, self._retry_attempts, pause, _describe(exc),
                )  # fmt: skip
            except sa_exc.SQLAlchemyError as exc:
                raise base.DatabaseError(f"could not {what} in {self._where()}: {exc}") from exc
            time.sleep(pause)
            backoff = min(backoff * 2, RETRY_CAP_SECONDS)
            attempt += 1

    def _transient(self, exc: sa_exc.DBAPIError) -> bool:
        """Worth another attempt: a lost connection; on SQLite a locked or busy file; on
        PostgreSQL any operational error (connection failures, deadlocks, serialisation
        failures, a server shutting down or starting up)."""
        if exc.connection_invalidated:
            return True
        if not isinstance(exc, sa_exc.OperationalError):
            return False
        if self._dialect == "sqlite":
            message = str(exc.orig).lower()
            return "locked" in message or "busy" in message
        return True

    def _where(self) -> str:
        url = self._engine.url.render_as_string(hide_password=True)
        return f"{url} table {self.table!r}"

    # -- primitives ------------------------------------------------------------------------
    def _open(self) -> None:
        self._run("open the tasks table", self._create_or_check)

    def _create_or_check(self, conn: Connection) -> None:
        if self._dialect == "postgresql":
            conn.execute(self._queries.advisory_lock())
        inspector = sa.inspect(conn)
        name, meta_name = self._tasks.name, self._meta.name
        version = None
        if inspector.has_table(meta_name):
            raw = conn.execute(self._queries.read_version).scalar()
            version = raw if raw is None else str(raw)
        if version is not None and version != str(base.SCHEMA_VERSION):
            raise base.SchemaMismatchError(
                f"table {name!r} in {self._where()} has nbqueue schema version {version} "
                f"(recorded in {meta_name!r}); this nbqueue uses version "
                f"{base.SCHEMA_VERSION}. Use a matching nbqueue, or another table name. "
                "The table has been left as it is."
            )
        if not inspector.has_table(name):
            self._tasks.metadata.create_all(conn)
            if version is None:
                conn.execute(self._queries.write_version)
            log.info("nbqueue: created table %s (schema version %d)", name, base.SCHEMA_VERSION)
            return
        if version is None:
            raise base.SchemaMismatchError(
                f"table {name!r} already exists in {self._where()} but was not made by "
                f"nbqueue (no schema version in {meta_name!r}). Pass another table name, "
                "e.g. SQLAlchemyAdapter(url, table='nbqueue_tasks'), or move that table "
                "away. It has been left as it is."
            )
        columns = {column["name"]: column for column in inspector.get_columns(name)}
        missing = [c for c in base.COLUMNS if c not in columns]
        blocking = sorted(
            c
            for c, column in columns.items()
            if c not in base.COLUMNS and not column["nullable"] and column.get("default") is None
        )
        if missing or blocking:
            problems = []
            if missing:
                problems.append(f"missing column(s) {missing}")
            if blocking:
                problems.append(f"extra NOT NULL column(s) without a default {blocking}")
            raise base.SchemaMismatchError(
                f"table {name!r} in {self._where()} does not match nbqueue schema version "
                f"{base.SCHEMA_VERSION}: {'; '.join(problems)}. It has been left as it is."
            )

    def _close(self) -> None:
        if self._owns_engine:
            self._engine.dispose()

    def _save(self, complete: list[Row], partial: list[Row]) -> None:
        def work(conn: Connection) -> None:
            for columns, rows in _by_columns(complete):
                conn.execute(self._queries.upsert(self._dialect, columns), rows)
            for _, rows in _by_columns(partial):
                params = [{"b_uid": r["uid"], **{k: v for k, v in r.items() if k != "uid"}}
                          for r in rows]  # fmt: skip
                conn.execute(self._queries.update_some, params)

        self._run(f"save {len(complete) + len(partial)} row(s)", work)

    def _delete(self, uids: list[str]) -> int:
        def work(conn: Connection) -> int:
            return sum(
                conn.execute(self._queries.delete(chunk)).rowcount for chunk in _chunks(uids)
            )

        return self._run(f"delete {len(uids)} row(s)", work)

    def _load(self, uids: list[str] | None) -> list[Row]:
        def work(conn: Connection) -> list[Row]:
            if uids is None:
                return _rows(conn.execute(self._queries.select_all))
            found: list[Row] = []
            for chunk in _chunks(uids):
                found.extend(_rows(conn.execute(self._queries.select_uids(chunk))))
            return found

        return self._run("load rows", work, write=False)

    def _load_changed(self, since: dt.datetime) -> list[Row]:
        return self._run(
            "load changed rows",
            lambda conn: _rows(conn.execute(self._queries.select_changed(since))),
            write=False,
        )

    def _claim(self, uids: list[str], owner: str, now: float, expires: dt.datetime) -> list[str]:
        values = self._claimed_values(owner, now, expires)

        def work(conn: Connection) -> list[str]:
            won: list[str] = []
            for chunk in _chunks(uids):
                where = self._queries.claimable(chunk)
                rows = self._update_returning(conn, where, values, now, [self._tasks.c.uid])
                won.extend(row["uid"] for row in rows)
            return won

        return self._run(f"claim {len(uids)} task(s)", work)

    def _claim_next(
        self, owner: str, limit: int, now: float, expires: dt.datetime, types: list[str] | None
    ) -> list[Row]:
        values = self._claimed_values(owner, now, expires)
        where = self._queries.next_claimable(limit, types)
        return self._run(
            "claim the next tasks",
            lambda conn: self._update_returning(conn, where, values, now, list(self._tasks.c)),
        )

    def _heartbeat(self, owner: str, uids: list[str], expires: dt.datetime) -> list[str]:
        def work(conn: Connection) -> list[str]:
            held: list[str] = []
            for chunk in _chunks(uids):
                where = self._queries.held(owner, chunk)
                values = {"lease_expires_at": expires}
                rows = self._update_returning(conn, where, values, None, [self._tasks.c.uid])
                held.extend(row["uid"] for row in rows)
            return held

        return self._run("extend leases", work)

    def _requeue_expired(self, now: dt.datetime) -> list[str]:
        values = self._requeued_values(now)
        where = self._queries.expired(now)
        return self._run(
            "requeue tasks with expired leases",
            lambda conn: [
                row["uid"]
                for row in self._update_returning(conn, where, values, None, [self._tasks.c.uid])
            ],
        )

    def _update_returning(
        self,
        conn: Connection,
        where: sa.ColumnElement[bool],
        values: Row,
        now: float | None,
        columns: list[sa.ColumnElement[Any]],
    ) -> list[Row]:
        """UPDATE ... WHERE ... RETURNING ``columns`` (which include uid). SQLite before 3.35
        has no RETURNING: select the
        rows, then update them by uid -- as atomic, since the transaction already holds
        SQLite's write lock (BEGIN IMMEDIATE)."""
        params = {} if now is None else {"now": now}
        tasks = self._tasks
        if conn.dialect.update_returning:
            stmt = sa.update(tasks).where(where).values(values).returning(*columns)
            return _rows(conn.execute(stmt, params))
        rows = _rows(conn.execute(sa.select(*columns).where(where), params))
        for chunk in _chunks([row["uid"] for row in rows]):
            conn.execute(sa.update(tasks).where(tasks.c.uid.in_(chunk)).values(values))
        return [row | {k: v for k, v in values.items() if k in row} for row in rows]


# -- helpers ------------------------------------------------------------------------------
def _sqlite_begin(conn: Connection) -> None:
    """Take transaction control away from the sqlite3 module, following SQLAlchemy's
    documented recipe for pysqlite ("connect": ``isolation_level = None``; "begin": emit
    BEGIN ourselves), so that a write transaction can be ``BEGIN IMMEDIATE``. Done here,
    once per DBAPI connection, so it also covers connections pooled before the adapter was
    made; the pragmas (WAL, synchronous=FULL, busy_timeout) are set at the same time."""
    options = conn.get_execution_options()
    proxied = conn.connection
    dbapi = proxied.dbapi_connection
    assert dbapi is not None
    if dbapi.isolation_level is not None:  # type: ignore[attr-defined]
        dbapi.isolation_level = None  # type: ignore[attr-defined]
    busy = int(options.get(_BUSY_OPTION, DEFAULT_BUSY_TIMEOUT_SECONDS * 1000))
    if proxied.info.get(_BUSY_OPTION) != busy:
        # Through the Connection, not a raw cursor, so that a "database is locked" here is
        # wrapped like any other driver error (and retried by _run).
        conn.exec_driver_sql(f"PRAGMA busy_timeout = {busy}")
        if _BUSY_OPTION not in proxied.info:  # first use of this connection
            mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
            if str(mode).lower() not in ("wal", "memory"):
                conn.exec_driver_sql("PRAGMA journal_mode = WAL")
            conn.exec_driver_sql("PRAGMA synchronous = FULL")
        proxied.info[_BUSY_OPTION] = busy
    immediate = options.get(_BEGIN_OPTION) == "IMMEDIATE"
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _create_engine(url: str | sa.URL) -> Engine:
    try:
        parsed = sa.make_url(url)
    except sa_exc.ArgumentError:
        raise ConfigurationError(
            f"{url!r} is not a database URL; use e.g. 'sqlite:///nbqueue.db' or "
            "'postgresql+psycopg://user@host/dbname'"
        ) from None
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() not in _SUPPORTED:
        raise ConfigurationError(f"nbqueue stores tasks in SQLite or PostgreSQL, not {shown!r}")
    try:
        if parsed.get_backend_name() == "sqlite" and _sqlite_in_memory(parsed):
            return sa.create_engine(
                parsed, poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
        return sa.create_engine(parsed, pool_pre_ping=True)
    except (ImportError, sa_exc.ArgumentError) as exc:
        hint = " (pip install 'nbqueue[postgres]')" if "postgres" in shown else ""
        raise ConfigurationError(f"cannot use database {shown!r}: {exc}{hint}") from exc


def _sqlite_in_memory(url: sa.URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or url.query.get("mode") == "memory"


def _describe(exc: sa_exc.DBAPIError) -> str:
    cause = exc.orig if exc.orig is not None else exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}"


def _rows(result: sa.CursorResult[Any]) -> list[Row]:
    return [dict(mapping) for mapping in result.mappings()]


def _chunks(uids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(uids), CHUNK):
        yield uids[start : start + CHUNK]


def _by_columns(rows: list[Row]) -> Iterator[tuple[tuple[str, ...], list[Row]]]:
    """Rows grouped by the columns they set, so each group is one executemany; in uid order,
    so that concurrent batches lock rows in the same order (no deadlocks between them)."""
    groups: dict[tuple[str, ...], list[Row]] = {}
    for row in sorted(rows, key=lambda r: r["uid"]):
        groups.setdefault(tuple(sorted(row)), []).append(row)
    yield from groups.items()


def _check_number(name: str, value: float, *, minimum: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= minimum:
        raise ConfigurationError(f"{name} must be a number >= {minimum:g}, got {value!r}")
