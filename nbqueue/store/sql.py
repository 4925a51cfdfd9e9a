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
- Beside the tasks table: ``<table>_meta`` (the schema version), ``<table>_executors`` and
  ``<table>_hosts``. The last two are created when missing, also in a database made by an
  earlier nbqueue (same schema version); nothing is ever altered or dropped.
- Wake-ups on PostgreSQL: :meth:`SQLAlchemyAdapter.notify` is ``pg_notify`` on the channel
  ``nbqueue_<table>``; each :meth:`SQLAlchemyAdapter.listen` runs a daemon thread with a
  connection of its own (psycopg 3.2+) doing ``LISTEN``, reconnecting with back-off. On
  SQLite there are no wake-ups: notify() does nothing and listeners must poll.
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
from typing import Any, NamedTuple, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.pool import StaticPool

from nbqueue.errors import ConfigurationError, DatabaseError, SchemaMismatchError
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
#: A listener checks this often whether it has been stopped (so stop() returns promptly).
LISTEN_POLL_SECONDS = 0.2
#: A listener connection that has heard nothing for this long is checked with a query.
LISTEN_PING_SECONDS = 30.0
#: Back-off between a listener's reconnection attempts: doubled from the base to the cap.
LISTEN_BACKOFF_BASE_SECONDS = 0.1
LISTEN_BACKOFF_CAP_SECONDS = 5.0
#: How long listen() waits for its first LISTEN before returning anyway (still trying).
LISTEN_READY_SECONDS = 5.0
#: The notification channel is this prefix and the table name.
CHANNEL_PREFIX = "nbqueue_"

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
class _Schema(NamedTuple):
    tasks: sa.Table
    meta: sa.Table
    executors: sa.Table
    hosts: sa.Table


def _tables(name: str) -> _Schema:
    """The tasks table, its ``<name>_meta`` table (key/value; holds the schema version),
    and the ``<name>_executors`` and ``<name>_hosts`` tables for scale-out."""
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
    executors = sa.Table(
        f"{name}_executors",
        metadata,
        sa.Column("type", sa.String(base.MAX_TYPE_LENGTH), primary_key=True),
        sa.Column("digest", sa.String(base.MAX_DIGEST_LENGTH), primary_key=True),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    hosts = sa.Table(
        f"{name}_hosts",
        metadata,
        sa.Column("name", sa.String(base.MAX_NAME_LENGTH), primary_key=True),
        sa.Column("hostname", sa.String(base.MAX_NAME_LENGTH), nullable=False),
        sa.Column("pid", sa.BigInteger, nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("last_seen", UTCDateTime, nullable=False),
        sa.Column("running", sa.BigInteger, nullable=False),
        sa.Column("capacity", sa.BigInteger, nullable=False),
    )
    assert tuple(tasks.c.keys()) == base.COLUMNS
    assert tuple(executors.c.keys()) == base.EXECUTOR_COLUMNS
    assert tuple(hosts.c.keys()) == base.HOST_COLUMNS
    return _Schema(tasks, meta, executors, hosts)


class _Queries:
    """Every statement the adapter runs, by name."""

    def __init__(self, schema: _Schema) -> None:
        tasks, meta = schema.tasks, schema.meta
        self.tasks, self.meta = tasks, meta
        self.executors, self.hosts = schema.executors, schema.hosts
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

    def upsert_executor(self, dialect: str) -> sa.Insert:
        """Insert, or replace the payload and created_at of the same (type, digest)."""
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = insert(self.executors)
        c = self.executors.c
        return stmt.on_conflict_do_update(
            index_elements=[c.type, c.digest],
            set_={"payload": stmt.excluded.payload, "created_at": stmt.excluded.created_at},
        )

    def select_executor(self, task_type: str, digest: str | None) -> sa.Select[Any]:
        """By digest, or the newest of the type."""
        c = self.executors.c
        stmt = sa.select(c.digest, c.payload).where(c.type == task_type)
        if digest is not None:
            return stmt.where(c.digest == digest)
        return stmt.order_by(c.created_at.desc(), c.digest.desc()).limit(1)

    def select_executor_versions(self) -> sa.Select[Any]:
        """Every stored executor's type and digest, oldest first."""
        c = self.executors.c
        return sa.select(c.type, c.digest).order_by(c.created_at, c.digest)

    def upsert_host(self, dialect: str) -> sa.Insert:
        """Insert, or refresh; ``started_at`` is kept unless another process (hostname or
        pid) has taken the name over."""
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = insert(self.hosts)
        c, new = self.hosts.c, stmt.excluded
        same_process = sa.and_(c.hostname == new.hostname, c.pid == new.pid)
        changed: dict[str, Any] = {
            name: new[name] for name in base.HOST_COLUMNS if name not in ("name", "started_at")
        }
        changed["started_at"] = sa.case((same_process, c.started_at), else_=new.started_at)
        return stmt.on_conflict_do_update(index_elements=[c.name], set_=changed)

    def select_hosts(self) -> sa.Select[Any]:
        return sa.select(self.hosts).order_by(self.hosts.c.name)

    def delete_host(self, name: str) -> sa.Delete:
        return sa.delete(self.hosts).where(self.hosts.c.name == name)


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
        self._schema = _tables(table)
        self._tasks, self._meta = self._schema.tasks, self._schema.meta
        self._queries = _Queries(self._schema)
        #: The PostgreSQL notification channel of this table (LISTEN/NOTIFY).
        self.channel = f"{CHANNEL_PREFIX}{table}"
        self._listeners: set[_Listener] = set()
        self._listeners_lock = threading.Lock()
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
                    raise DatabaseError(
                        f"could not {what} in {self._where()} (attempt {attempt}): {_describe(exc)}"
                    ) from exc
                log.warning(
                    "nbqueue: %s in %s failed (attempt %d of %d), retrying in %.2f s: %s",
                    what, self._where(), attempt, self._retry_attempts, pause, _describe(exc),
                )  # fmt: skip
            except sa_exc.SQLAlchemyError as exc:
                raise DatabaseError(f"could not {what} in {self._where()}: {exc}") from exc
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
            raise SchemaMismatchError(
                f"table {name!r} in {self._where()} has nbqueue schema version {version} "
                f"(recorded in {meta_name!r}); this nbqueue uses version "
                f"{base.SCHEMA_VERSION}. Use a matching nbqueue, or another table name. "
                "The table has been left as it is."
            )
        if not inspector.has_table(name):
            self._tasks.metadata.create_all(conn)  # and any missing table beside it
            if version is None:
                conn.execute(self._queries.write_version)
            log.info("nbqueue: created table %s (schema version %d)", name, base.SCHEMA_VERSION)
            return
        if version is None:
            raise SchemaMismatchError(
                f"table {name!r} already exists in {self._where()} but was not made by "
                f"nbqueue (no schema version in {meta_name!r}). Pass another table name, "
                "e.g. SQLAlchemyAdapter(url, table='nbqueue_tasks'), or move that table "
                "away. It has been left as it is."
            )
        self._check_columns(inspector, self._tasks)
        # A database made before these tables existed gets them now (same schema version).
        for table in (self._schema.executors, self._schema.hosts):
            if inspector.has_table(table.name):
                self._check_columns(inspector, table)
            else:
                table.create(conn)
                log.info("nbqueue: created table %s", table.name)

    def _check_columns(self, inspector: sa.Inspector, table: sa.Table) -> None:
        """Raise SchemaMismatchError when the stored ``table`` lacks one of our columns or
        has one we could not insert rows without."""
        columns = {column["name"]: column for column in inspector.get_columns(table.name)}
        ours = table.c.keys()
        missing = [c for c in ours if c not in columns]
        blocking = sorted(
            c
            for c, column in columns.items()
            if c not in ours and not column["nullable"] and column.get("default") is None
        )
        if missing or blocking:
            problems = []
            if missing:
                problems.append(f"missing column(s) {missing}")
            if blocking:
                problems.append(f"extra NOT NULL column(s) without a default {blocking}")
            raise SchemaMismatchError(
                f"table {table.name!r} in {self._where()} does not match nbqueue schema "
                f"version {base.SCHEMA_VERSION}: {'; '.join(problems)}. It has been left as "
                "it is."
            )

    def _close(self) -> None:
        with self._listeners_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener.stop()
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
            "load hosts", lambda conn: _rows(conn.execute(self._queries.select_hosts())),
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
        return self._dialect == "postgresql" and _psycopg_can_listen(self._engine)

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
            return _nothing
        listener = _Listener(self._listen_connection, self.channel, callback, self._where())
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


# -- LISTEN -------------------------------------------------------------------------------
class _Listener:
    """A daemon thread that LISTENs on ``channel`` over its own connection and calls
    ``callback`` for each notification. A dropped connection is re-made with back-off, then
    ``callback`` is called once (notifications sent meanwhile are lost)."""

    def __init__(
        self, connect: Callable[[], Any], channel: str, callback: Callable[[], None], where: str
    ) -> None:
        self._connect, self._channel, self._callback = connect, channel, callback
        self._where = where
        self._stopping = threading.Event()
        #: Set once the first LISTEN has succeeded.
        self.ready = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"nbqueue-listen-{channel}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop listening; returns within about LISTEN_POLL_SECONDS (idempotent)."""
        self._stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=LISTEN_POLL_SECONDS + 5.0)

    def _loop(self) -> None:
        from psycopg import sql

        statement = sql.SQL("LISTEN {}").format(sql.Identifier(self._channel))
        backoff = LISTEN_BACKOFF_BASE_SECONDS
        missed = False  # a wake-up may have been missed (a connection failed)
        while not self._stopping.is_set():
            conn: Any = None
            try:
                conn = self._connect()
                conn.execute(statement)
                self.ready.set()
                if missed:
                    log.info("nbqueue: listening on %s again", self._where)
                    base.call_listener(self._callback)
                backoff, missed = LISTEN_BACKOFF_BASE_SECONDS, False
                self._receive(conn)
            except Exception as exc:  # never let the thread die: polling would be all left
                if self._stopping.is_set():
                    break
                missed = True
                pause = backoff * random.uniform(0.5, 1.0)
                log.warning(
                    "nbqueue: listening for wake-ups on %s failed, reconnecting in %.2f s: %s",
                    self._where, pause, _describe_any(exc),
                )  # fmt: skip
                self._stopping.wait(pause)
                backoff = min(backoff * 2, LISTEN_BACKOFF_CAP_SECONDS)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()

    def _receive(self, conn: Any) -> None:
        quiet_since = time.monotonic()
        while not self._stopping.is_set():
            for _ in conn.notifies(timeout=LISTEN_POLL_SECONDS):
                quiet_since = time.monotonic()
                base.call_listener(self._callback)
                if self._stopping.is_set():
                    return
            if time.monotonic() - quiet_since >= LISTEN_PING_SECONDS:
                conn.execute("SELECT 1")  # a dead connection fails here and is re-made
                quiet_since = time.monotonic()


def _nothing() -> None:
    """The stop function of a listener that was never started."""


def _psycopg_can_listen(engine: Engine) -> bool:
    """psycopg 3.2+ (``Connection.notifies(timeout=...)``, so a listener can stop)."""
    if engine.dialect.driver != "psycopg":
        return False
    try:
        import psycopg
    except ImportError:
        return False
    major, minor = (int(part) for part in psycopg.__version__.split(".")[:2])
    return (major, minor) >= (3, 2)


def _describe_any(exc: BaseException) -> str:
    if isinstance(exc, sa_exc.DBAPIError):
        return _describe(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


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
