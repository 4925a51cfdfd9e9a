"""Helpers for tests: polling with a deadline, writing task files."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path


def poll(condition: Callable[[], object], timeout: float = 30.0, interval: float = 0.02) -> None:
    """Wait until ``condition()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {condition}")
        time.sleep(interval)


def write_task(directory: Path, task_type: str, body: str) -> Path:
    """Write a task file ``<task_type>.py`` whose executor class has ``body`` as its body."""
    path = directory / f"{task_type}.py"
    path.write_text(
        "from nbqueue import TaskExecutor, Task, has_property\n"
        "import os, time, asyncio\n\n"
        f"class Executor(TaskExecutor):\n{body}\n"
    )
    return path
