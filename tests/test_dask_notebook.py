"""notebooks/dask.ipynb, run top to bottom in a real Jupyter kernel (ipykernel, driven by
nbclient): the same workload on local worker processes and on a Dask LocalCluster, with the
same results, live progress and the dashboard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from helpers import html_of, text_of
from nbclient import NotebookClient

pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "dask.ipynb"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

pytestmark = pytest.mark.timeout(300)


class RecordingClient(NotebookClient):
    """Keeps the widget state updates it sees, with the index of the cell they came from."""

    def __init__(self, nb: Any, **kwargs: Any) -> None:
        super().__init__(nb, **kwargs)
        self.comm_log: list[tuple[int, str, dict[str, Any]]] = []

    def handle_comm_msg(self, outs: Any, msg: dict[str, Any], cell_index: int) -> None:
        data = msg["content"].get("data", {})
        if "state" in data:
            self.comm_log.append((cell_index, msg["content"]["comm_id"], dict(data["state"])))
        super().handle_comm_msg(outs, msg, cell_index)


def find_cell(nb: Any, needle: str) -> tuple[int, Any]:
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and needle in cell.source:
            return i, cell
    raise AssertionError(f"no code cell contains {needle!r}")


def test_dask_notebook_runs_the_same_workload_on_both_backends() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = RecordingClient(
        nb,
        timeout=180,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()
    errors = [
        f"cell {i}: {out.ename}: {out.evalue}"
        for i, cell in enumerate(nb.cells)
        for out in cell.get("outputs", [])
        if out.output_type == "error"
    ]
    assert not errors, errors

    _, local = find_cell(nb, "local_results = run(local_queue)")
    assert html_of(local).count("completed") == 6 and "nbqueue-worker-" in html_of(local)

    _, started = find_cell(nb, "DaskBackend(client)")
    assert "2 Dask workers, 4 threads" in text_of(started)

    _, dash = find_cell(nb, "dask_queue.dashboard()")
    assert any(WIDGET_VIEW in out.get("data", {}) for out in dash.outputs)

    run_index, ran = find_cell(nb, "dask_results = run(dask_queue)")
    frame = html_of(ran)
    assert frame.count("completed") == 6 and "tcp://127.0.0.1:" in frame
    assert "ConnectionError: the first attempt always fails" in frame  # flaky's history

    _, compared = find_cell(nb, "same results:")
    out = text_of(compared)
    assert "same results: True" in out
    assert "files: ['beach-800x600.jpg', 'beach-400x300.jpg']" in out
    assert "flaky: ok after 1 retry" in out
    # Progress streamed back from the Dask workers while the tasks ran: from the task that
    # sleeps between steps, and from the CPU-bound ones (one of them at least: on a loaded
    # machine a short one's reports may all be coalesced into its last, 100 %).
    live = out.split("live progress from:")[1]
    assert "compress beach" in live, out
    assert any(f"pi seed={seed}" in live for seed in range(4)), out

    _, status = find_cell(nb, "%nbqueue status")
    assert "completed 6" in text_of(status)
    _, workers = find_cell(nb, "%nbqueue workers")
    lines = [line for line in text_of(workers).splitlines() if line.startswith("tcp://")]
    assert len(lines) == 2 and all("running 0/2" in line for line in lines), lines

    # The dashboard's overall bar moved while the Dask run cell waited.
    overall = {
        comm_id
        for _, comm_id, state in client.comm_log
        if "nbqueue-overall" in state.get("_dom_classes", ())
    }
    during = [
        state["value"]
        for index, comm_id, state in client.comm_log
        if comm_id in overall and index == run_index and "value" in state
    ]
    assert any(0 < v < 100 for v in during), during
