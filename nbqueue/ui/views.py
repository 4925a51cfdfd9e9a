"""What ``queue.dashboard()`` and ``%nbqueue status`` return, and a task's live bar for
IPython's display: the live widget in a notebook kernel, a snapshot (text and HTML)
elsewhere."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from nbqueue.errors import WidgetsUnavailableError
from nbqueue.ui import dashboard as live
from nbqueue.ui import figures, frame, html, text, widgets

if TYPE_CHECKING:
    import pandas

    from nbqueue.queue import Queue
    from nbqueue.task import Task


def in_kernel() -> bool:
    """True inside a Jupyter kernel (where widgets can be shown). Never imports IPython:
    when it is not imported, this is no kernel."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class TextDashboard:
    """A snapshot of a queue, for when the live widget cannot be shown (outside a notebook,
    or without ipywidgets). ``print()`` it for text; a notebook renders it as HTML. Each
    ``str()`` / display reads the queue afresh."""

    def __init__(self, queue: Queue, reason: str) -> None:
        self.queue = queue
        self.reason = reason

    def __str__(self) -> str:
        return text.snapshot(self.queue, self.queue.get_task_statuses())

    def __repr__(self) -> str:
        return f"{self}\n({self.reason})"

    def _repr_html_(self) -> str:
        snapshots = self.queue.get_task_statuses()
        failed = html.failures(figures.failures(snapshots, text.FAILURE_ROWS))
        return (
            html.queue_summary(self.queue, snapshots)
            + (f"<div>{failed}</div>" if failed else "")
            + f"<div>{html.muted(html.esc(self.reason), '11px')}</div>"
        )


def dashboard(queue: Queue) -> Any:
    """The live widget dashboard in a notebook kernel; a :class:`TextDashboard` snapshot
    outside one, or when ipywidgets is missing (the snapshot says why)."""
    if not in_kernel():
        return TextDashboard(
            queue,
            "a snapshot: the live dashboard needs a Jupyter notebook; print it again to refresh",
        )
    try:
        return live.Dashboard(queue)
    except WidgetsUnavailableError as exc:
        return TextDashboard(queue, str(exc))


class StatusView:
    """What ``%nbqueue status`` shows: counts per status and the status table, as HTML in a
    notebook and as text elsewhere. ``.frame`` is the full DataFrame."""

    def __init__(self, frame: pandas.DataFrame, summary: figures.Summary) -> None:
        self.frame = frame
        self.summary = summary

    def _repr_html_(self) -> str:
        summary = self.summary
        return (
            f"<div>{html.counts(summary)} · {summary.finished_text}</div>"
            f"{html.status_table(self.frame)}"
        )

    def __repr__(self) -> str:
        summary = self.summary
        head = f"{summary.counts_text}: {summary.finished_text}"
        if not len(self.frame):
            return head
        return f"{head}\n" + text.status_table(
            self.frame, text.SHORT_COLUMNS, limit=text.TABLE_ROWS
        )


def status_view(queue: Queue) -> StatusView:
    """The status of ``queue`` for ``%nbqueue status`` (one snapshot of its tasks)."""
    snapshots = queue.get_task_statuses()
    return StatusView(frame.status_frame(snapshots), figures.summarize(snapshots))


def task_mimebundle(task: Task[Any]) -> dict[str, Any] | None:
    """A live progress-bar widget for ``task`` in a notebook kernel with ipywidgets, plus
    the static HTML; None elsewhere (IPython then uses the HTML formatter)."""
    if not in_kernel():
        return None
    try:
        view = widgets.TaskProgress(task)
    except WidgetsUnavailableError:
        return None
    bundle: dict[str, Any] = dict(view._repr_mimebundle_())
    bundle["text/html"] = html.task_summary(task.get_status())
    bundle["text/plain"] = repr(task)
    return bundle
