"""The live dashboard of a queue (``queue.dashboard()`` in a notebook)."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from nbqueue.ui import figures, html, text
from nbqueue.ui.widgets import UPDATE_INTERVAL, View, require_ipywidgets

if TYPE_CHECKING:
    from nbqueue.queue import Queue
    from nbqueue.records import TaskStatus

#: Running tasks the dashboard shows a bar for; the rest are counted.
RUNNING_ROWS = 8
#: Rows of the dashboard's status table.
TABLE_ROWS = 12
#: Failures the dashboard lists (the most recent ones).
FAILURE_ROWS = 5
#: The status table is the heaviest part; while tasks run it is redrawn at most this often.
TABLE_INTERVAL = 1.0


class Dashboard(View):
    """A live view of a queue: an overall bar with counts per status, a bar per running
    task (name, percent, elapsed), the most recent failures with their error, and a status
    table. Redraws at most every ``interval`` seconds whatever the number of tasks; each
    redraw reads the queue's tasks once (one list of status snapshots) and draws every
    part from it, so the bars, the counts and the table always agree.

    ``queue.dashboard()`` creates one in a notebook (it falls back to text elsewhere).
    """

    def __init__(
        self,
        queue: Queue,
        *,
        interval: float = UPDATE_INTERVAL,
        running_rows: int = RUNNING_ROWS,
        table_rows: int = TABLE_ROWS,
    ) -> None:
        w = require_ipywidgets()
        super().__init__(interval)
        self._queue_ref = weakref.ref(queue)
        self._table_rows = table_rows
        self._table_at = float("-inf")
        # Set by the listener (on the controller's thread) when the table may be stale.
        self._table_lock = threading.Lock()
        self._table_dirty = True
        self._percent = 0.0

        self._header = w.HTML()
        self._overall = w.FloatProgress(value=0.0, min=0.0, max=100.0)
        self._overall.layout.width = "50%"
        self._overall.add_class("nbqueue-overall")
        self._overall_text = w.HTML()
        self._counts = w.HTML()
        self._running_title = w.HTML()
        self._rows = [self._row(w) for _ in range(running_rows)]
        self._more = w.HTML()
        self._failures = w.HTML()
        self._table = w.HTML()
        self.widget = w.VBox(
            [
                self._header,
                w.HBox([self._overall, self._overall_text]),
                self._counts,
                self._running_title,
                *(row for row, _, _, _ in self._rows),
                self._more,
                self._failures,
                self._table,
            ]
        )
        self.widget.add_class("nbqueue-dashboard")
        self._subscribe(queue)
        self._flush()

    @staticmethod
    def _row(w: Any) -> tuple[Any, Any, Any, Any]:
        name = w.HTML(layout=w.Layout(width="30%", overflow="hidden"))
        bar = w.FloatProgress(value=0.0, min=0.0, max=100.0, layout=w.Layout(width="40%"))
        info = w.HTML(layout=w.Layout(width="25%"))
        row = w.HBox([name, bar, info], layout=w.Layout(display="none"))
        row.add_class("nbqueue-task-row")
        return row, name, bar, info

    def __str__(self) -> str:
        queue = self._queue_ref()
        if queue is None:
            return "nbqueue: the queue is gone"
        return text.snapshot(queue, queue.get_task_statuses())

    @property
    def percent(self) -> float:
        """Finished tasks in percent, as of the last completed redraw."""
        return self._percent

    def _on_event(self, kind: str, task: Any) -> None:
        if kind != "progress":
            with self._table_lock:
                self._table_dirty = True
        self._throttle.poke()

    def _redraw(self) -> bool:
        queue = self._queue_ref()
        if queue is None:
            self._header.value = "<b>nbqueue</b> · the queue is gone"
            self._stop()
            return False
        snapshots = queue.get_task_statuses()  # the one read of the tasks for this redraw
        summary = figures.summarize(snapshots)
        state = queue.state
        alive = figures.alive_workers(queue.workers())
        self._header.value = (
            f"<b>nbqueue</b> · {html.esc(state)} · {summary.total:,} tasks · {alive} worker(s)"
        )
        self._overall.value = summary.percent
        self._overall.bar_style = (
            ("warning" if summary.counts["failed"] else "success") if summary.all_done else ""
        )
        self._overall_text.value = f"&nbsp;{summary.finished_text}"
        self._counts.value = html.counts(summary)

        running = figures.running(snapshots)
        self._draw_running(running)
        self._failures.value = html.failures(figures.failures(snapshots, FAILURE_ROWS))

        # Durations of running tasks move on: redraw the table while they run, but at most
        # every TABLE_INTERVAL (the tick brings the deferred redraw).
        with self._table_lock:
            dirty, self._table_dirty = self._table_dirty, False
        now = time.monotonic()
        if dirty or running:
            if not running or now - self._table_at >= TABLE_INTERVAL:
                self._table_at = now
                self._table.value = self._table_html(snapshots, running, summary.total)
            else:
                with self._table_lock:
                    self._table_dirty = True
        self._percent = summary.percent
        if state == "shut down":
            self._stop()
            return False
        return bool(running)

    def _draw_running(self, running: list[TaskStatus]) -> None:
        self._running_title.value = f"<b>running</b> ({len(running)})" if running else ""
        for i, (row, name, bar, info) in enumerate(self._rows):
            if i < len(running):
                s = running[i]
                name.value = f"{html.esc(s.name)} <code>{html.esc(s.type)}</code>"
                bar.value = float(s.progress)
                took = figures.elapsed_text(s)
                line = figures.last_lines(s.output, figures.ROW_OUTPUT_LINES)
                info.value = (
                    f"&nbsp;{figures.percent_text(s.progress)}"
                    + (f" · {took}" if took else "")
                    + (html.muted(" · " + html.esc(figures.shorten(line, 60))) if line else "")
                )
                row.layout.display = None
            else:
                row.layout.display = "none"
        extra = len(running) - len(self._rows)
        self._more.value = html.muted(f"+{extra} more running") if extra > 0 else ""

    def _table_html(
        self, snapshots: Sequence[TaskStatus], running: list[TaskStatus], total: int
    ) -> str:
        """A bounded table: running tasks, then the next to run, then the latest to finish."""
        limit = self._table_rows
        rows = running[:limit]
        rows += figures.next_to_run(snapshots, min(limit - len(rows), limit // 2))
        rows += figures.latest_finished(snapshots, limit - len(rows))
        if not rows:
            return ""
        table = html.snapshot_table(rows, html.COMPACT_COLUMNS)
        note = html.muted(
            f"{len(rows)} of {total:,} tasks: running, next to run, latest finished. "
            "<code>queue.status_frame()</code> has them all.",
            "11px",
        )
        return f"{table}<div>{note}</div>"
