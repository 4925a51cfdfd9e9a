"""Execution backends: where a queue's tasks run (local worker processes, Dask)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nbqueue.backends.base import BackendSink, ExecutionBackend, WorkerInfo
from nbqueue.backends.inprocess import InProcessBackend
from nbqueue.backends.local import LocalBackend

if TYPE_CHECKING:
    from nbqueue.backends.dask import DaskBackend

__all__ = [
    "BackendSink",
    "DaskBackend",
    "ExecutionBackend",
    "InProcessBackend",
    "LocalBackend",
    "WorkerInfo",
]


def __getattr__(name: str) -> Any:
    # DaskBackend is looked up lazily: importing nbqueue must not import dask (an optional
    # dependency, and a slow import).
    if name == "DaskBackend":
        from nbqueue.backends.dask import DaskBackend

        return DaskBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
