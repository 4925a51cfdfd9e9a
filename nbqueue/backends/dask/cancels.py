"""The controller's side of stopping attempts on Dask: the keys of attempts that must stop
are published on the backend's cancel topic, and published again until those attempts have
ended (a worker that subscribed late still hears them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nbqueue.backends.dask import wire

if TYPE_CHECKING:
    from nbqueue.backends.dask.bridge import Bridge

#: The controller repeats a cancellation this often until the attempt has ended.
CANCEL_RESEND_SECONDS = 1.0
#: The cancellation of an attempt stopped before it reported starting, or lost with its
#: worker, is repeated this long, so that a run Dask had already begun still hears it.
UNSEEN_CANCEL_SECONDS = 30.0


class Cancellations:
    """The cancelled attempts of one backend whose thread may still run. Called on the
    controller's loop with the lock held."""

    def __init__(self, client: Any, bridge: Bridge, topic: str) -> None:
        self._client, self._bridge = client, bridge
        self._topic = wire.cancel_topic(topic)
        self._flagged: set[str] = set()
        self._resending = False

    def raise_flags(self, keys: list[str]) -> None:
        """Publish cancellations, and keep repeating them until those attempts end."""
        self._flagged.update(keys)
        self._publish(keys)
        if not self._resending:
            self._resending = True
            self._bridge.later(CANCEL_RESEND_SECONDS, self._resend)

    def clear(self, *keys: str) -> None:
        """Stop repeating the cancellations of attempts that have ended."""
        self._flagged.difference_update(keys)

    def clear_later(self, key: str) -> None:
        """Stop repeating the cancellation of an attempt whose end will not be seen, once a
        run Dask had already begun has surely heard it."""
        self._bridge.later(UNSEEN_CANCEL_SECONDS, self.clear, key)

    def _publish(self, keys: list[str]) -> None:
        client, topic = self._client, self._topic
        self._bridge.io(lambda: client.log_event(topic, keys))

    def _resend(self) -> None:
        if not self._flagged:
            self._resending = False
            return
        self._publish(sorted(self._flagged))
        self._bridge.later(CANCEL_RESEND_SECONDS, self._resend)
