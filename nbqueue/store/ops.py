"""Steps on the tasks table inside one transaction (a Connection the adapter has begun)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from nbqueue.store.batch import Plan
from nbqueue.store.columns import Row
from nbqueue.store.queries import Queries

#: Uids per ``IN (...)`` list, well below SQLite's limit on bound parameters.
CHUNK = 500


def write(conn: Connection, q: Queries, plan: Plan) -> tuple[list[str], list[Row], int]:
    """Carry out ``plan``: the uids won, the rows claimed, the number of rows deleted."""
    save(conn, q, plan.complete, plan.partial)
    deleted = delete(conn, q, plan.delete) if plan.delete else 0
    if plan.claim_values is None:
        return [], [], deleted
    won = claim(conn, q, plan.claim_uids, plan.claim_values, plan.now)
    claimed: list[Row] = []
    if plan.claim_limit:
        where = q.next_claimable(conn.dialect.name, plan.claim_limit, plan.claim_types)
        wanted = q.columns(plan.claim_columns)
        claimed = update_returning(conn, q.tasks, where, plan.claim_values, plan.now, wanted)
    return won, claimed, deleted


def save(conn: Connection, q: Queries, complete: list[Row], partial: list[Row]) -> None:
    """Upsert the complete rows; update existing rows from the partial ones."""
    for names, batch in by_columns(complete):
        q.bulk.upsert(conn, names, batch)
    for names, batch in by_columns(partial):
        q.bulk.update(conn, names, batch)


def delete(conn: Connection, q: Queries, uids: list[str]) -> int:
    """Delete these rows; how many there were."""
    return sum(conn.execute(q.delete(chunk)).rowcount for chunk in chunks(uids))


def load(
    conn: Connection, q: Queries, uids: list[str] | None, names: tuple[str, ...] | None
) -> list[Row]:
    """Every row, or those with these uids; only these columns when given."""
    if uids is None:
        return rows(conn.execute(q.select(names)))
    found: list[Row] = []
    for chunk in chunks(uids):
        found.extend(rows(conn.execute(q.select(names).where(q.tasks.c.uid.in_(chunk)))))
    return found


def load_by_key(
    conn: Connection, q: Queries, keys: list[str], names: tuple[str, ...] | None
) -> list[Row]:
    """The rows with one of these keys; only these columns when given."""
    found: list[Row] = []
    for chunk in chunks(keys):
        found.extend(rows(conn.execute(q.select(names).where(q.tasks.c.key.in_(chunk)))))
    return found


def claim(conn: Connection, q: Queries, uids: list[str], values: Row, now: float) -> list[str]:
    """Set ``values`` on those of these rows that are ready; the uids won."""
    won: list[str] = []
    for chunk in chunks(uids):
        found = update_returning(conn, q.tasks, q.claimable(chunk), values, now, [q.tasks.c.uid])
        won.extend(row["uid"] for row in found)
    return won


def heartbeat(
    conn: Connection, q: Queries, owner: str, uids: list[str], expires: dt.datetime
) -> list[str]:
    """Extend ``owner``'s leases on these running rows; the uids still held."""
    held: list[str] = []
    values = {"lease_expires_at": expires}
    for chunk in chunks(uids):
        found = update_returning(conn, q.tasks, q.held(owner, chunk), values, None, [q.tasks.c.uid])
        held.extend(row["uid"] for row in found)
    return held


def requeue(
    conn: Connection,
    q: Queries,
    now: dt.datetime,
    owners: list[str] | None,
    decide: Callable[[list[Row]], list[Row]],
) -> list[str]:
    """Lock the running rows whose lease expired before ``now`` (or is held by one of
    ``owners``), update them with ``decide(rows)``; their uids."""
    found = rows(conn.execute(q.select_lost(now, owners)))
    updates = decide(found)
    save(conn, q, [], updates)
    return [row["uid"] for row in updates]


def update_returning(
    conn: Connection,
    tasks: sa.Table,
    where: sa.ColumnElement[bool],
    values: Row,
    now: float | None,
    columns: list[sa.ColumnElement[Any]],
) -> list[Row]:
    """UPDATE ... WHERE ... RETURNING ``columns`` (which include uid). SQLite before 3.35
    has no RETURNING: select the rows, then update them by uid -- as atomic, since the
    transaction already holds SQLite's write lock (BEGIN IMMEDIATE)."""
    params = {} if now is None else {"now": now}
    if conn.dialect.update_returning:
        stmt = sa.update(tasks).where(where).values(values).returning(*columns)
        return rows(conn.execute(stmt, params))
    found = rows(conn.execute(sa.select(*columns).where(where), params))
    for chunk in chunks([row["uid"] for row in found]):
        conn.execute(sa.update(tasks).where(tasks.c.uid.in_(chunk)).values(values))
    return [row | {k: v for k, v in values.items() if k in row} for row in found]


def rows(result: sa.CursorResult[Any]) -> list[Row]:
    """Every row of ``result`` as a dict (zipped with the keys once: a RowMapping per row
    costs more than reading the row)."""
    keys = list(result.keys())
    return [dict(zip(keys, row, strict=True)) for row in result]


def chunks(values: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def by_columns(batch: list[Row]) -> Iterator[tuple[tuple[str, ...], list[Row]]]:
    """Rows grouped by the columns they set, so each group is one executemany; in uid order,
    so that concurrent batches lock rows in the same order (no deadlocks between them)."""
    groups: dict[tuple[str, ...], list[Row]] = {}
    for row in sorted(batch, key=lambda r: r["uid"]):
        groups.setdefault(tuple(sorted(row)), []).append(row)
    yield from groups.items()
