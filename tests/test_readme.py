"""The README's quick start runs as pasted, in a real Jupyter kernel: in a fresh folder and
in the checkout."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from helpers import text_of
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

pytestmark = pytest.mark.timeout(300)


def quick_start_blocks() -> list[str]:
    """The Python blocks of the README's "Quick start" section, in order."""
    text = README.read_text()
    section = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_quick_start_has_code() -> None:
    blocks = quick_start_blocks()
    assert len(blocks) >= 5 and "queue.submit(" in blocks[0]


@pytest.mark.parametrize("where", ["a fresh folder", "the checkout"])
def test_the_quick_start_runs_as_pasted(where: str, tmp_path: Path) -> None:
    cwd = tmp_path if where == "a fresh folder" else ROOT
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(block) for block in quick_start_blocks()]
    NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute()  # raises on the first cell that fails
    outputs = [text_of(cell) for cell in nb.cells]
    assert "'score': 0.967" in outputs[0]
    assert "5 completed" in outputs[1]
    assert "fit-0.4" in outputs[2]  # the results table has the keys
    assert "sent to ada@example.com" in "\n".join(outputs)
