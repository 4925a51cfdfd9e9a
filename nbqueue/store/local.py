"""In-process defaults for executors, hosts and wake-ups.

MemoryAdapter uses them as they are; a backend shared between processes (the SQL adapter)
overrides every one of them. Kept in this object, executors and hosts are seen only through
this adapter, and :meth:`notify` wakes only listeners of this adapter.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import threading
from collections.abc import Callable

from nbqueue.store.columns import Row

log = logging.getLogger("nbqueue.store")


def call_listener(callback: Callable[[], None]) -> None:
    """Run a listen() callback; its failure is logged, never passed on to the notifier."""
    try:
        callback()
    except Exception:
        log.exception("nbqueue: a wake-up callback failed")


class InProcessExtras:
    """The executor, host and wake-up primitives of :class:`DatabaseAdapter`, kept in this
    object (a mixin: the adapter inherits them and may override each)."""

    def __init__(self) -> None:
        self._local_lock = threading.Lock()
        self._local_executors: dict[tuple[str, str], tuple[bytes, dt.datetime, int]] = {}
        self._local_hosts: dict[str, Row] = {}
        self._local_listeners: dict[int, Callable[[], None]] = {}
        self._local_seq = itertools.count()

    def _save_executor(self, task_type: str, digest: str, blob: bytes, now: dt.datetime) -> None:
        with self._local_lock:
            self._local_executors[(task_type, digest)] = (blob, now, next(self._local_seq))

    def _load_executor(self, task_type: str, digest: str | None) -> tuple[str, bytes] | None:
        """``(digest, stored blob)``: by digest, or the newest for the type."""
        with self._local_lock:
            if digest is not None:
                found = self._local_executors.get((task_type, digest))
                return None if found is None else (digest, found[0])
            mine = [(at, seq, d, blob) for (t, d), (blob, at, seq) in
                    self._local_executors.items() if t == task_type]  # fmt: skip
            if not mine:
                return None
            _, _, newest, blob = max(mine)
            return newest, blob

    def _executor_digests(self) -> dict[str, str]:
        with self._local_lock:
            ordered = sorted(
                (at, seq, t, d) for (t, d), (_, at, seq) in self._local_executors.items()
            )
            return {t: d for _, _, t, d in ordered}

    def _host_heartbeat(self, row: Row) -> None:
        with self._local_lock:
            stored = self._local_hosts.get(row["name"])
            if stored is not None and (stored["hostname"], stored["pid"]) == (
                row["hostname"], row["pid"],
            ):  # fmt: skip
                row = {**row, "started_at": stored["started_at"]}
            self._local_hosts[row["name"]] = row

    def _load_hosts(self) -> list[Row]:
        with self._local_lock:
            return [dict(row) for row in self._local_hosts.values()]

    def _remove_host(self, name: str) -> None:
        with self._local_lock:
            self._local_hosts.pop(name, None)

    def _notify(self) -> None:
        with self._local_lock:
            callbacks = list(self._local_listeners.values())
        for callback in callbacks:
            call_listener(callback)

    def _listen(self, callback: Callable[[], None]) -> Callable[[], None]:
        with self._local_lock:
            key = next(self._local_seq)
            self._local_listeners[key] = callback

        def stop() -> None:
            with self._local_lock:
                self._local_listeners.pop(key, None)

        return stop
