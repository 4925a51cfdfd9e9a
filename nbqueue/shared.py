"""Big inputs, sent once: ``handle = queue.put(obj)`` pickles ``obj`` once, and a task that
takes the handle (as an argument of ``submit``/``map``, or anywhere in its ``data``) gets the
object itself in its worker. Each worker process receives the object once and keeps one
copy, whatever the number of tasks that use it.

A handle pickles as a reference to its object (its content hash); :func:`collecting` tells
the caller which objects a pickle refers to, so that they can be sent ahead of it.
"""

from __future__ import annotations

import contextlib
import pickle
import threading
from collections.abc import Iterator
from typing import Any

from nbqueue.errors import SerializationError

_local = threading.local()
_lock = threading.Lock()
#: This process's shared objects by content hash: what queue.put() was given (in the
#: controller's process), or what was received (in a worker).
_objects: dict[str, Any] = {}


class Shared:
    """A handle to an object given to ``Queue.put``: pass it to tasks instead of the object;
    each task receives the object itself. Keep the handle while tasks may use it."""

    __slots__ = ("__weakref__", "_payload", "digest", "size")

    def __init__(self, digest: str, payload: bytes) -> None:
        #: The content hash of the pickled object.
        self.digest = digest
        #: The size of the pickled object, in bytes.
        self.size = len(payload)
        self._payload = payload

    def __repr__(self) -> str:
        return f"<nbqueue.Shared {self.digest[:8]}, {self.size:,} bytes pickled>"

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        if getattr(_local, "inline", False):  # a database row: the object itself, durable
            return (restore, (self.digest, self._payload))
        needed: set[str] | None = getattr(_local, "needed", None)
        if needed is not None:
            needed.add(self.digest)
        return (resolve, (self.digest,))


class collecting:
    """``with collecting() as needed:`` the content hashes of the shared objects pickled
    inside the block (this thread). (A class, not a generator: every add() enters one.)"""

    __slots__ = ("_needed", "_outer")

    def __enter__(self) -> set[str]:
        self._needed: set[str] = set()
        self._outer: set[str] | None = getattr(_local, "needed", None)
        _local.needed = self._needed
        return self._needed

    def __exit__(self, *exc_info: object) -> None:
        _local.needed = self._outer
        if self._outer is not None:
            self._outer.update(self._needed)


@contextlib.contextmanager
def inline() -> Iterator[None]:
    """Handles pickled inside the block (this thread) carry their object: for a database
    row, which other processes and a restarted kernel read without this process's cache."""
    _local.inline = True
    try:
        yield
    finally:
        _local.inline = False


def provide(digest: str, obj: Any) -> None:
    """Make ``obj`` this process's shared object for ``digest``."""
    with _lock:
        _objects[digest] = obj


def has(digest: str) -> bool:
    return digest in _objects


def forget(digest: str) -> None:
    """Let go of a shared object (its handle is gone)."""
    with _lock:
        _objects.pop(digest, None)


def restore(digest: str, payload: bytes) -> Any:
    """A handle pickled with its object (:func:`inline`), unpickled: the object, once per
    process."""
    if digest not in _objects:
        provide(digest, pickle.loads(payload))
    return _objects[digest]


def resolve(digest: str) -> Any:
    """The object a handle stands for, in this process (what unpickling a handle gives)."""
    try:
        return _objects[digest]
    except KeyError:
        raise SerializationError(
            f"the shared object {digest[:8]} (queue.put()) was not sent to this process"
        ) from None
