"""The attempts of one Dask backend, as the controller tracks them: those in flight (by
task uid and by Dask key), and stopped ones whose thread may still run on a worker (they
keep a thread busy until they end or their worker goes)."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(eq=False)
class Attempt:
    uid: str
    key: str
    name: str
    future: Any
    address: str  # of the worker it was submitted to: it runs nowhere else
    started: bool = False  # it reported starting
    exited: bool = False  # its thread has ended (the future's value may still be on its way)
    cancel_requested: bool = False


class Attempts:
    """Called on the controller's loop with the lock held."""

    def __init__(self) -> None:
        self._by_uid: dict[str, Attempt] = {}
        self._by_key: dict[str, Attempt] = {}
        #: key -> worker address: stopped, its thread may still run there
        self.zombies: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._by_uid)

    def add(self, attempt: Attempt) -> None:
        self._by_uid[attempt.uid] = attempt
        self._by_key[attempt.key] = attempt

    def of_task(self, uid: str) -> Attempt | None:
        return self._by_uid.get(uid)

    def of_key(self, key: str) -> Attempt | None:
        return self._by_key.get(key)

    def all(self) -> list[Attempt]:
        return list(self._by_uid.values())

    def on(self, address: str) -> list[Attempt]:
        """The attempts submitted to the worker at ``address``."""
        return [a for a in self._by_uid.values() if a.address == address]

    def forget(self, attempt: Attempt) -> Any:
        """Stop tracking an attempt; returns its future (dropping the last reference to a
        future releases its key on the cluster)."""
        self._by_uid.pop(attempt.uid, None)
        self._by_key.pop(attempt.key, None)
        future, attempt.future = attempt.future, None
        return future

    def clear(self) -> list[Attempt]:
        """Forget every attempt in flight; returns them (with their futures)."""
        attempts = list(self._by_uid.values())
        self._by_uid.clear()
        self._by_key.clear()
        return attempts

    def zombies_on(self, address: str) -> list[str]:
        """Drop (and return) the keys of stopped attempts whose thread ran on ``address``."""
        keys = [key for key, where in self.zombies.items() if where == address]
        for key in keys:
            del self.zombies[key]
        return keys

    def load(self, *, started_only: bool = False) -> dict[str, int]:
        """Threads taken by address: attempts submitted there (or only those that reported
        starting) and stopped ones still running."""
        load: dict[str, int] = {}
        for attempt in self._by_uid.values():
            if attempt.started or not started_only:
                load[attempt.address] = load.get(attempt.address, 0) + 1
        for where in self.zombies.values():
            load[where] = load.get(where, 0) + 1
        return load
