"""notebooks/persistence.ipynb in real Jupyter kernels (ipykernel, driven by nbclient): the
cells before the one tagged ``restart-kernel`` run in a first kernel, which is then killed
with its queue running (as a crash or an out-of-memory kill would do it: no shutdown, no
atexit); the cells from there on run in a fresh kernel that finds every task in the SQLite
file, resumes what was left and finishes it."""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from pathlib import Path
from typing import Any

import nbformat
import psutil
import pytest
from helpers import still_alive, text_of
from kernels import kill_and_restart
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "persistence.ipynb"
RESTART_TAG = "restart-kernel"
CELL_TIMEOUT = 120

EMAILS = {"welcome ada", "welcome bob"}
IMAGES = {
    f"compress {name}" for name in ("beach", "forest", "city", "desert", "harbour", "mountain")
}
AFTER_RESTART = 'queue.status_frame()[["name", "type", "status", "progress"]]'
STATUS_ROW = re.compile(
    r"^\d+\s+(?P<name>.+?)\s+(?:test-task|compress-image)\s+"
    r"(?P<status>pending|running|retrying|completed|failed|cancelled)\b",
    re.MULTILINE,
)

pytestmark = pytest.mark.timeout(180)


def statuses(cell: Any) -> dict[str, str]:
    """Task name -> status, read from a status table's text form."""
    rows = {m["name"]: m["status"] for m in STATUS_ROW.finditer(text_of(cell))}
    assert rows, text_of(cell)
    return rows


def code_cell(nb: Any, source: str) -> Any:
    """The code cell whose source is exactly ``source``."""
    found = [c for c in nb.cells if c.cell_type == "code" and c.source.strip() == source]
    assert len(found) == 1, f"{len(found)} cells are {source!r}"
    return found[0]


def code_cell_with(nb: Any, needle: str) -> Any:
    return next(c for c in nb.cells if c.cell_type == "code" and needle in c.source)


def test_persistence_notebook_recovers_after_the_kernel_dies(tmp_path: Path) -> None:
    # The notebook's "../tasks" and its database file live in a copy, not in the repository.
    shutil.copytree(
        ROOT / "tasks",
        tmp_path / "tasks",
        ignore=shutil.ignore_patterns("__pycache__", "_nbqueue_types.pyi", ".nbqueue-types.hash"),
    )
    workdir = tmp_path / "notebooks"
    workdir.mkdir()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    restart_cells = [c for c in nb.cells if RESTART_TAG in c.metadata.get("tags", [])]
    assert len(restart_cells) == 1 and restart_cells[0].cell_type == "code"
    assert all(c.get("outputs", []) == [] for c in nb.cells if c.cell_type == "code")

    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
    )
    killed: list[psutil.Process] = []

    async def run() -> None:
        async with client.async_setup_kernel():
            for index, cell in enumerate(nb.cells):
                if cell is restart_cells[0]:
                    killed.extend(await kill_and_restart(client))
                await client.async_execute_cell(cell, index)  # raises on a cell error

    asyncio.run(run())

    # The first kernel's processes (the kernel, its worker) are gone.
    deadline = time.monotonic() + 10
    while still_alive(killed) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not still_alive(killed), [p.cmdline() for p in still_alive(killed)]

    # Before the restart: the emails (waited for) are done, the images were under way.
    before = statuses(code_cell_with(nb, "email.wait()"))
    assert before.keys() == EMAILS | IMAGES, before
    assert {before[name] for name in EMAILS} == {"completed"}
    assert any(before[name] != "completed" for name in IMAGES), before

    # After the restart, the new queue lists every task from the database: what had
    # completed still has, and work was left when the first kernel died.
    after_restart = statuses(code_cell(nb, AFTER_RESTART))
    assert after_restart.keys() == EMAILS | IMAGES, after_restart
    done_before = {name for name, status in before.items() if status == "completed"}
    assert {after_restart[name] for name in done_before} == {"completed"}, after_restart
    assert any(status != "completed" for status in after_restart.values()), after_restart

    # queue.wait() finished every task, and a result from before the restart is there.
    final = statuses(code_cell_with(nb, "queue.wait("))
    assert final == dict.fromkeys(EMAILS | IMAGES, "completed"), final
    result = text_of(code_cell_with(nb, "welcome_ada.result()"))
    assert "'processed': True" in result and "'sent_to': ['ada@example.com']" in result
    assert (workdir / "nbqueue-notebook.db").exists()
