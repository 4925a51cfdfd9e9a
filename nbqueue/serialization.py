"""Turning values into bytes and back: task data, results, executors.

Plain ``pickle`` is tried first (fast); values it cannot handle, and values that refer to
``__main__`` (classes and functions defined in a notebook, which a worker could not import),
go through cloudpickle, which pickles them by value.

Unpickling runs code: the pickles a database stores are signed and checked by
:mod:`nbqueue.signing` before anything here unpickles them.
"""

from __future__ import annotations

import hashlib
import pickle
from typing import Any

import cloudpickle

from nbqueue.errors import SerializationError

__all__ = ["PROTOCOL", "digest", "dumps", "dumps_by_value", "loads"]

PROTOCOL = pickle.HIGHEST_PROTOCOL


def dumps(value: Any, what: str = "value") -> bytes:
    """Pickle ``value``; raises SerializationError naming ``what`` when it cannot be."""
    try:
        data = pickle.dumps(value, PROTOCOL)
        if b"__main__" not in data:
            return data
    except Exception:
        pass
    try:
        return cloudpickle.dumps(value, PROTOCOL)  # type: ignore[no-any-return]
    except Exception as exc:
        raise SerializationError(
            f"{what} cannot be pickled ({type(exc).__name__}: {exc}); use plain Python objects, "
            "numpy arrays or DataFrames, or objects whose class is importable"
        ) from exc


def loads(data: bytes, what: str = "value") -> Any:
    """Unpickle bytes made by :func:`dumps`."""
    try:
        return pickle.loads(data)
    except Exception as exc:
        raise SerializationError(
            f"{what} cannot be unpickled ({type(exc).__name__}: {exc})"
        ) from exc


def dumps_by_value(obj: Any, what: str) -> bytes:
    """cloudpickle ``obj`` by value (for executors defined in a notebook)."""
    try:
        return cloudpickle.dumps(obj, PROTOCOL)  # type: ignore[no-any-return]
    except Exception as exc:
        raise SerializationError(f"{what} cannot be pickled ({type(exc).__name__}: {exc})") from exc


def digest(data: bytes) -> str:
    """Content hash used to cache shipped executors in workers."""
    return hashlib.sha256(data).hexdigest()[:32]
