"""LISTEN on PostgreSQL: a daemon thread per listener, with a connection of its own."""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from nbqueue.store import driver
from nbqueue.store.local import call_listener

log = logging.getLogger("nbqueue.store")

#: A listener checks this often whether it has been stopped (so stop() returns promptly).
LISTEN_POLL_SECONDS = 0.2
#: A listener connection that has heard nothing for this long is checked with a query.
LISTEN_PING_SECONDS = 30.0
#: Back-off between a listener's reconnection attempts: doubled from the base to the cap.
LISTEN_BACKOFF_BASE_SECONDS = 0.1
LISTEN_BACKOFF_CAP_SECONDS = 5.0


class Listener:
    """A daemon thread that LISTENs on ``channel`` over its own connection and calls
    ``callback`` for each notification. A dropped connection is re-made with back-off, then
    ``callback`` is called once (notifications sent meanwhile are lost)."""

    def __init__(
        self, connect: Callable[[], Any], channel: str, callback: Callable[[], None], where: str
    ) -> None:
        self._connect, self._channel, self._callback = connect, channel, callback
        self._where = where
        self._stopping = threading.Event()
        #: Set once the first LISTEN has succeeded.
        self.ready = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"nbqueue-listen-{channel}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop listening; returns within about LISTEN_POLL_SECONDS (idempotent)."""
        self._stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=LISTEN_POLL_SECONDS + 5.0)

    def _loop(self) -> None:
        from psycopg import sql

        statement = sql.SQL("LISTEN {}").format(sql.Identifier(self._channel))
        backoff = LISTEN_BACKOFF_BASE_SECONDS
        missed = False  # a wake-up may have been missed (a connection failed)
        while not self._stopping.is_set():
            conn: Any = None
            try:
                conn = self._connect()
                conn.execute(statement)
                self.ready.set()
                if missed:
                    log.info("nbqueue: listening on %s again", self._where)
                    call_listener(self._callback)
                backoff, missed = LISTEN_BACKOFF_BASE_SECONDS, False
                self._receive(conn)
            except Exception as exc:  # never let the thread die: polling would be all left
                if self._stopping.is_set():
                    break
                missed = True
                pause = backoff * random.uniform(0.5, 1.0)
                log.warning(
                    "nbqueue: listening for wake-ups on %s failed, reconnecting in %.2f s: %s",
                    self._where, pause, driver.describe_any(exc),
                )  # fmt: skip
                self._stopping.wait(pause)
                backoff = min(backoff * 2, LISTEN_BACKOFF_CAP_SECONDS)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()

    def _receive(self, conn: Any) -> None:
        quiet_since = time.monotonic()
        while not self._stopping.is_set():
            for _ in conn.notifies(timeout=LISTEN_POLL_SECONDS):
                quiet_since = time.monotonic()
                call_listener(self._callback)
                if self._stopping.is_set():
                    return
            if time.monotonic() - quiet_since >= LISTEN_PING_SECONDS:
                conn.execute("SELECT 1")  # a dead connection fails here and is re-made
                quiet_since = time.monotonic()


def nothing() -> None:
    """The stop function of a listener that was never started."""
