"""Execution backends: where a queue's tasks run (local worker processes, Dask)."""

from nbqueue.backends.base import BackendSink, ExecutionBackend, WorkerInfo
from nbqueue.backends.local import LocalBackend

__all__ = ["BackendSink", "ExecutionBackend", "LocalBackend", "WorkerInfo"]
