"""Controller events: widgets, the status table and persistence observe a queue through
these instead of the queue knowing about them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from nbqueue.task import Task

log = logging.getLogger("nbqueue")

#: added, dispatched, started, progress, output, retrying, requeued, finished, removed,
#: cleared, shutdown. ``task`` is None for cleared and shutdown.
EventKind = Literal[
    "added", "dispatched", "started", "progress", "output", "retrying", "requeued",
    "finished", "removed", "cleared", "shutdown",
]  # fmt: skip
Listener = Callable[[str, "Task[Any] | None"], None]


class Events:
    """A list of listeners called synchronously, on the controller's loop, with the
    controller's lock held: a listener must be quick and must not call back into the queue
    (record what changed and act on it later, as the dashboard does)."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(kind, task)`` on every event; returns a function that
        unsubscribes."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def emit(self, kind: EventKind, task: Task[Any] | None = None) -> None:
        for listener in tuple(self._listeners):  # views unsubscribe from their own thread
            try:
                listener(kind, task)
            except Exception:  # a broken observer must not break the queue
                log.exception("nbqueue event listener %r failed on %s", listener, kind)

    def __bool__(self) -> bool:
        return bool(self._listeners)
