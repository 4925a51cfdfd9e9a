"""Rich display for notebooks: HTML for Queue and Task, and the dashboard."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbqueue.queue import Queue
    from nbqueue.task import Task

_COLORS = {
    "pending": "#9e9e9e", "running": "#1e88e5", "retrying": "#fb8c00",
    "completed": "#43a047", "failed": "#e53935", "cancelled": "#757575",
}  # fmt: skip


def _bar(percent: float, color: str) -> str:
    return (
        '<div style="background:#eee;width:200px;height:10px;display:inline-block;'
        f'vertical-align:middle"><div style="background:{color};width:{percent:.0f}%;'
        'height:10px"></div></div>'
    )


def task_html(task: Task[Any]) -> str:
    status = task.status.value
    error = f"<br><code>{html.escape(str(task.error))}</code>" if task.error else ""
    return (
        f"<div><b>{html.escape(task.name)}</b> <code>{html.escape(task.type)}</code> "
        f'<span style="color:{_COLORS[status]}">{status}</span> '
        f"{_bar(task.progress, _COLORS[status])} {task.progress:.0f}%{error}</div>"
    )


def queue_html(queue: Queue) -> str:
    counts = queue.counts()
    total = sum(counts.values())
    done = counts["completed"] + counts["failed"] + counts["cancelled"]
    parts = " · ".join(
        f'<span style="color:{_COLORS[k]}">{k} {v}</span>' for k, v in counts.items() if v
    )
    percent = 100.0 * done / total if total else 0.0
    return (
        f"<div><b>nbqueue.Queue</b> {total} tasks {_bar(percent, _COLORS['completed'])} "
        f"{done}/{total}<br>{parts or 'no tasks'}</div>"
    )


def dashboard(queue: Queue) -> Any:
    """A text summary; the live widget dashboard comes with the notebook extension."""
    return queue
