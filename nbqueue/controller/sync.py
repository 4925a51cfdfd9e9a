"""What a controller reads from its database, on the database thread: leases renewed (and
lost ones reported), its host's heartbeat, dead owners on this machine taken over, expired
leases handed back, other controllers' changes (state columns only; a task's whole row once,
when it is new here), and executors registered in a notebook elsewhere."""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
from typing import TYPE_CHECKING

from nbqueue import config, rows
from nbqueue.controller import owners
from nbqueue.errors import SignatureError

if TYPE_CHECKING:
    from nbqueue.controller.loop import ControllerLoop
    from nbqueue.controller.storeclient import Shipped, StoreClient
    from nbqueue.store import DatabaseAdapter, Row

log = logging.getLogger("nbqueue")

#: Commits arrive out of timestamp order, so each sync looks back this far.
SYNC_OVERLAP_SECONDS = 5.0
#: How often leases held by dead processes on this machine are looked for.
DEAD_OWNER_CHECK_SECONDS = 5.0


class Sync:
    """The reading side of one controller's database thread."""

    def __init__(
        self, adapter: DatabaseAdapter, loop: ControllerLoop, client: StoreClient, *,
        owner: str, name: str, lease_seconds: float, capacity: int,
        written: dict[str, dt.datetime],
    ) -> None:  # fmt: skip
        self.adapter, self._loop, self._client = adapter, loop, client
        self.owner, self.name, self.lease_seconds = owner, name, lease_seconds
        self._capacity = capacity  # task slots of this controller's workers (0: a client)
        #: uid -> updated_at of this controller's last write of it (skipped when read back)
        self._written = written
        self._since: dt.datetime | None = None
        self._next_sync = self._next_heartbeat = self._next_owner_check = 0.0
        self._sync_seconds = config.sync_seconds()

    def start(self, synced_until: dt.datetime) -> None:
        """Changes up to ``synced_until`` are known (read at start-up)."""
        self._since = synced_until - dt.timedelta(seconds=SYNC_OVERLAP_SECONDS)

    def wake(self) -> None:
        """Read other controllers' changes at the next turn (a notification came)."""
        self._next_sync = 0.0

    def next_due(self) -> float:
        """When (monotonic) :meth:`housekeeping` has something to do next."""
        return min(self._next_sync, self._next_heartbeat)

    def whole(self, found: list[Row]) -> list[Row]:
        """``found`` (rows read with some columns), with the whole rows of the tasks the
        controller does not know yet (another controller added them: read once)."""
        unknown = self._client.unknown([row["uid"] for row in found])
        if not unknown:
            return found
        full = {row["uid"]: row for row in self.adapter.load(unknown)}
        return [full.get(row["uid"], row) for row in found]

    def housekeeping(self) -> None:
        """Heartbeats and sync, when due (each cycle of the database thread)."""
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.lease_seconds / 3
            leased = self._client.leased()
            if leased:
                held = set(self.adapter.heartbeat(self.owner, leased, self.lease_seconds))
                lost = [uid for uid in leased if uid not in held]
                if lost:  # expired while this controller was stalled: someone else has them
                    self._loop.call_soon(self._client.leases_lost, lost)
            if self._capacity > 0:
                self.adapter.host_heartbeat(
                    self.name, hostname=socket.gethostname(), pid=os.getpid(),
                    running=len(leased), capacity=self._capacity,
                )  # fmt: skip
        if now >= self._next_sync:
            self._next_sync = now + self._sync_seconds
            self._sync()

    def _sync(self) -> None:
        if self._capacity > 0:
            self._load_executors()
        now = time.monotonic()
        if now >= self._next_owner_check:
            self._next_owner_check = now + DEAD_OWNER_CHECK_SECONDS
            dead = [o for o in self.adapter.lease_owners() if owners.dead_here(o)]
            if dead:
                log.info("nbqueue: taking back the tasks of %d dead process(es)", len(dead))
                self.adapter.requeue_expired(rows.lost_attempt, owners=dead)
        self.adapter.requeue_expired(rows.lost_attempt)
        started = dt.datetime.now(dt.timezone.utc)
        since = self._since or dt.datetime.fromtimestamp(0, dt.timezone.utc)
        # Rows of the tasks it holds are its own to write; the rest of what it wrote itself
        # comes back too: skip exactly that version. Which rows changed is read first (uid
        # and updated_at only: most are its own, finished tasks with their results), then
        # the state of the others.
        stamps = self.adapter.load_changed(since, columns=(), except_leased_by=self.owner)
        others = [row["uid"] for row in stamps if not self._wrote(row)]
        changed = []
        if others:
            found = self.adapter.load(others, columns=rows.SYNC_COLUMNS)
            changed = self.whole([row for row in found if not self._wrote(row)])
        self._since = started - dt.timedelta(seconds=SYNC_OVERLAP_SECONDS)
        self._loop.call_soon(self._client.synced, changed)

    def _wrote(self, row: Row) -> bool:
        """Whether ``row`` is this controller's own last write of it."""
        return bool(row["updated_at"] == self._written.get(row["uid"]))

    def _load_executors(self) -> None:
        """Executors registered in a notebook somewhere, new or changed since last time."""
        known = self._client.known_executors()
        found: list[Shipped] = []
        for task_type, digest in self.adapter.executor_digests().items():
            if known.get(task_type) in (digest, "file"):
                continue
            try:
                loaded = self.adapter.load_executor(task_type, digest)
            except SignatureError as exc:
                found.append((task_type, digest, None, str(exc)))
                continue
            if loaded is not None:
                found.append((task_type, digest, loaded[1], None))
        if found:
            self._loop.call_soon(self._client.executors_found, found)
