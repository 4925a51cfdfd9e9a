"""Engines and driver details: making an engine from a URL, SQLite's transaction control and
pragmas, describing driver errors, and whether psycopg can LISTEN."""

from __future__ import annotations

import os
import re

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import StaticPool

from nbqueue.errors import ConfigurationError

#: How long an SQLite connection waits for another's write lock before giving up.
DEFAULT_BUSY_TIMEOUT_SECONDS = 5.0
#: The backends nbqueue stores tasks in.
SUPPORTED = ("sqlite", "postgresql")
#: PostgreSQL error classes (the SQLSTATE's first two characters) worth another attempt:
#: connection exception, transaction rollback (deadlock, serialisation failure),
#: insufficient resources, object not in prerequisite state (lock not available),
#: operator intervention (server shutting down), system error.
TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "55", "57", "58"})
#: SQLite's primary result codes for a damaged file: SQLITE_CORRUPT, SQLITE_NOTADB.
_SQLITE_DAMAGED = frozenset({11, 26})
_SQLITE_DAMAGED_TEXTS = ("database disk image is malformed", "file is not a database")
# Execution options read by the SQLite "begin" listener.
BEGIN_OPTION = "nbqueue_sqlite_begin"
BUSY_OPTION = "nbqueue_sqlite_busy_ms"


def sqlite_begin(conn: Connection) -> None:
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
    busy = int(options.get(BUSY_OPTION, DEFAULT_BUSY_TIMEOUT_SECONDS * 1000))
    if proxied.info.get(BUSY_OPTION) != busy:
        # Through the Connection, not a raw cursor, so that a "database is locked" here is
        # wrapped like any other driver error (and retried by _run).
        conn.exec_driver_sql(f"PRAGMA busy_timeout = {busy}")
        if BUSY_OPTION not in proxied.info:  # first use of this connection
            mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
            if str(mode).lower() not in ("wal", "memory"):
                conn.exec_driver_sql("PRAGMA journal_mode = WAL")
            conn.exec_driver_sql("PRAGMA synchronous = FULL")
        proxied.info[BUSY_OPTION] = busy
    immediate = options.get(BEGIN_OPTION) == "IMMEDIATE"
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def create_engine(url: str | sa.URL) -> Engine:
    try:
        parsed = sa.make_url(url)
    except (sa_exc.ArgumentError, ValueError):  # (ValueError: a port that is not a number)
        shown = re.sub(r"(://[^:/@]*:)[^/]*@", r"\1***@", str(url))  # never the password
        raise ConfigurationError(
            f"{shown!r} is not a database URL; use e.g. 'sqlite:///nbqueue.db' or "
            "'postgresql+psycopg://user@host/dbname'"
        ) from None
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() not in SUPPORTED:
        raise ConfigurationError(f"nbqueue stores tasks in SQLite or PostgreSQL, not {shown!r}")
    try:
        if parsed.get_backend_name() == "sqlite" and sqlite_in_memory(parsed):
            return sa.create_engine(
                parsed, poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
        return sa.create_engine(parsed, pool_pre_ping=True)
    except (ImportError, sa_exc.ArgumentError) as exc:
        hint = " (pip install 'nbqueue[postgres]')" if "postgres" in shown else ""
        raise ConfigurationError(f"cannot use database {shown!r}: {exc}{hint}") from exc


def sqlite_in_memory(url: sa.URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or url.query.get("mode") == "memory"


class SQLiteFile:
    """The file of an SQLite database, and its identity (st_dev, st_ino) while open."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._identity: tuple[int, int] | None = None

    @classmethod
    def of(cls, url: sa.URL) -> SQLiteFile | None:
        """The file of a file-backed SQLite URL (a relative path is taken from the current
        directory); None for a URI filename (``?uri=true``), which is not a path."""
        database = url.database or ""
        if url.query.get("uri") in ("true", "1") or database.startswith("file:"):
            return None
        return cls(os.path.abspath(database))

    def remember(self) -> None:
        """Note the identity of the file now at the path (just opened)."""
        found = os.stat(self.path)
        self._identity = (found.st_dev, found.st_ino)

    def forget(self) -> None:
        self._identity = None

    def change(self) -> str | None:
        """How the file at the path differs from the one remembered ("deleted",
        "replaced", ...); None when it is the same, or nothing is remembered."""
        if self._identity is None:
            return None
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            return "deleted"
        except OSError as exc:
            return f"made unreachable ({exc})"
        return None if (found.st_dev, found.st_ino) == self._identity else "replaced"


def transient(exc: sa_exc.DBAPIError, dialect: str) -> bool:
    """Worth another attempt: a lost connection; on SQLite a locked or busy file; on
    PostgreSQL an operational error of a transient kind (connection failures, deadlocks,
    serialisation failures, a server shutting down or starting up, no resources) -- not
    one that refuses the statement (a program limit exceeded)."""
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, sa_exc.OperationalError):
        return False
    if dialect == "sqlite":
        message = str(exc.orig).lower()
        return "locked" in message or "busy" in message
    state = getattr(exc.orig, "sqlstate", None)  # None: the connection itself failed
    return state is None or state[:2] in TRANSIENT_SQLSTATE_CLASSES


def sqlite_damaged(exc: sa_exc.DBAPIError) -> bool:
    """The SQLite file is corrupt or not a database at all."""
    code = getattr(exc.orig, "sqlite_errorcode", None)  # Python 3.11+
    if isinstance(code, int):
        return code & 0xFF in _SQLITE_DAMAGED
    message = str(exc.orig).lower()  # Python 3.10: SQLite's own texts for those two codes
    return any(text in message for text in _SQLITE_DAMAGED_TEXTS)


def describe(exc: sa_exc.DBAPIError) -> str:
    cause = exc.orig if exc.orig is not None else exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}"


def psycopg_can_listen(engine: Engine) -> bool:
    """psycopg 3.2+ (``Connection.notifies(timeout=...)``, so a listener can stop)."""
    if engine.dialect.driver != "psycopg":
        return False
    try:
        import psycopg
    except ImportError:
        return False
    major, minor = (int(part) for part in psycopg.__version__.split(".")[:2])
    return (major, minor) >= (3, 2)


def describe_any(exc: BaseException) -> str:
    if isinstance(exc, sa_exc.DBAPIError):
        return describe(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
