"""Many new rows into PostgreSQL by COPY (psycopg 3).

A batch of new task rows -- a burst of ``add()`` -- costs the server a third less, and the
writer half the CPU, when it arrives by ``COPY`` into a temporary table of the same columns
and is then upserted in one ``INSERT ... SELECT ... ON CONFLICT``, instead of one pipelined
``INSERT`` per row. The temporary table (``ON COMMIT DELETE ROWS``) is made once per
connection (and again after a transaction that made it rolled back); a role that may not
create temporary tables keeps the pipelined inserts.
Driver errors are raised as SQLAlchemy's, so the adapter handles them like any other.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from nbqueue.store.columns import Row

log = logging.getLogger("nbqueue.store")

#: Smaller batches go by pipelined inserts: COPY costs three statements whatever its size.
MIN_ROWS = 32
#: The temporary table is named after the tasks table.
STAGE_PREFIX = "nbqueue_stage_"


class CopyUpsert:
    """Upserts of many complete rows through a per-connection temporary table."""

    def __init__(self, tasks: sa.Table) -> None:
        self.tasks = tasks
        self._stage = f"{STAGE_PREFIX}{tasks.name}"
        self._made: dict[tuple[str, ...], tuple[str, str]] = {}

    def usable(self, conn: Connection, rows: Sequence[Row]) -> bool:
        """Whether these rows go by COPY on this connection (making its table if need be:
        it goes with a transaction that rolls back, so it is looked for each time)."""
        if len(rows) < MIN_ROWS or conn.dialect.driver != "psycopg":
            return False
        info = conn.connection.info
        if info.get(self._stage) is False:
            return False
        there = conn.exec_driver_sql(
            "SELECT to_regclass(%(name)s)", {"name": f'pg_temp."{self._stage}"'}
        ).scalar()
        if there is None:
            info[self._stage] = self._make_stage(conn)
        return info.get(self._stage) is not False

    def _make_stage(self, conn: Connection) -> bool:
        """Create the temporary table (in a savepoint: a refusal must not end the
        transaction); False when the role may not."""
        table = conn.dialect.identifier_preparer.format_table(self.tasks)
        try:
            with conn.begin_nested():
                conn.exec_driver_sql(
                    f'CREATE TEMPORARY TABLE "{self._stage}" ON COMMIT DELETE ROWS '
                    f"AS SELECT * FROM {table} WITH NO DATA"
                )
        except sa_exc.ProgrammingError as exc:  # (insufficient privilege)
            log.info("nbqueue: no temporary table for COPY (%s); inserting row by row", exc.orig)
            return False
        return True

    def upsert(self, conn: Connection, names: tuple[str, ...], rows: Sequence[Row]) -> None:
        """COPY the rows into the temporary table, upsert them from there, empty it."""
        copy, upsert = self._statements(conn, names)
        raw: Any = conn.connection.driver_connection
        dbapi = conn.dialect.loaded_dbapi
        try:
            with raw.cursor() as cursor, cursor.copy(copy) as sink:
                for row in rows:
                    sink.write_row([row[name] for name in names])
        except dbapi.Error as exc:
            raise sa_exc.DBAPIError.instance(
                copy, None, exc, dbapi.Error, dialect=conn.dialect
            ) from exc
        conn.exec_driver_sql(upsert)
        conn.exec_driver_sql(f'DELETE FROM "{self._stage}"')  # (for another batch, same commit)

    def _statements(self, conn: Connection, names: tuple[str, ...]) -> tuple[str, str]:
        made = self._made.get(names)
        if made is None:
            quote = conn.dialect.identifier_preparer.quote
            table = conn.dialect.identifier_preparer.format_table(self.tasks)
            listed = ", ".join(quote(n) for n in names)
            sets = ", ".join(f"{quote(n)} = excluded.{quote(n)}" for n in names if n != "uid")
            made = self._made[names] = (
                f'COPY "{self._stage}" ({listed}) FROM STDIN',
                f'INSERT INTO {table} ({listed}) SELECT {listed} FROM "{self._stage}" '
                f"ORDER BY {quote('uid')} ON CONFLICT ({quote('uid')}) DO UPDATE SET {sets}",
            )
        return made
