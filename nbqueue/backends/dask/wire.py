"""What the controller side and the worker side of the Dask backend agree on: the lazily
imported ``distributed``, the topic cancellations travel on, how a worker process is told
apart from another at the same address, and the outcome of an attempt that must not run."""

from __future__ import annotations

import importlib
import os
from typing import Any

from nbqueue.errors import ConfigurationError

INSTALL_HINT = 'pip install "nbqueue[dask]"'

#: The outcome of an attempt that found itself in another worker process than the one it
#: was submitted to: Dask re-ran it after that one died (a worker restarted at the same
#: address); it returns without running anything.
LOST = "lost"


def distributed() -> Any:
    """``distributed``, imported on first use (it is an optional dependency)."""
    try:
        return importlib.import_module("distributed")
    except ImportError as exc:
        raise ConfigurationError(
            f"DaskBackend needs dask.distributed, which is not installed ({exc}); install "
            f"it with: {INSTALL_HINT}"
        ) from exc


def cancel_topic(topic: str) -> str:
    """The topic the controller publishes cancelled attempt keys on."""
    return f"{topic}-cancel"


def worker_identity(dask_worker: Any) -> tuple[int, str]:
    """Run on a worker (``Client.run``): its process id, and its Dask id (unique to one
    worker process, unlike its address, which a restarted worker may take over)."""
    return os.getpid(), str(dask_worker.id)
