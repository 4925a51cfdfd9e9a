"""HTML for notebooks: status chips and bars, a task's one-line summary, a queue's summary
and the status table. Every figure comes from :mod:`nbqueue.ui.figures`."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from nbqueue.ui import figures
from nbqueue.ui import frame as ui_frame

if TYPE_CHECKING:
    import pandas

    from nbqueue.queue import Queue
    from nbqueue.records import TaskStatus

COLORS = {
    "pending": "#9e9e9e", "running": "#1e88e5", "retrying": "#fb8c00",
    "completed": "#43a047", "failed": "#e53935", "cancelled": "#757575",
}  # fmt: skip
GREY = "#757575"
#: Rows the HTML status table shows before it says how many it left out.
TABLE_ROWS = 50
#: An error's text in a table cell is shortened to this many characters (hover: all of it).
CELL_ERROR_WIDTH = 60
#: The columns the dashboard's table shows.
COMPACT_COLUMNS = (
    "uid", "name", "type", "status", "progress", "retry_count", "duration", "worker", "error",
)  # fmt: skip

_TABLE_CSS = (
    "border-collapse:collapse;font-size:12px;font-family:var(--jp-ui-font-family,sans-serif)"
)
_CELL_CSS = "padding:2px 8px;border-bottom:1px solid #e0e0e0;text-align:left;white-space:nowrap"


def esc(value: object) -> str:
    """``value`` as text, escaped for HTML (quotes included)."""
    return html.escape(str(value), quote=True)


def muted(text_html: str, size: str | None = None) -> str:
    """Grey (secondary) text; ``text_html`` is HTML already."""
    font = f";font-size:{size}" if size else ""
    return f'<span style="color:{GREY}{font}">{text_html}</span>'


def chip(status: str, text: str | None = None) -> str:
    """A coloured status label."""
    return (
        f'<span style="background:{COLORS.get(status, COLORS["pending"])};color:white;'
        f'border-radius:3px;padding:0 5px;font-size:11px">{esc(text or status)}</span>'
    )


def bar(percent: float, color: str, width: str = "160px") -> str:
    """A static progress bar."""
    percent = min(100.0, max(0.0, percent))
    return (
        f'<span style="background:#e8e8e8;width:{width};height:9px;display:inline-block;'
        f'vertical-align:middle;border-radius:2px"><span style="background:{color};'
        f'width:{percent:.1f}%;height:9px;display:block;border-radius:2px"></span></span>'
    )


def counts(summary: figures.Summary) -> str:
    """A chip per status that has tasks (``pending 2``), or "no tasks"."""
    parts = [chip(status, f"{status} {n:,}") for status, n in summary.nonzero]
    return " ".join(parts) if parts else muted("no tasks")


def error(text: str) -> str:
    """An error's text, in red monospace."""
    return f'<code style="color:{COLORS["failed"]}">{esc(text)}</code>'


def output(text: str) -> str:
    """A task's output, as preformatted text."""
    return f'<pre style="margin:0;max-height:20em;overflow:auto;font-size:11px">{esc(text)}</pre>'


def task_name(snapshot: TaskStatus) -> str:
    """``<b>name</b> <code>type</code>``."""
    return f"<b>{esc(snapshot.name)}</b> <code>{esc(snapshot.type)}</code>"


def task_info(snapshot: TaskStatus) -> str:
    """Status chip, percent, elapsed time and retries: what follows a task's bar."""
    took = figures.elapsed_text(snapshot)
    extra = [x for x in (took, figures.retries_text(snapshot)) if x]
    return f"{chip(snapshot.status.value)} {figures.percent_text(snapshot.progress)}" + (
        muted(" · " + " · ".join(extra)) if extra else ""
    )


def task_summary(snapshot: TaskStatus) -> str:
    """A task's one-line summary with a progress bar (a static picture: the live bar is
    :class:`nbqueue.ui.widgets.TaskProgress`)."""
    status = snapshot.status.value
    error_html = (
        f'<div style="color:{COLORS["failed"]};font-family:monospace;font-size:11px;'
        f'white-space:pre-wrap">{esc(snapshot.error)}</div>'
        if figures.shows_error(snapshot)
        else ""
    )
    return (
        f'<div class="nbqueue-task" title="uid {esc(snapshot.uid)}">{task_name(snapshot)} '
        f"{bar(snapshot.progress, COLORS.get(status, COLORS['pending']))} {task_info(snapshot)}"
        f"{error_html}</div>"
    )


def queue_summary(queue: Queue, snapshots: Sequence[TaskStatus]) -> str:
    """A queue's summary: state, overall progress, counts per status, types, workers."""
    summary = figures.summarize(snapshots)
    alive = figures.alive_workers(queue.workers())
    types = ", ".join(f"<code>{esc(t)}</code>" for t in queue.types) or "none yet"
    color = COLORS["failed"] if summary.counts["failed"] else COLORS["completed"]
    return (
        f'<div class="nbqueue-queue"><b>nbqueue.Queue</b> {muted(esc(queue.state))} · '
        f"{summary.total:,} tasks<br>{bar(summary.percent, color, '240px')} "
        f"{summary.finished_text}<br>{counts(summary)}<br>"
        f"{muted(f'types: {types} · workers: {alive} alive', '11px')}</div>"
    )


def failures(snapshots: Sequence[TaskStatus]) -> str:
    """A list of failed tasks with their error."""
    if not snapshots:
        return ""
    items = "".join(
        f"<li>{esc(s.name)} <code>{esc(s.type)}</code>: {error(s.error or '')}</li>"
        for s in snapshots
    )
    return f"<b>recent failures</b><ul style='margin:0'>{items}</ul>"


# -- the status table --------------------------------------------------------------------
def _time(value: Any) -> str:
    if value is None or value != value:  # None or NaT
        return ""
    local = value.to_pydatetime().astimezone() if hasattr(value, "to_pydatetime") else value
    return f'<span title="{esc(local.isoformat())}">{local:%H:%M:%S}</span>'


def _cell(column: str, value: Any) -> str:
    missing = value is None or (isinstance(value, float) and value != value)
    if column == "status":
        return chip(str(value))
    if column == "progress":
        return f"{bar(float(value), COLORS['running'], '60px')} {figures.percent_text(value)}"
    if column == "uid":
        return f'<code title="{esc(value)}">{esc(str(value)[:8])}</code>'
    if column in ("created_at", "started_at", "finished_at"):
        return _time(value)
    if column == "duration":
        return "" if missing else figures.seconds_text(float(value))
    if column == "error" and not missing:
        text = str(value)
        short = esc(figures.shorten(text, CELL_ERROR_WIDTH))
        return f'<span title="{esc(text)}" style="color:{COLORS["failed"]}">{short}</span>'
    return "" if missing else esc(value)


def status_table(
    frame: pandas.DataFrame,
    *,
    limit: int = TABLE_ROWS,
    columns: tuple[str, ...] | None = None,
) -> str:
    """A status frame (``queue.status_frame()``) as a compact HTML table: coloured status,
    progress bars, short uids (hover for the full one), local times, readable durations.
    Shows the first ``limit`` rows and says how many it left out; ``columns`` picks the
    columns (default: all but created_at)."""
    wanted = columns or tuple(c for c in frame.columns if c != "created_at")
    shown = frame.head(limit).to_dict("records")
    return _table(shown, tuple(c for c in wanted if c in frame.columns), len(frame) - len(shown))


def snapshot_table(snapshots: Sequence[TaskStatus], columns: tuple[str, ...]) -> str:
    """A few tasks as the same HTML table, straight from their snapshots (no pandas: the
    dashboard redraws it often)."""
    return _table(ui_frame.records(snapshots), columns, 0)


def _table(records: Sequence[Mapping[Any, Any]], columns: tuple[str, ...], left_out: int) -> str:
    if not records:
        return f'<div class="nbqueue-status">{muted("no tasks")}</div>'
    head = "".join(
        f'<th style="{_CELL_CSS};font-weight:600">{esc(c.replace("_", " "))}</th>' for c in columns
    )
    rows = "".join(
        "<tr>"
        + "".join(f'<td style="{_CELL_CSS}">{_cell(c, record[c])}</td>' for c in columns)
        + "</tr>"
        for record in records
    )
    note = f"{left_out:,} more row(s) not shown; <code>queue.status_frame()</code> has them all"
    return (
        f'<div class="nbqueue-status"><table style="{_TABLE_CSS}"><thead><tr>{head}</tr>'
        f"</thead><tbody>{rows}</tbody></table>"
        + (f"<div>{muted(note, '11px')}</div>" if left_out else "")
        + "</div>"
    )
