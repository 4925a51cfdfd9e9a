"""The work every system runs, in an importable module so that every worker process (a
spawned child, an ``rq``/``celery``/``huey`` worker) imports it by reference."""

from __future__ import annotations

import os
import time
from typing import Any


# -- plain functions, for the peers ---------------------------------------------------------
def inc(x: int) -> int:
    return x + 1


def whoami(delay: float = 0.0) -> int:
    """The pid of the process that ran the call (after ``delay`` seconds)."""
    if delay:
        time.sleep(delay)
    return os.getpid()


def frame_rows(frame: Any) -> int:
    """The big shared input: a task that reads the object it was given."""
    return len(frame)


# -- nbqueue executors (a plain function ``fn(task)`` is an executor) -----------------------
def inc_task(task: Any) -> int:
    """W1-W4: the same ``x + 1`` as :func:`inc`; the result is ``{"value": x + 1, ...}``."""
    return task.data + 1  # type: ignore[no-any-return]


def progress_task(task: Any) -> int:
    """W5: report progress ``steps`` times, pausing ``pause`` seconds before each report."""
    steps, pause = task.data
    for i in range(1, steps + 1):
        if pause:
            time.sleep(pause)
        task.update_progress(100.0 * i / steps)
    return steps  # type: ignore[no-any-return]


def frame_rows_task(task: Any) -> int:
    """The big shared input for nbqueue: ``task.data`` is the object itself in the worker."""
    return len(task.data)
