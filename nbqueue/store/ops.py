"""Steps on the tasks table inside one transaction (a Connection the adapter has begun)."""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from nbqueue.store.batch import ORDER_COLUMNS, Plan
from nbqueue.store.columns import CLAIMABLE, Row, order_key, order_key_of
from nbqueue.store.queries import Queries

#: Uids per ``IN (...)`` list, well below SQLite's limit on bound parameters.
CHUNK = 500


def write(conn: Connection, q: Queries, plan: Plan) -> tuple[list[str], list[Row], int]:
    """Carry out ``plan``: the uids won, the rows claimed, the number of rows deleted.

    When the plan claims the next best rows and saves claimable new rows too, those new rows
    that are among the best are inserted already claimed: the same outcome as saving them
    and then claiming, with one row write instead of two."""
    values = plan.claim_values
    fresh = _fresh(plan) if values is not None and plan.claim_limit else []
    new = {row["uid"] for row in fresh}
    save(conn, q, [row for row in plan.complete if row["uid"] not in new], plan.partial)
    deleted = delete(conn, q, plan.delete) if plan.delete else 0
    if values is None:
        return [], [], deleted
    won = claim(conn, q, plan.claim_uids, values, plan.now)
    if fresh:
        return won, claim_with_fresh(conn, q, plan, fresh), deleted
    claimed: list[Row] = []
    if plan.claim_limit:
        where = q.next_claimable(conn.dialect.name, plan.claim_limit, plan.claim_types)
        wanted = q.columns(plan.claim_columns)
        claimed = update_returning(conn, q.tasks, where, values, plan.now, wanted)
    return won, claimed, deleted


def _fresh(plan: Plan) -> list[Row]:
    """The complete rows of ``plan`` its limited claim could take: claimable, ready, of the
    types asked, not claimed by uid nor deleted, and holding every column the claim reads back."""
    shown = plan.claim_columns
    if shown is None:
        return []
    by_uid = set(plan.claim_uids) | set(plan.delete)
    types = None if plan.claim_types is None else set(plan.claim_types)
    return [
        row
        for row in plan.complete
        if row["status"] in CLAIMABLE
        and row["ready_at"] <= plan.now
        and (types is None or row["type"] in types)
        and row["uid"] not in by_uid
        and row.keys() >= set(shown) - set(plan.claim_values or ())
    ]


def claim_with_fresh(conn: Connection, q: Queries, plan: Plan, fresh: list[Row]) -> list[Row]:
    """Claim the ``plan.claim_limit`` best of the stored ready rows and the ``fresh`` rows
    (not saved yet): the chosen fresh rows are saved claimed, the others as they are."""
    values = plan.claim_values
    assert values is not None
    limit = plan.claim_limit
    new = {row["uid"] for row in fresh}
    query = q.best_ready(conn.dialect.name, limit, plan.claim_types, ("uid", *ORDER_COLUMNS))
    stored = [  # (uid, order); a new row's uid stored before: the batch's row wins
        (uid, order_key_of(priority, created))
        for uid, priority, created in conn.execute(query, {"now": plan.now})
        if uid not in new
    ]
    candidates = [*stored, *((row["uid"], order_key(row)) for row in fresh)]
    candidates.sort(key=operator.itemgetter(1))
    chosen = {uid for uid, _ in candidates[:limit]}
    for row in fresh:
        if row["uid"] in chosen:
            row.update(values)
    save(conn, q, fresh, [])
    shown = plan.claim_columns
    assert shown is not None  # (_fresh() makes sure)
    claimed = [{name: row[name] for name in shown} for row in fresh if row["uid"] in chosen]
    wanted = q.columns(shown)
    from_store = [uid for uid, _ in stored if uid in chosen]
    for chunk in chunks(from_store):
        claimed += update_returning(conn, q.tasks, q.claimable(chunk), values, plan.now, wanted)
    return claimed


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
