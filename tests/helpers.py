"""Helpers for tests: polling with a deadline, task files, SQL, notebook cell outputs. Nothing
here needs Jupyter (``kernels.py`` does), so the portable core of the suite runs without it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa


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


def sql(url: str, statement: str, **params: object) -> list[sa.Row[tuple[object, ...]]]:
    """Run one statement on the database at ``url`` in its own transaction; its rows."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(statement), params)
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


# -- notebook cell outputs (nbformat cells run by nbclient) -------------------------------------
def text_of(cell: Any) -> str:
    """Everything a cell printed or returned, as text (errors included)."""
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type == "error":
            parts.append(f"{out.ename}: {out.evalue}")
        else:
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def html_of(cell: Any) -> str:
    """The HTML a cell displayed."""
    return "\n".join(out.get("data", {}).get("text/html", "") for out in cell.get("outputs", []))


def mimetypes_of(cell: Any) -> set[str]:
    """Every MIME type a cell displayed."""
    return {mime for out in cell.get("outputs", []) for mime in out.get("data", {})}


def still_alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return alive
