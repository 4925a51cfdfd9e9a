"""Rich display for notebooks: HTML for Queue, Task and the status table, text snapshots
for terminals, and the choice between the live widget dashboard and its text fallback.

Everything here only reads a queue's public state; the live views are in
:mod:`nbqueue.widgets`.
"""

from __future__ import annotations

import datetime as dt
import html
from typing import TYPE_CHECKING, Any

from nbqueue.errors import WidgetsUnavailableError

if TYPE_CHECKING:
    import pandas

    from nbqueue.queue import Queue
    from nbqueue.task import Task

COLORS = {
    "pending": "#9e9e9e", "running": "#1e88e5", "retrying": "#fb8c00",
    "completed": "#43a047", "failed": "#e53935", "cancelled": "#757575",
}  # fmt: skip
#: Rows the HTML status table shows before it says how many it left out.
TABLE_ROWS = 50
#: Failures a dashboard or snapshot lists (the most recent ones).
FAILURE_ROWS = 5
#: Running tasks a text snapshot lists.
TEXT_RUNNING_ROWS = 10

_TABLE_CSS = (
    "border-collapse:collapse;font-size:12px;font-family:var(--jp-ui-font-family,sans-serif)"
)
_CELL_CSS = "padding:2px 8px;border-bottom:1px solid #e0e0e0;text-align:left;white-space:nowrap"


# -- small formatting helpers ------------------------------------------------------------
def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def seconds_text(seconds: float | None) -> str:
    """``0.4 s``, ``12 s``, ``3 min 05 s``, ``2 h 01 min``."""
    if seconds is None or seconds != seconds:  # None or NaN
        return ""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def elapsed(task: Task[Any]) -> float | None:
    """Seconds the task has run (so far, while running)."""
    if task.started_at is None:
        return None
    end = task.finished_at or dt.datetime.now(dt.timezone.utc)
    return max(0.0, (end - task.started_at).total_seconds())


def chip(status: str, text: str | None = None) -> str:
    """A coloured status label."""
    return (
        f'<span style="background:{COLORS.get(status, "#9e9e9e")};color:white;'
        f'border-radius:3px;padding:0 5px;font-size:11px">{esc(text or status)}</span>'
    )


def bar_html(percent: float, color: str, width: str = "160px") -> str:
    percent = min(100.0, max(0.0, percent))
    return (
        f'<span style="background:#e8e8e8;width:{width};height:9px;display:inline-block;'
        f'vertical-align:middle;border-radius:2px"><span style="background:{color};'
        f'width:{percent:.1f}%;height:9px;display:block;border-radius:2px"></span></span>'
    )


def text_bar(percent: float, width: int = 20) -> str:
    filled = round(width * min(100.0, max(0.0, percent)) / 100)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def counts_html(counts: dict[str, int]) -> str:
    parts = [chip(status, f"{status} {n:,}") for status, n in counts.items() if n]
    return " ".join(parts) if parts else '<span style="color:#757575">no tasks</span>'


def overall(counts: dict[str, int]) -> tuple[int, int, float]:
    """(finished, total, percent finished)."""
    total = sum(counts.values())
    done = counts.get("completed", 0) + counts.get("failed", 0) + counts.get("cancelled", 0)
    return done, total, (100.0 * done / total if total else 0.0)


def queue_state(queue: Queue) -> str:
    """ "running", "not started" or "shut down"."""
    return queue.state


# -- Task and Queue ----------------------------------------------------------------------
def task_html(task: Task[Any]) -> str:
    """A one-line summary with a progress bar (a static picture: the live widget comes with
    ``%load_ext nbqueue``, or ``nbqueue.widgets.TaskProgress(task)``)."""
    status = task.status.value
    took = seconds_text(elapsed(task))
    error = task.error
    error_html = (
        f'<div style="color:{COLORS["failed"]};font-family:monospace;font-size:11px;'
        f'white-space:pre-wrap">{esc(error)}</div>'
        if error is not None and status in ("failed", "retrying", "cancelled")
        else ""
    )
    retries = f" · retry {task.retry_count}/{task.max_retries}" if task.retry_count else ""
    return (
        f'<div class="nbqueue-task" title="uid {esc(task.uid)}"><b>{esc(task.name)}</b> '
        f"<code>{esc(task.type)}</code> {chip(status)} "
        f"{bar_html(task.progress, COLORS[status])} {task.progress:.0f}%"
        f'<span style="color:#757575">{" · " + took if took else ""}{retries}</span>'
        f"{error_html}</div>"
    )


def queue_html(queue: Queue) -> str:
    """The queue's summary: state, overall progress, counts per status, types, workers."""
    counts = queue.counts()
    done, total, percent = overall(counts)
    workers = queue.workers()
    alive = sum(1 for w in workers if w.alive)
    types = ", ".join(f"<code>{esc(t)}</code>" for t in queue.types) or "none yet"
    color = COLORS["failed"] if counts["failed"] else COLORS["completed"]
    return (
        f'<div class="nbqueue-queue"><b>nbqueue.Queue</b> '
        f'<span style="color:#757575">{esc(queue_state(queue))}</span> · {total:,} tasks<br>'
        f"{bar_html(percent, color, '240px')} {done:,}/{total:,} finished ({percent:.0f}%)<br>"
        f"{counts_html(counts)}<br>"
        f'<span style="color:#757575;font-size:11px">types: {types} · workers: {alive} '
        f"alive</span></div>"
    )


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
        return f"{bar_html(float(value), COLORS['running'], '60px')} {float(value):.0f}%"
    if column == "uid":
        return f'<code title="{esc(value)}">{esc(str(value)[:8])}</code>'
    if column in ("created_at", "started_at", "finished_at"):
        return _time(value)
    if column == "duration":
        return "" if missing else seconds_text(float(value))
    if column == "error" and not missing:
        text = str(value)
        short = text if len(text) <= 60 else text[:59] + "…"
        return f'<span title="{esc(text)}" style="color:{COLORS["failed"]}">{esc(short)}</span>'
    return "" if missing else esc(value)


#: The columns the dashboard's table shows.
COMPACT_COLUMNS = (
    "uid", "name", "type", "status", "progress", "retry_count", "duration", "worker", "error",
)  # fmt: skip


def status_table_html(
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
    columns = tuple(c for c in wanted if c in frame.columns)
    head = "".join(
        f'<th style="{_CELL_CSS};font-weight:600">{esc(c.replace("_", " "))}</th>' for c in columns
    )
    rows = []
    for record in frame.head(limit).to_dict("records"):
        cells = "".join(f'<td style="{_CELL_CSS}">{_cell(c, record[c])}</td>' for c in columns)
        rows.append(f"<tr>{cells}</tr>")
    more = len(frame) - min(len(frame), limit)
    note = (
        f'<div style="color:#757575;font-size:11px">{more:,} more row(s) not shown; '
        "<code>queue.status_frame()</code> has them all</div>"
        if more
        else ""
    )
    if not rows:
        return '<div class="nbqueue-status" style="color:#757575">no tasks</div>'
    return (
        f'<div class="nbqueue-status"><table style="{_TABLE_CSS}"><thead><tr>{head}</tr>'
        f"</thead><tbody>{''.join(rows)}</tbody></table>{note}</div>"
    )


class StatusView:
    """What ``%nbqueue status`` shows: counts per status and the status table, as HTML in a
    notebook and as text elsewhere. ``.frame`` is the full DataFrame."""

    def __init__(self, frame: pandas.DataFrame, counts: dict[str, int]) -> None:
        self.frame = frame
        self.counts = counts

    def _repr_html_(self) -> str:
        done, total, percent = overall(self.counts)
        return (
            f"<div>{counts_html(self.counts)} · {done:,}/{total:,} finished "
            f"({percent:.0f}%)</div>{status_table_html(self.frame)}"
        )

    def __repr__(self) -> str:
        done, total, percent = overall(self.counts)
        summary = ", ".join(f"{k} {v}" for k, v in self.counts.items() if v) or "no tasks"
        if not len(self.frame):
            return summary
        shown = self.frame[["uid", "name", "type", "status", "progress", "duration", "error"]]
        shown = shown.assign(uid=shown["uid"].str[:8])
        table = shown.head(TABLE_ROWS).to_string(index=False)
        more = len(self.frame) - min(len(self.frame), TABLE_ROWS)
        tail = f"\n... {more} more row(s); queue.status_frame() has them all" if more else ""
        return f"{summary} ({done}/{total} finished, {percent:.0f}%)\n{table}{tail}"


def status_view(queue: Queue) -> StatusView:
    return StatusView(queue.status_frame(), queue.counts())


# -- the dashboard -----------------------------------------------------------------------
def in_kernel() -> bool:
    """True inside a Jupyter kernel (where widgets can be shown)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def failures(tasks: list[Task[Any]], limit: int = FAILURE_ROWS) -> list[Task[Any]]:
    """The most recently failed tasks, newest first."""
    failed = [t for t in tasks if t.status.value == "failed"]
    epoch = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    failed.sort(key=lambda t: t.finished_at or epoch, reverse=True)
    return failed[:limit]


def text_snapshot(queue: Queue) -> str:
    """A queue's state as a few lines of text: overall bar, counts, running tasks, the
    latest failures."""
    tasks = queue.tasks
    counts = queue.counts()
    done, total, percent = overall(counts)
    lines = [
        f"nbqueue.Queue ({queue_state(queue)}): {total} tasks",
        f"{text_bar(percent)} {done}/{total} finished ({percent:.0f}%)",
        " · ".join(f"{k} {v}" for k, v in counts.items() if v) or "no tasks",
    ]
    running = [t for t in tasks if t.status.value == "running"]
    if running:
        lines.append(f"running ({len(running)}):")
        for t in running[:TEXT_RUNNING_ROWS]:
            lines.append(
                f"  {t.name[:30]:<30} {text_bar(t.progress, 10)} {t.progress:3.0f}%"
                f"  {seconds_text(elapsed(t))}"
            )
        if len(running) > TEXT_RUNNING_ROWS:
            lines.append(f"  ... and {len(running) - TEXT_RUNNING_ROWS} more")
    failed = failures(tasks)
    if failed:
        lines.append("recent failures:")
        lines.extend(f"  {t.name}: {t.error}" for t in failed)
    return "\n".join(lines)


class TextDashboard:
    """A snapshot of a queue, for when the live widget cannot be shown (outside a notebook,
    or without ipywidgets). ``print()`` it for text; a notebook renders it as HTML. Each
    ``str()`` / display reads the queue afresh."""

    def __init__(self, queue: Queue, reason: str) -> None:
        self.queue = queue
        self.reason = reason

    def __str__(self) -> str:
        return text_snapshot(self.queue)

    def __repr__(self) -> str:
        return f"{self}\n({self.reason})"

    def _repr_html_(self) -> str:
        failed = failures(self.queue.tasks)
        failed_html = "".join(
            f"<li><b>{esc(t.name)}</b>: <code>{esc(t.error)}</code></li>" for t in failed
        )
        return (
            f"{queue_html(self.queue)}"
            + (f"<div>recent failures:<ul>{failed_html}</ul></div>" if failed else "")
            + f'<div style="color:#757575;font-size:11px">{esc(self.reason)}</div>'
        )


def dashboard(queue: Queue) -> Any:
    """The live widget dashboard in a notebook kernel; a :class:`TextDashboard` snapshot
    outside one, or when ipywidgets is missing (the snapshot says why)."""
    if not in_kernel():
        return TextDashboard(
            queue,
            "a snapshot: the live dashboard needs a Jupyter notebook; print it again to refresh",
        )
    from nbqueue import widgets

    try:
        return widgets.Dashboard(queue)
    except WidgetsUnavailableError as exc:
        return TextDashboard(queue, str(exc))


def task_mimebundle(
    task: Task[Any], include: Any = None, exclude: Any = None
) -> dict[str, Any] | None:
    """A live progress-bar widget for ``task`` in a notebook kernel with ipywidgets, plus
    the static HTML; None elsewhere (IPython then uses ``_repr_html_``)."""
    if not in_kernel():
        return None
    from nbqueue import widgets

    try:
        view = widgets.TaskProgress(task)
    except WidgetsUnavailableError:
        return None
    bundle: dict[str, Any] = dict(view._repr_mimebundle_(include=include, exclude=exclude))
    bundle["text/html"] = task_html(task)
    bundle["text/plain"] = repr(task)
    return bundle
