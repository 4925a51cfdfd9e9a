"""Shared fixtures: every test ends with no child process left behind."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest


def _children() -> list[psutil.Process]:
    """Live descendants, except multiprocessing's resource tracker: one per interpreter,
    started by the first spawn and gone when the interpreter exits."""
    alive = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(
                child.cmdline()
            ):
                alive.append(child)
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.fixture(autouse=True)
def no_leftover_children() -> Iterator[None]:
    """Fail a test that leaves a child process running (after a bounded grace period)."""
    before = {p.pid for p in _children()}
    yield
    deadline = time.monotonic() + 10
    while True:
        left = [p for p in _children() if p.pid not in before]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for p in left:
        p.kill()
    assert not left, f"child processes left behind: {[p.cmdline() for p in left]}"


@pytest.fixture
def task_dir(tmp_path: Path) -> Path:
    """An empty task directory."""
    d = tmp_path / "tasks"
    d.mkdir()
    return d


@pytest.fixture
def marker_dir(tmp_path: Path) -> Path:
    """A directory where tasks leave side effects for the test to observe."""
    d = tmp_path / "markers"
    d.mkdir()
    return d
