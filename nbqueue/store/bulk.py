"""Batches of task rows, fast: the writer's hot path.

SQLAlchemy's ``executemany`` builds and converts every parameter of every row in Python
(``construct_params`` and the types' processors, per row); for a batch of task rows that
cost more than the database's own work. Here one statement per set of columns is written
once and kept, and the driver's ``executemany`` runs the whole batch with each row's values
as they are -- they are checked (:mod:`nbqueue.store.rowcheck`): str, int, float, bytes,
aware UTC datetimes, None; only datetimes become text on SQLite. On SQLite that is one
prepared statement stepped per row; on PostgreSQL (psycopg) one pipeline of prepared
statements, one round trip. (Statements that send each column as one array, ``unnest``,
measured slower on PostgreSQL: psycopg dumps array elements in Python, and the planner
joins the arrays to the table with a scan of the table.)
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect

from nbqueue.store.columns import Row
from nbqueue.store.pgcopy import CopyUpsert
from nbqueue.store.schema import JSONText, UTCDateTime, sqlite_text


class Bulk:
    """Upserts and updates of many rows of the tasks table at once."""

    def __init__(self, tasks: sa.Table) -> None:
        self.tasks = tasks
        self._made: dict[tuple[str, str, tuple[str, ...]], _Statement] = {}
        self._copy = CopyUpsert(tasks)

    def upsert(self, conn: Connection, names: tuple[str, ...], rows: Sequence[Row]) -> None:
        """Insert these rows, each setting ``names``, or set those columns of the stored row
        with the same uid. Many rows on PostgreSQL go by COPY (:mod:`nbqueue.store.pgcopy`)."""
        if self._copy.usable(conn, rows):
            self._copy.upsert(conn, names, rows)
        else:
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
    """One statement, rendered for its driver's parameter style, and how a row becomes its
    parameters: a tuple in the statement's order (positional paramstyles), or the row."""

    def __init__(self, sql: str, dialect: Dialect, names: tuple[str, ...], table: sa.Table):
        compiled = sa.text(sql).compile(dialect=dialect)
        self.sql = compiled.string
        self.positional = bool(compiled.positional)
        self.order = tuple(compiled.positiontup or ()) if self.positional else names
        self._values = operator.itemgetter(*self.order)
        #: Where the datetimes are, on SQLite (which keeps them as text).
        self._convert = [
            i for i, name in enumerate(self.order)
            if dialect.name == "sqlite" and isinstance(table.c[name].type, UTCDateTime)
        ]  # fmt: skip

    def run(self, conn: Connection, rows: Sequence[Row]) -> None:
        """Run it once per row; each row has exactly the statement's columns."""
        values, convert = self._values, self._convert
        if not self.positional and not convert:
            conn.exec_driver_sql(self.sql, list(rows))
            return
        params: list[Any] = []
        for row in rows:
            found = values(row)
            if convert:
                changed = list(found)
                for i in convert:
                    if changed[i] is not None:
                        changed[i] = sqlite_text(changed[i])
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
