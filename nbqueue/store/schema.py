"""The tables, in SQLAlchemy Core: the tasks table, ``<table>_meta`` (the schema version),
``<table>_executors`` and ``<table>_hosts``; and the column types that make SQLite and
PostgreSQL give back the same Python values.

- JSON columns are ``json`` on PostgreSQL and TEXT on SQLite, and come back as their text:
  ``nbqueue.rows`` parses them, so a corrupt row fails its own task, not the whole load.
- Datetimes are timezone-aware UTC in and out; on SQLite they are fixed-width text, so
  comparisons in SQL are chronological.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from nbqueue import checks
from nbqueue.store import columns


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


def sqlite_text(value: dt.datetime) -> str:
    """How SQLite keeps an aware UTC datetime: fixed-width text (chronological order)."""
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


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
        value = checks.utc(value)
        if dialect.name == "sqlite":
            return sqlite_text(value)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if isinstance(value, str):
            try:
                value = dt.datetime.fromisoformat(value)
            except ValueError:
                return value
        return checks.utc(value) if isinstance(value, dt.datetime) else value


#: The name of the index on ``key`` (added by the migration from schema version 1).
KEY_INDEX = "ix_{table}_key"
#: The name of the index claims read: the claimable rows, best first. Partial, so that a
#: claim reads the few best rows instead of sorting every pending one.
CLAIM_INDEX = "ix_{table}_claim"


# -- the schema ---------------------------------------------------------------------------
class Schema(NamedTuple):
    tasks: sa.Table
    meta: sa.Table
    executors: sa.Table
    hosts: sa.Table


def tables(name: str) -> Schema:
    """The tasks table, its ``<name>_meta`` table (key/value; holds the schema version),
    and the ``<name>_executors`` and ``<name>_hosts`` tables for scale-out."""
    metadata = sa.MetaData()
    tasks = sa.Table(
        name,
        metadata,
        sa.Column("uid", sa.String(columns.MAX_UID_LENGTH), primary_key=True),
        sa.Column("type", sa.String(columns.MAX_TYPE_LENGTH), nullable=False),
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
        sa.Column("worker", sa.String(columns.MAX_WORKER_LENGTH)),
        sa.Column("lease_owner", sa.String(columns.MAX_WORKER_LENGTH)),
        sa.Column("lease_expires_at", UTCDateTime),
        sa.Column("data_blob", sa.LargeBinary),
        sa.Column("result_blob", sa.LargeBinary),
        sa.Column("key", sa.Text),
        sa.Column("output", sa.Text),
        sa.Index(f"ix_{name}_lease", "status", "lease_expires_at"),
        sa.Index(f"ix_{name}_updated", "updated_at"),
        # Keys are only looked up by equality; a hash index on PostgreSQL holds keys of any
        # length (a B-tree entry must fit in a third of a page: ~2700 bytes).
        sa.Index(KEY_INDEX.format(table=name), "key", postgresql_using="hash"),
    )
    claimable = tasks.c.status.in_(columns.CLAIMABLE)
    sa.Index(
        CLAIM_INDEX.format(table=name), tasks.c.priority.desc(), tasks.c.created_at,
        sqlite_where=claimable, postgresql_where=claimable,
    )  # fmt: skip
    meta = sa.Table(
        f"{name}_meta",
        metadata,
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    executors = sa.Table(
        f"{name}_executors",
        metadata,
        sa.Column("type", sa.String(columns.MAX_TYPE_LENGTH), primary_key=True),
        sa.Column("digest", sa.String(columns.MAX_DIGEST_LENGTH), primary_key=True),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    hosts = sa.Table(
        f"{name}_hosts",
        metadata,
        sa.Column("name", sa.String(columns.MAX_NAME_LENGTH), primary_key=True),
        sa.Column("hostname", sa.String(columns.MAX_NAME_LENGTH), nullable=False),
        sa.Column("pid", sa.BigInteger, nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("last_seen", UTCDateTime, nullable=False),
        sa.Column("running", sa.BigInteger, nullable=False),
        sa.Column("capacity", sa.BigInteger, nullable=False),
    )
    assert tuple(tasks.c.keys()) == columns.COLUMNS
    assert tuple(executors.c.keys()) == columns.EXECUTOR_COLUMNS
    assert tuple(hosts.c.keys()) == columns.HOST_COLUMNS
    return Schema(tasks, meta, executors, hosts)
