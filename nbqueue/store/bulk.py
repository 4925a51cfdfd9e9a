"""Batches of task rows, fast: the writer's hot path.

SQLAlchemy's ``executemany`` builds and converts every parameter of every row in Python
(``construct_params`` and the types' processors, per row); for a batch of task rows that
cost more than the database's own work. Here one statement per set of columns is written
once and kept, each row's values are converted once (by the columns' own bind processors)
into the driver's parameter form, and the driver's ``executemany`` runs the whole batch: on
SQLite one prepared statement stepped per row, on PostgreSQL (psycopg) one pipeline of
prepared statements, one round trip. (Bulk statements that send each column as one array,
``unnest``, measured slower on PostgreSQL: psycopg dumps array elements in Python, and the
planner joins the arrays to the table with a scan of the table.)

The rows come checked (:mod:`nbqueue.store.rowcheck`), with one uid each.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect

from nbqueue.store.columns import Row
from nbqueue.store.schema import JSONText


class Bulk:
    """Upserts and updates of many rows of the tasks table at once."""

    def __init__(self, tasks: sa.Table) -> None:
        self.tasks = tasks
        self._made: dict[tuple[str, str, tuple[str, ...]], _Statement] = {}

    def upsert(self, conn: Connection, names: tuple[str, ...], rows: Sequence[Row]) -> None:
        """Insert these rows, each setting ``names``, or set those columns of the stored row
        with the same uid."""
        self._statement(conn.dialect, "upsert", names).run(conn, rows)

    def update(self, conn: Connection, names: tuple[str, ...], rows: Sequence[Row]) -> None:
        """Set ``names`` (uid among them) of the stored rows with these uids; a uid with no
        stored row changes nothing."""
        self._statement(conn.dialect, "update", names).run(conn, rows)

    def _statement(self, dialect: Dialect, kind: str, names: tuple[str, ...]) -> _Statement:
        key = (dialect.name, kind, names)
        made = self._made.get(key)
        if made is None:
            made = self._made[key] = _statement(self.tasks, dialect, kind, names)
        return made


class _Statement:
    """One statement, rendered for its driver's parameter style, and how to turn a row into
    its parameters: a tuple in the statement's order (positional paramstyles) or a dict,
    with the values the columns' bind processors convert converted."""

    def __init__(self, sql: str, dialect: Dialect, names: tuple[str, ...], table: sa.Table):
        compiled = sa.text(sql).compile(dialect=dialect)
        self.sql = compiled.string
        self.positional = bool(compiled.positional)
        self.order = tuple(compiled.positiontup or ()) if self.positional else names
        self._values = operator.itemgetter(*self.order)
        processors = [
            table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in self.order
        ]
        self._convert = [(i, fn) for i, fn in enumerate(processors) if fn is not None]

    def run(self, conn: Connection, rows: Sequence[Row]) -> None:
        values, convert = self._values, self._convert
        params: list[Any] = []
        for row in rows:
            found = values(row)
            if convert:
                changed = list(found)
                for i, fn in convert:
                    if changed[i] is not None:
                        changed[i] = fn(changed[i])
                found = tuple(changed)
            params.append(found if self.positional else dict(zip(self.order, found, strict=True)))
        conn.exec_driver_sql(self.sql, params)


def _statement(table: sa.Table, dialect: Dialect, kind: str, names: tuple[str, ...]) -> _Statement:
    """``INSERT ... ON CONFLICT (uid) DO UPDATE`` (both dialects have it) or ``UPDATE ...
    WHERE uid``, with a named parameter per column (a JSON column's cast on PostgreSQL)."""
    quote = dialect.identifier_preparer.quote
    table_name = dialect.identifier_preparer.format_table(table)
    bind = {name: _bind(table, dialect, name) for name in names}
    rest = [name for name in names if name != "uid"]
    if kind == "upsert":
        sets = ", ".join(f"{quote(n)} = excluded.{quote(n)}" for n in rest)
        sql = (
            f"INSERT INTO {table_name} ({', '.join(quote(n) for n in names)}) "
            f"VALUES ({', '.join(bind[n] for n in names)}) "
            f"ON CONFLICT ({quote('uid')}) DO UPDATE SET {sets}"
        )
    else:
        sets = ", ".join(f"{quote(n)} = {bind[n]}" for n in rest)
        sql = f"UPDATE {table_name} SET {sets} WHERE {quote('uid')} = {bind['uid']}"
    return _Statement(sql, dialect, names, table)


def _bind(table: sa.Table, dialect: Dialect, name: str) -> str:
    """The parameter for a column's value: PostgreSQL takes JSON as its text, cast."""
    if dialect.name == "postgresql" and isinstance(table.c[name].type, JSONText):
        return f"CAST(:{name} AS JSON)"
    return f":{name}"
