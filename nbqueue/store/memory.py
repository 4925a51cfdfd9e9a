"""MemoryAdapter: the storage interface on a dict, for queues without a database and for
fast tests. Same semantics as the SQL adapter; one lock makes every method atomic."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable

from nbqueue.store import base, batch, columns
from nbqueue.store.columns import CLAIMABLE, RUNNING, Row


class MemoryAdapter(base.DatabaseAdapter):
    """Rows in a dict in this process. Rows go in and come out as copies, so callers never
    share a dict with the store."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock=clock)
        self._rows: dict[str, Row] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<MemoryAdapter rows={len(self._rows)}>"

    def _open(self) -> None:
        pass

    def _close(self) -> None:
        pass

    def _write(self, plan: batch.Plan) -> tuple[list[str], list[Row], int]:
        with self._lock:
            for row in plan.complete:
                stored = self._rows.get(row["uid"])
                if stored is None:
                    self._rows[row["uid"]] = dict.fromkeys(columns.COLUMNS) | row
                else:
                    stored.update(row)
            for row in plan.partial:
                if row["uid"] in self._rows:
                    self._rows[row["uid"]].update(row)
            deleted = sum(self._rows.pop(uid, None) is not None for uid in plan.delete)
            won, claimed = self._claim_locked(plan)
            return won, claimed, deleted

    def _claim_locked(self, plan: batch.Plan) -> tuple[list[str], list[Row]]:
        """The claims of ``plan``, under the lock."""
        values = plan.claim_values
        if values is None:
            return [], []
        won = [
            uid
            for uid in plan.claim_uids
            if uid in self._rows and _ready(self._rows[uid], plan.now)
        ]
        for uid in won:
            self._rows[uid].update(values)
        types = plan.claim_types
        ready = [
            row
            for row in self._rows.values()
            if _ready(row, plan.now) and (types is None or row["type"] in types)
        ]
        ready.sort(key=columns.order_key)
        best = ready[: plan.claim_limit]
        for row in best:
            row.update(values)
        return won, [_project(row, plan.claim_columns) for row in best]

    def _load(self, uids: list[str] | None, names: tuple[str, ...] | None) -> list[Row]:
        with self._lock:
            if uids is None:
                return [_project(row, names) for row in self._rows.values()]
            return [_project(self._rows[uid], names) for uid in uids if uid in self._rows]

    def _load_by_key(self, keys: list[str], names: tuple[str, ...] | None) -> list[Row]:
        wanted = set(keys)
        with self._lock:
            return [_project(row, names) for row in self._rows.values() if row["key"] in wanted]

    def _load_changed(
        self, since: dt.datetime, names: tuple[str, ...] | None, skip_owner: str | None
    ) -> list[Row]:
        with self._lock:
            return [
                _project(row, names)
                for row in self._rows.values()
                if row["updated_at"] > since
                and (skip_owner is None or row["lease_owner"] != skip_owner)
            ]

    def _heartbeat(self, owner: str, uids: list[str], expires: dt.datetime) -> list[str]:
        held = []
        with self._lock:
            for uid in uids:
                row = self._rows.get(uid)
                if row is not None and row["status"] == RUNNING and row["lease_owner"] == owner:
                    row["lease_expires_at"] = expires
                    held.append(uid)
        return held

    def _requeue(
        self, now: dt.datetime, owners: list[str] | None, decide: Callable[[list[Row]], list[Row]]
    ) -> list[str]:
        with self._lock:
            found = [dict(row) for row in self._rows.values() if _lost(row, now, owners)]
            updates = decide(found)
            for update in updates:
                self._rows[update["uid"]].update(update)
            return [update["uid"] for update in updates]

    def _lease_owners(self) -> list[str]:
        with self._lock:
            return list({row["lease_owner"] for row in self._rows.values() if _leased(row)})


def _project(row: Row, names: tuple[str, ...] | None) -> Row:
    """A copy of the row, with only these columns when given."""
    return dict(row) if names is None else {name: row[name] for name in names}


def _leased(row: Row) -> bool:
    return row["status"] == RUNNING and row["lease_owner"] is not None


def _lost(row: Row, now: dt.datetime, owners: list[str] | None) -> bool:
    """Running, leased, and the lease expired (or held by one of ``owners``)."""
    if not _leased(row):
        return False
    if owners is not None:
        return row["lease_owner"] in owners
    lease = row["lease_expires_at"]
    return isinstance(lease, dt.datetime) and lease < now


def _ready(row: Row, now: float) -> bool:
    ready_at = row["ready_at"]
    return row["status"] in CLAIMABLE and isinstance(ready_at, (int, float)) and ready_at <= now
