"""Every statement the SQL adapter runs, by name."""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from nbqueue.store import columns
from nbqueue.store.bulk import Bulk
from nbqueue.store.schema import CLAIM_INDEX, Schema

#: The key of the schema version in ``<table>_meta``.
VERSION_KEY = "schema_version"


class Queries:
    """Every statement the adapter runs, by name."""

    def __init__(self, schema: Schema) -> None:
        tasks, meta = schema.tasks, schema.meta
        self.tasks, self.meta = tasks, meta
        self.executors, self.hosts = schema.executors, schema.hosts
        c = tasks.c
        self.read_version = sa.select(meta.c.value).where(meta.c.key == VERSION_KEY)
        self.write_version = sa.insert(meta).values(
            key=VERSION_KEY, value=str(columns.SCHEMA_VERSION)
        )
        self.update_version = (
            sa.update(meta)
            .where(meta.c.key == VERSION_KEY)
            .values(value=str(columns.SCHEMA_VERSION))
        )
        #: Upserts and updates of whole batches of rows (the writer's hot path).
        self.bulk = Bulk(tasks)
        self._ready = sa.and_(c.status.in_(columns.CLAIMABLE), c.ready_at <= sa.bindparam("now"))
        # SQLite's planner prefers an index on status to the claim index (it cannot know
        # that nearly every row is pending): named, with INDEXED BY.
        self._claim_from_sqlite = sa.text(
            f'"{tasks.name}" INDEXED BY "{CLAIM_INDEX.format(table=tasks.name)}"'
        )

    def advisory_lock(self) -> sa.Select[Any]:
        """PostgreSQL: serialise open() between controllers starting at the same time."""
        key = zlib.crc32(f"nbqueue:{self.tasks.name}".encode())
        return sa.select(sa.func.pg_advisory_xact_lock(sa.literal(key, sa.BigInteger)))

    def columns(self, names: tuple[str, ...] | None) -> list[sa.ColumnElement[Any]]:
        """These columns of the tasks table; every one for None."""
        c = self.tasks.c
        return list(c) if names is None else [c[name] for name in names]

    def select(self, names: tuple[str, ...] | None) -> sa.Select[Any]:
        """These columns of every row (add a where clause)."""
        return sa.select(*self.columns(names))

    def select_changed(
        self, since: dt.datetime, names: tuple[str, ...] | None, skip_owner: str | None
    ) -> sa.Select[Any]:
        c = self.tasks.c
        query = self.select(names).where(c.updated_at > since)
        if skip_owner is not None:
            query = query.where(sa.or_(c.lease_owner.is_(None), c.lease_owner != skip_owner))
        return query

    def delete(self, uids: list[str]) -> sa.Delete:
        return sa.delete(self.tasks).where(self.tasks.c.uid.in_(uids))

    def claimable(self, uids: list[str]) -> sa.ColumnElement[bool]:
        """These uids, when ready and not held by another claimer (SKIP LOCKED)."""
        c = self.tasks.c
        rows = sa.select(c.uid).where(c.uid.in_(uids), self._ready)
        return c.uid.in_(rows.with_for_update(skip_locked=True))

    def next_claimable(
        self, dialect: str, limit: int, types: list[str] | None
    ) -> sa.ColumnElement[bool]:
        """The ``limit`` best ready rows not held by another claimer, read from the claim
        index in order (never a sort of every pending row)."""
        return self.tasks.c.uid.in_(self.best_ready(dialect, limit, types, ("uid",)))

    def best_ready(
        self, dialect: str, limit: int, types: list[str] | None, names: tuple[str, ...]
    ) -> sa.Select[Any]:
        """SELECT ``names`` of the ``limit`` best ready rows (of ``types`` when given), best
        first, from the claim index; on PostgreSQL locked, skipping rows another claimer
        holds (SQLite has no row locks: the transaction holds the write lock)."""
        c = self.tasks.c
        if dialect == "sqlite":  # the index named: plain column names, with their types
            rows = self._best_ready(lambda name: sa.column(name, c[name].type), limit, types)
            return rows.with_only_columns(*(sa.column(n, c[n].type) for n in names)).select_from(
                self._claim_from_sqlite
            )
        rows = self._best_ready(c.__getitem__, limit, types)
        return rows.with_only_columns(*(c[n] for n in names)).with_for_update(skip_locked=True)

    def _best_ready(
        self, col: Callable[[str], sa.ColumnClause[Any]], limit: int, types: list[str] | None
    ) -> sa.Select[Any]:
        """SELECT uid ... of the ``limit`` best ready rows; columns named by ``col``."""
        statuses: list[sa.ColumnElement[Any]] = [
            sa.literal_column(f"'{s}'") for s in columns.CLAIMABLE
        ]
        rows = sa.select(col("uid")).where(
            col("status").in_(statuses), col("ready_at") <= sa.bindparam("now")
        )
        if types is not None:
            rows = rows.where(col("type").in_(types))
        return rows.order_by(col("priority").desc(), col("created_at").asc()).limit(limit)

    def held(self, owner: str, uids: list[str]) -> sa.ColumnElement[bool]:
        c = self.tasks.c
        return sa.and_(c.uid.in_(uids), c.status == columns.RUNNING, c.lease_owner == owner)

    def select_lost(self, now: dt.datetime, owners: list[str] | None) -> sa.Select[Any]:
        """Running rows whose lease expired before ``now`` -- or, with ``owners``, whose
        lease one of them holds -- locked, skipping rows another transaction holds."""
        c = self.tasks.c
        lost = c.lease_expires_at < now if owners is None else c.lease_owner.in_(owners)
        rows = sa.select(self.tasks).where(c.status == columns.RUNNING, lost)
        return rows.order_by(c.uid).with_for_update(skip_locked=True)

    def lease_owners(self) -> sa.Select[Any]:
        c = self.tasks.c
        leased = sa.and_(c.status == columns.RUNNING, c.lease_owner.is_not(None))
        return sa.select(c.lease_owner).where(leased).distinct()

    def upsert_executor(self, dialect: str) -> sa.Insert:
        """Insert, or replace the payload and created_at of the same (type, digest)."""
        stmt = _insert(dialect, self.executors)
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
        stmt = _insert(dialect, self.hosts)
        c, new = self.hosts.c, stmt.excluded
        same_process = sa.and_(c.hostname == new.hostname, c.pid == new.pid)
        changed: dict[str, Any] = {
            name: new[name] for name in columns.HOST_COLUMNS if name not in ("name", "started_at")
        }
        changed["started_at"] = sa.case((same_process, c.started_at), else_=new.started_at)
        return stmt.on_conflict_do_update(index_elements=[c.name], set_=changed)

    def select_hosts(self) -> sa.Select[Any]:
        return sa.select(self.hosts).order_by(self.hosts.c.name)

    def delete_host(self, name: str) -> sa.Delete:
        return sa.delete(self.hosts).where(self.hosts.c.name == name)


def _insert(dialect: str, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    """The dialect's INSERT (both have ON CONFLICT DO UPDATE)."""
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
