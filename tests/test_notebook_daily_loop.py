"""notebooks/daily-loop.ipynb in real Jupyter kernels: a sweep with keys, a failure shown
with its output and its traceback (the notebook's own source line in it), a results table
and a plot; then the kernel is killed and the cells after the ``restart-kernel`` tag run in
a fresh kernel, which recomputes nothing that finished."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nbformat
import pytest
from helpers import mimetypes_of, text_of
from kernels import kill_and_restart
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "daily-loop.ipynb"

pytestmark = pytest.mark.timeout(300)


def cell_with(
    nb: nbformat.NotebookNode, needle: str, *, last: bool = False
) -> nbformat.NotebookNode:
    found = [c for c in nb.cells if c.cell_type == "code" and needle in c.source]
    assert found, needle
    return found[-1] if last else found[0]


def test_the_daily_loop_notebook(tmp_path: Path) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(c.get("outputs", []) == [] for c in nb.cells if c.cell_type == "code")
    [restart] = [c for c in nb.cells if "restart-kernel" in c.metadata.get("tags", [])]
    client = NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )

    async def run() -> None:
        async with client.async_setup_kernel():
            for index, cell in enumerate(nb.cells):
                if cell is restart:
                    await kill_and_restart(client)
                await client.async_execute_cell(cell, index)  # raises on an unexpected error

    asyncio.run(run())

    summary = text_of(cell_with(nb, "summary = queue.wait()"))
    assert "5 completed, 1 failed" in summary and "diverged" in summary
    assert "alpha=1.0 depth=4 step=4" in text_of(cell_with(nb, "print(failed.output)"))
    error = next(o for o in cell_with(nb, "failed.result()").outputs if o.output_type == "error")
    shown = "\n".join(error.traceback)
    assert error.ename == "ValueError" and "diverged" in error.evalue
    # the worker's side, with the notebook's own source line, not nbqueue's frames
    assert 'raise ValueError(f"diverged' in shown and "in fit" in shown
    assert "runner.py" not in shown and "attempt.py" not in shown
    table = text_of(cell_with(nb, 'results[["key", "alpha", "depth", "score"]]'))
    assert table.count("fit-") == 5
    assert "image/png" in mimetypes_of(cell_with(nb, ".plot("))
    # after the restart: only the configuration that had failed ran again
    assert "1 fit(s) ran again" in text_of(cell_with(nb, "ran_again", last=True))
