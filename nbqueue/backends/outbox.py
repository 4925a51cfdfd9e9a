"""The outbox of a worker, local process or Dask worker alike: what its tasks report
(started, progress, output, results) is queued here and sent to the controller in batches,
so that a tight progress or print loop costs a bounded number of messages.

Order is kept. A progress report still waiting to be sent is updated in place rather than
queued again, and output still waiting is extended in place. Who sends a batch, and when:

- :meth:`Outbox.put` queues a message and wakes the sending thread (:meth:`Outbox.run`),
  which sends at once, or after :data:`COALESCE_SECONDS` when only progress and output
  wait;
- :meth:`Outbox.deliver` sends at once from the calling thread, with everything queued
  before, and returns when the message is on its way: a task's result does not wait for
  another thread to wake up;
- :meth:`Outbox.later` queues without waking the sending thread: the message leaves with
  the next batch (a local worker's sending thread also sends every so often while tasks
  run, see :meth:`Outbox.send_due`); :meth:`Outbox.flush` sends what is queued at once.

How a batch travels is the one part that differs: :class:`PipeOutbox` writes it to a local
worker's pipe, :class:`DaskOutbox` sends it with ``Worker.log_event``. Messages are those
of :mod:`nbqueue.protocol`.
"""

from __future__ import annotations

import abc
import logging
import os
import pickle
import threading
from collections.abc import Hashable
from multiprocessing.connection import Connection
from typing import Any

from nbqueue import config, protocol, serialization
from nbqueue.backends import frames

log = logging.getLogger("nbqueue")

#: A batch of nothing but progress and output waits this long for more.
COALESCE_SECONDS = 0.02


class _Progress:
    """A progress report waiting in the outbox; later reports overwrite its value."""

    __slots__ = ("key", "value")

    def __init__(self, key: str, value: float) -> None:
        self.key, self.value = key, value

    def message(self) -> tuple[Any, ...]:
        return (protocol.PROGRESS, self.key, self.value)


class _Output:
    """Output of one task waiting in the outbox; later output is appended to it. Only its
    last OUTPUT_LIMIT + 1 characters are kept: the controller keeps the last OUTPUT_LIMIT
    of a task's output, and sees that some was dropped."""

    __slots__ = ("key", "parts", "size")

    def __init__(self, key: str, text: str) -> None:
        self.key, self.parts, self.size = key, [text], len(text)

    def append(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)
        if self.size > 2 * config.OUTPUT_LIMIT:  # (not on every append: a join costs)
            self.parts = [self.text()]
            self.size = len(self.parts[0])

    def text(self) -> str:
        return "".join(self.parts)[-(config.OUTPUT_LIMIT + 1) :]

    def message(self) -> tuple[Any, ...]:
        return (protocol.OUTPUT, self.key, self.text())


class Outbox(abc.ABC):
    """Messages waiting to go to the controller. Every method may be called from any
    thread. A message goes on a ``channel`` (a Dask topic; None for a pipe), and each batch
    is sent once per channel."""

    def __init__(self) -> None:
        # _lock is _cond's: taken alone (it is cheaper) unless the thread waits or notifies.
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._pending: dict[Hashable, list[Any]] = {}
        self._progress: dict[tuple[Hashable, str], _Progress] = {}
        self._output: dict[tuple[Hashable, str], _Output] = {}
        self._urgent = self._woken = False
        # Batches are taken and sent under _send_lock, so they leave in the order they
        # were taken, whichever thread sends them. _queued counts urgent messages queued,
        # _sent how many of them had been taken when the last batch was.
        self._send_lock = threading.Lock()
        self._queued = self._sent = 0

    def start(self, name: str) -> None:
        """Start the sending thread (a daemon: the process may exit at any time)."""
        threading.Thread(target=self.run, name=name, daemon=True).start()

    def put(self, message: Any, channel: Hashable = None) -> None:
        """Queue a message, to be sent at once by the sending thread."""
        with self._lock:
            self._append(message, channel)
            self._cond.notify()

    def later(self, message: Any, channel: Hashable = None) -> None:
        """Queue a message to go with the next batch, without waking the sending thread
        (the caller sees to it that a batch leaves soon: see :meth:`flush`)."""
        with self._lock:
            self._pending.setdefault(channel, []).append(message)

    def deliver(self, message: Any, channel: Hashable = None) -> None:
        """Send ``message`` (after everything queued before it) from this thread; returns
        once it has been sent, by this thread or by another that took it along."""
        with self._lock:
            ticket = self._append(message, channel)
        with self._send_lock:
            if self._sent < ticket:
                self._send_batch()

    def progress(self, key: str, value: float, channel: Hashable = None) -> None:
        """Queue ``(PROGRESS, key, value)``, or update the one still waiting for ``key``."""
        with self._lock:
            waiting = self._progress.get((channel, key))
            if waiting is not None:
                waiting.value = value
                return
            self._progress[(channel, key)] = report = _Progress(key, value)
            self._coalesced(report, channel)

    def output(self, key: str, text: str, channel: Hashable = None) -> None:
        """Queue ``(OUTPUT, key, text)``, or append ``text`` to the one still waiting."""
        with self._lock:
            waiting = self._output.get((channel, key))
            if waiting is not None:
                waiting.append(text)
                return
            self._output[(channel, key)] = report = _Output(key, text)
            self._coalesced(report, channel)

    def flush(self) -> None:
        """Send what is queued now, from this thread (for a process with no sending
        thread of its own)."""
        with self._send_lock:
            self._send_batch()

    def run(self) -> None:
        """Send batches, forever."""
        while True:
            self.send_due(None)

    def send_due(self, idle_timeout: float | None) -> None:
        """One turn of a sending thread: wait for something to send (at most
        ``idle_timeout`` seconds; None: until something comes, or :meth:`wake`), give
        progress and output that just came alone COALESCE_SECONDS for company, and send
        what waits."""
        with self._lock:
            timed_out = False
            if not self._pending and not self._woken:
                timed_out = not self._cond.wait(idle_timeout)
            self._woken = False
            if self._pending and not self._urgent and not timed_out:
                self._cond.wait(COALESCE_SECONDS)
        self.flush()

    def wake(self) -> None:
        """End the wait of :meth:`send_due` now, or the next one if none waits."""
        with self._lock:
            self._woken = True
            self._cond.notify()

    def _append(self, message: Any, channel: Hashable) -> int:
        """Queue an urgent message (_lock held); its ticket."""
        self._pending.setdefault(channel, []).append(message)
        self._urgent = True
        self._queued += 1
        return self._queued

    def _coalesced(self, report: _Progress | _Output, channel: Hashable) -> None:
        """Queue a report that later ones update in place (_lock held)."""
        if not self._pending:  # else the sender is awake, or coalescing: let it wait
            self._cond.notify()
        self._pending.setdefault(channel, []).append(report)

    def _send_batch(self) -> None:
        """Take everything queued and send it (``_send_lock`` held)."""
        with self._lock:
            batch = self._pending
            if not batch:
                return
            self._pending, self._progress, self._output = {}, {}, {}
            self._urgent, self._sent = False, self._queued
        for channel, messages in batch.items():
            self._send(
                channel,
                [m.message() if isinstance(m, (_Progress, _Output)) else m for m in messages],
            )

    @abc.abstractmethod
    def _send(self, channel: Hashable, messages: list[Any]) -> None:
        """Send one batch of one channel to the controller."""


class PipeOutbox(Outbox):
    """A local worker process's outbox: one pickled list per batch on its pipe."""

    def __init__(self, conn: Connection) -> None:
        super().__init__()
        self._conn = conn

    def _send(self, channel: Hashable, messages: list[Any]) -> None:
        try:
            frames.send(self._conn, pickle.dumps(messages, serialization.PROTOCOL))
        except OSError:
            os._exit(0)  # the controller is gone


class DaskOutbox(Outbox):
    """A Dask worker's outbox: one ``Worker.log_event`` per topic and batch."""

    def __init__(self, worker: Any) -> None:
        super().__init__()
        self.worker = worker

    def _send(self, channel: Hashable, messages: list[Any]) -> None:
        try:
            self.worker.log_event(channel, messages)
        except Exception:  # the worker is closing; nothing to report to
            log.debug("nbqueue: could not send %d message(s)", len(messages))
