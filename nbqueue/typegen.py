"""Typing stubs for a task directory (placeholder, replaced below)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def generate(directory: Path, specs: list[Any]) -> Path | None:
    return None
