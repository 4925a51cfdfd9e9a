"""MemoryAdapter: the storage interface on a dict, for queues without a database and for
fast tests. Same semantics as the SQL adapter; one lock makes every method atomic."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable

from nbqueue.store import base
from nbqueue.store.base import Row


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

    def _save(self, complete: list[Row], partial: list[Row]) -> None:
        with self._lock:
            for row in complete:
                stored = self._rows.get(row["uid"])
                if stored is None:
                    self._rows[row["uid"]] = dict.fromkeys(base.COLUMNS) | row
                else:
                    stored.update(row)
            for row in partial:
                stored = self._rows.get(row["uid"])
                if stored is not None:
                    stored.update(row)

    def _delete(self, uids: list[str]) -> int:
        with self._lock:
            return sum(self._rows.pop(uid, None) is not None for uid in uids)

    def _load(self, uids: list[str] | None) -> list[Row]:
        with self._lock:
            if uids is None:
                return [dict(row) for row in self._rows.values()]
            return [dict(self._rows[uid]) for uid in uids if uid in self._rows]

    def _load_changed(self, since: dt.datetime) -> list[Row]:
        with self._lock:
            return [dict(row) for row in self._rows.values() if row["updated_at"] > since]

    def _claim(self, uids: list[str], owner: str, now: float, expires: dt.datetime) -> list[str]:
        values = self._claimed_values(owner, now, expires)
        won = []
        with self._lock:
            for uid in uids:
                row = self._rows.get(uid)
                if row is not None and _ready(row, now):
                    row.update(values)
                    won.append(uid)
        return won

    def _claim_next(
        self, owner: str, limit: int, now: float, expires: dt.datetime, types: list[str] | None
    ) -> list[Row]:
        values = self._claimed_values(owner, now, expires)
        with self._lock:
            ready = [
                row
                for row in self._rows.values()
                if _ready(row, now) and (types is None or row["type"] in types)
            ]
            ready.sort(key=base.order_key)
            won = ready[:limit]
            for row in won:
                row.update(values)
            return [dict(row) for row in won]

    def _heartbeat(self, owner: str, uids: list[str], expires: dt.datetime) -> list[str]:
        held = []
        with self._lock:
            for uid in uids:
                row = self._rows.get(uid)
                if (
                    row is not None
                    and row["status"] == base.RUNNING
                    and row["lease_owner"] == owner
                ):
                    row["lease_expires_at"] = expires
                    held.append(uid)
        return held

    def _requeue_expired(self, now: dt.datetime) -> list[str]:
        values = self._requeued_values(now)
        expired = []
        with self._lock:
            for uid, row in self._rows.items():
                lease = row["lease_expires_at"]
                if row["status"] == base.RUNNING and isinstance(lease, dt.datetime) and lease < now:
                    row.update(values)
                    expired.append(uid)
        return expired


def _ready(row: Row, now: float) -> bool:
    ready_at = row["ready_at"]
    return (
        row["status"] in base.CLAIMABLE and isinstance(ready_at, (int, float)) and ready_at <= now
    )
