"""Opening a database: create the tables when they are missing, check existing ones, and
bring a table of an earlier schema version up to date.

Nothing is ever altered or dropped that this nbqueue did not make: a table it does not
recognise raises SchemaMismatchError and is left as it is. The executors and hosts tables,
and indexes of the tasks table, are created when missing, also in a database made by an
earlier nbqueue.

Migrations (in the opening transaction, under the same PostgreSQL advisory lock):

- 1 -> 2: the nullable columns ``key`` and ``output`` (and, as for any table made before
  an index was added, the missing indexes: here the one on ``key``).
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from nbqueue.errors import SchemaMismatchError
from nbqueue.store import columns
from nbqueue.store.queries import Queries

log = logging.getLogger("nbqueue.store")


def create_or_check(conn: Connection, queries: Queries, where: str) -> None:
    """In the caller's transaction: create what is missing, check what is there. ``where``
    names the database and table in messages."""
    if conn.dialect.name == "postgresql":
        conn.execute(queries.advisory_lock())
    inspector = sa.inspect(conn)
    tasks, meta = queries.tasks, queries.meta
    name, meta_name = tasks.name, meta.name
    version = None
    if inspector.has_table(meta_name):
        raw = conn.execute(queries.read_version).scalar()
        version = raw if raw is None else str(raw)
    if version == "1":
        _migrate_from_1(conn, inspector, queries, where)
        inspector = sa.inspect(conn)  # it caches what it has read
        version = str(columns.SCHEMA_VERSION)
    if version is not None and version != str(columns.SCHEMA_VERSION):
        raise SchemaMismatchError(
            f"table {name!r} in {where} has nbqueue schema version {version} "
            f"(recorded in {meta_name!r}); this nbqueue uses version "
            f"{columns.SCHEMA_VERSION}. Use a matching nbqueue, or another table name. "
            "The table has been left as it is."
        )
    if not inspector.has_table(name):
        tasks.metadata.create_all(conn)  # and any missing table beside it
        if version is None:
            conn.execute(queries.write_version)
        log.info("nbqueue: created table %s (schema version %d)", name, columns.SCHEMA_VERSION)
        return
    if version is None:
        raise SchemaMismatchError(
            f"table {name!r} already exists in {where} but was not made by "
            f"nbqueue (no schema version in {meta_name!r}). Pass another table name, "
            "e.g. SQLAlchemyAdapter(url, table='nbqueue_tasks'), or move that table "
            "away. It has been left as it is."
        )
    check_columns(inspector, tasks, where)
    _add_missing_indexes(conn, inspector, tasks, where)
    # A database made before these tables existed gets them now (same schema version).
    for table in (queries.executors, queries.hosts):
        if inspector.has_table(table.name):
            check_columns(inspector, table, where)
        else:
            table.create(conn)
            log.info("nbqueue: created table %s", table.name)


def _add_missing_indexes(
    conn: Connection, inspector: sa.Inspector, table: sa.Table, where: str
) -> None:
    """Create the indexes a later nbqueue added (indexes change no result, so the schema
    version stays). One that cannot be created (PostgreSQL: a role that does not own the
    table) is left out with a warning: queries still work, reading more rows."""
    stored = {index["name"] for index in inspector.get_indexes(table.name)}
    for index in sorted(table.indexes, key=lambda index: str(index.name)):
        if index.name in stored:
            continue
        try:
            with conn.begin_nested():
                index.create(conn)
        except sa.exc.DBAPIError as exc:
            log.warning(
                "nbqueue: could not create index %s on table %s in %s: %s",
                index.name, table.name, where, str(exc).splitlines()[0],
            )  # fmt: skip
        else:
            log.info("nbqueue: created index %s on table %s", index.name, table.name)


#: The columns schema version 2 added to the tasks table.
ADDED_IN_2 = ("key", "output")


def _migrate_from_1(
    conn: Connection, inspector: sa.Inspector, queries: Queries, where: str
) -> None:
    """Bring a version-1 tasks table to version 2; raise SchemaMismatchError, changing
    nothing, when it is not the table version 1 made."""
    tasks = queries.tasks
    if inspector.has_table(tasks.name):
        check_columns(inspector, tasks, where, version=1, absent=ADDED_IN_2)
        stored = {column["name"] for column in inspector.get_columns(tasks.name)}
        table = conn.dialect.identifier_preparer.format_table(tasks)
        for name in ADDED_IN_2:
            if name not in stored:
                column = sa.schema.CreateColumn(tasks.c[name]).compile(dialect=conn.dialect)
                conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column}")
        # (its index on key, as every index missing, is added by _add_missing_indexes)
    conn.execute(queries.update_version)
    log.info(
        "nbqueue: migrated table %s in %s from schema version 1 to %d (added columns %s)",
        tasks.name, where, columns.SCHEMA_VERSION, ", ".join(ADDED_IN_2),
    )  # fmt: skip


def check_columns(
    inspector: sa.Inspector,
    table: sa.Table,
    where: str,
    *,
    version: int = columns.SCHEMA_VERSION,
    absent: tuple[str, ...] = (),
) -> None:
    """Raise SchemaMismatchError when the stored ``table`` lacks one of our columns (but
    those ``absent`` in its schema ``version``) or has one we could not insert rows
    without."""
    stored = {column["name"]: column for column in inspector.get_columns(table.name)}
    ours = table.c.keys()
    missing = [c for c in ours if c not in stored and c not in absent]
    blocking = sorted(
        c
        for c, column in stored.items()
        if c not in ours and not column["nullable"] and column.get("default") is None
    )
    if missing or blocking:
        problems = []
        if missing:
            problems.append(f"missing column(s) {missing}")
        if blocking:
            problems.append(f"extra NOT NULL column(s) without a default {blocking}")
        raise SchemaMismatchError(
            f"table {table.name!r} in {where} does not match nbqueue schema "
            f"version {version}: {'; '.join(problems)}. It has been left as it is."
        )
