"""Live ipywidgets views of a queue: the dashboard and a per-task progress bar.

The views only draw. They observe the controller through ``queue.events``; a listener
records what changed and asks a :class:`Throttle` for a redraw, which runs later on the
event loop at a bounded rate (:data:`UPDATE_INTERVAL`), so ten thousand tasks cost the
front end no more messages than ten. The views hold weak references to the queue and its
tasks: a dashboard never keeps a queue alive.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nbqueue import display
from nbqueue.errors import WidgetsUnavailableError

if TYPE_CHECKING:
    from nbqueue.queue import Queue
    from nbqueue.task import Task

#: Shortest time between two redraws of one view (at most ~10 updates per second).
UPDATE_INTERVAL = 0.1
#: While tasks run, redraw this often even without events (elapsed times move on).
TICK_SECONDS = 1.0
#: The status table is the heaviest part; it is redrawn at most this often.
TABLE_INTERVAL = 1.0
#: Running tasks the dashboard shows a bar for; the rest are counted.
RUNNING_ROWS = 8
#: Rows of the dashboard's status table.
TABLE_ROWS = 12


def require_ipywidgets() -> Any:
    """The ipywidgets module, or a clear error saying how to get it."""
    try:
        import ipywidgets
    except ImportError as exc:
        raise WidgetsUnavailableError() from exc
    return ipywidgets


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Throttle:
    """Calls ``flush`` on ``loop`` at most once per ``interval`` seconds however often
    :meth:`poke` is called, from any thread. Each flush runs in an empty context, so in a
    Jupyter kernel its messages belong to the cell running now (or the last one), not to
    whichever cell happened to start the callback chain."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, flush: Callable[[], None], interval: float
    ) -> None:
        self.loop = loop
        self.interval = interval
        self._flush = flush
        self._lock = threading.Lock()
        self._scheduled = False
        self._closed = False
        self._last = float("-inf")
        #: monotonic start times of the most recent flushes (for tests and curiosity).
        self.history: deque[float] = deque(maxlen=1000)

    def poke(self) -> None:
        """Ask for a flush: soon, but not sooner than ``interval`` after the last one."""
        with self._lock:
            if self._scheduled or self._closed:
                return
            self._scheduled = True
        if _running_loop() is self.loop:
            self._arm()
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._arm)

    def _arm(self) -> None:
        delay = max(0.0, self._last + self.interval - time.monotonic())
        self.loop.call_later(delay, self._run, context=contextvars.Context())

    def _run(self) -> None:
        with self._lock:
            self._scheduled = False
            if self._closed:
                return
        self._last = time.monotonic()
        self.history.append(self._last)
        self._flush()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._lock:
            self._closed = True


def _listener(ref: weakref.ref[Any]) -> Callable[[str, Any], None]:
    """An event listener that forwards to a view while it lives (the queue keeps only this
    small closure, not the view)."""

    def listener(kind: str, task: Any) -> None:
        view = ref()
        if view is not None:
            view._on_event(kind, task)

    return listener


class _View:
    """What the dashboard and the task bar share: a throttle, a tick while work is in
    flight, a subscription, and ``close()``."""

    widget: Any

    def __init__(self, loop: asyncio.AbstractEventLoop | None, interval: float) -> None:
        loop = loop or _running_loop()
        if loop is None:
            raise RuntimeError(
                "nbqueue widgets update from an asyncio event loop (a Jupyter kernel has "
                "one); none is running in this thread: pass loop=..."
            )
        self._throttle = Throttle(loop, self._flush, interval)
        self._tick: asyncio.TimerHandle | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.closed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._throttle.loop

    @property
    def flush_times(self) -> list[float]:
        """monotonic times of the most recent redraws."""
        return list(self._throttle.history)

    def _subscribe(self, queue: Queue) -> None:
        self._unsubscribe = queue.events.subscribe(_listener(weakref.ref(self)))

    def _on_event(self, kind: str, task: Any) -> None:
        raise NotImplementedError

    def _redraw(self) -> bool:
        """Draw the current state; True while there is something to keep ticking for."""
        raise NotImplementedError

    def _flush(self) -> None:
        if self.closed:
            return
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        if self._redraw() and not self.closed:
            self._tick = self.loop.call_later(
                TICK_SECONDS, self._throttle.poke, context=contextvars.Context()
            )

    def refresh(self) -> None:
        """Ask for a redraw (it happens on the loop, within ``UPDATE_INTERVAL``)."""
        self._throttle.poke()

    def _stop(self) -> None:
        """Stop observing; the widgets keep showing the last state."""
        self._throttle.close()
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            # Not from inside a listener: unsubscribing there would skip the next one.
            self.loop.call_soon_threadsafe(unsubscribe)

    def close(self) -> None:
        """Stop observing and close the widgets (they disappear from the notebook)."""
        self.closed = True
        self._stop()
        self.widget.close()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict) and "text/plain" in bundle:
            bundle["text/plain"] = str(self)  # for text front ends and saved notebooks
        return bundle


class TaskProgress(_View):
    """A live progress bar for one task: name, type, status, percent, elapsed time and the
    last error. Created for a task that is not in a queue yet, it starts following the
    queue once the task is added."""

    def __init__(
        self,
        task: Task[Any],
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        interval: float = UPDATE_INTERVAL,
    ) -> None:
        w = require_ipywidgets()
        super().__init__(loop, interval)
        self._task_ref = weakref.ref(task)
        self.uid = task.uid
        self._name = w.HTML(layout=w.Layout(width="30%", overflow="hidden"))
        self._bar = w.FloatProgress(value=0.0, min=0.0, max=100.0, layout=w.Layout(width="40%"))
        self._info = w.HTML(layout=w.Layout(width="30%"))
        self._error = w.HTML(layout=w.Layout(display="none"))
        self.widget = w.VBox([w.HBox([self._name, self._bar, self._info]), self._error])
        self.widget.add_class("nbqueue-task")
        self._queue_ref: weakref.ref[Queue] | None = None
        # The first draw; while the task is unfinished it also starts the tick that picks
        # up the queue once the task is added to one.
        self._flush()

    def __str__(self) -> str:
        task = self._task_ref()
        return repr(task) if task is not None else f"<Task {self.uid[:8]} (gone)>"

    def _on_event(self, kind: str, task: Any) -> None:
        if task is None or getattr(task, "uid", None) == self.uid:
            self._throttle.poke()

    def _redraw(self) -> bool:
        task = self._task_ref()
        if task is None:
            self._info.value = '<span style="color:#757575">task is gone</span>'
            self._stop()
            return False
        queue = task.queue
        if queue is not None and self._unsubscribe is None and not self._throttle.closed:
            self._queue_ref = weakref.ref(queue)
            self._subscribe(queue)
        status = task.status.value
        self._name.value = f"<b>{display.esc(task.name)}</b> <code>{display.esc(task.type)}</code>"
        self._bar.value = float(task.progress)
        self._bar.bar_style = {
            "completed": "success", "failed": "danger", "retrying": "warning",
            "cancelled": "warning",
        }.get(status, "")  # fmt: skip
        took = display.seconds_text(display.elapsed(task))
        self._info.value = f"{display.chip(status)} {task.progress:.0f}%" + (
            f" · {took}" if took else ""
        )
        error = task.error
        if error is not None and status in ("failed", "retrying", "cancelled"):
            self._error.value = (
                f'<code style="color:{display.COLORS["failed"]}">{display.esc(error)}</code>'
            )
            self._error.layout.display = None
        else:
            self._error.layout.display = "none"
        if task.status.finished:
            self._stop()
            return False
        return True


class Dashboard(_View):
    """A live view of a queue: an overall bar with counts per status, a bar per running
    task (name, percent, elapsed), the most recent failures with their error, and a status
    table. Redraws at most every ``interval`` seconds whatever the number of tasks.

    ``queue.dashboard()`` creates one in a notebook (it falls back to text elsewhere).
    """

    def __init__(
        self,
        queue: Queue,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        interval: float = UPDATE_INTERVAL,
        running_rows: int = RUNNING_ROWS,
        table_rows: int = TABLE_ROWS,
    ) -> None:
        w = require_ipywidgets()
        super().__init__(loop, interval)
        self._queue_ref = weakref.ref(queue)
        self._table_rows = table_rows
        self._table_at = float("-inf")
        self._table_dirty = True
        # What the listener records (under this lock: it may run on another thread).
        self._lock = threading.Lock()
        self._running: dict[str, None] = {}  # uids, in dispatch order
        self._failed: deque[str] = deque(maxlen=display.FAILURE_ROWS)
        self._recent: deque[str] = deque(maxlen=table_rows)
        self._shut_down = False

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
        self._subscribe(queue)  # first, so that nothing happens unseen during the scan
        with self._lock:
            for task in queue.tasks:
                self._note(task.status.value, task)
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
        return "nbqueue: the queue is gone" if queue is None else display.text_snapshot(queue)

    @property
    def percent(self) -> float:
        """The overall bar's value as drawn last (finished tasks, in percent)."""
        return float(self._overall.value)

    # -- the listener side: quick bookkeeping, then a throttled redraw --------------------
    def _note(self, status: str, task: Task[Any]) -> None:
        uid = task.uid
        if status == "running":
            self._running[uid] = None
        else:
            self._running.pop(uid, None)
        if status in ("completed", "failed", "cancelled"):
            self._recent.appendleft(uid)
            if status == "failed":
                self._failed.appendleft(uid)

    def _on_event(self, kind: str, task: Any) -> None:
        with self._lock:
            if kind in ("cleared", "shutdown"):
                self._running.clear()
                self._shut_down = self._shut_down or kind == "shutdown"
            elif kind == "removed":
                self._running.pop(task.uid, None)
            elif task is not None and kind != "progress":
                self._note(task.status.value, task)
            if kind != "progress":
                self._table_dirty = True
        self._throttle.poke()

    # -- drawing (on the loop, outside the listener) --------------------------------------
    def _redraw(self) -> bool:
        queue = self._queue_ref()
        if queue is None:
            self._header.value = "<b>nbqueue</b> · the queue is gone"
            self._stop()
            return False
        with self._lock:
            running_uids = list(self._running)
            failed_uids = list(self._failed)
            recent_uids = list(self._recent)
            shut_down = self._shut_down
            table_dirty, self._table_dirty = self._table_dirty, False
        counts = queue.counts()
        done, total, percent = display.overall(counts)
        workers = queue.workers()
        state = display.queue_state(queue)
        self._header.value = (
            f"<b>nbqueue</b> · {display.esc(state)} · {total:,} tasks · "
            f"{sum(1 for x in workers if x.alive)} worker(s)"
        )
        self._overall.value = percent
        self._overall.bar_style = (
            ("success" if not counts["failed"] else "warning") if total and done == total else ""
        )
        self._overall_text.value = f"&nbsp;{done:,} / {total:,} finished ({percent:.0f}%)"
        self._counts.value = display.counts_html(counts)

        running = [
            t
            for t in (queue.get_task(uid) for uid in running_uids)
            if t is not None and t.status.value == "running"
        ]
        self._running_title.value = f"<b>running</b> ({len(running)})" if running else ""
        for i, (row, name, bar, info) in enumerate(self._rows):
            if i < len(running):
                t = running[i]
                name.value = f"{display.esc(t.name)} <code>{display.esc(t.type)}</code>"
                bar.value = float(t.progress)
                took = display.seconds_text(display.elapsed(t))
                info.value = f"&nbsp;{t.progress:.0f}%" + (f" · {took}" if took else "")
                row.layout.display = None
            else:
                row.layout.display = "none"
        extra = len(running) - len(self._rows)
        self._more.value = (
            f'<span style="color:#757575">+{extra} more running</span>' if extra > 0 else ""
        )

        failed = [t for t in (queue.get_task(uid) for uid in failed_uids) if t is not None]
        self._failures.value = (
            "<b>recent failures</b><ul style='margin:0'>"
            + "".join(
                f"<li>{display.esc(t.name)} <code>{display.esc(t.type)}</code>: "
                f'<code style="color:{display.COLORS["failed"]}">{display.esc(t.error)}</code>'
                "</li>"
                for t in failed
            )
            + "</ul>"
            if failed
            else ""
        )

        # Durations of running tasks move on: redraw the table while they run, but at most
        # every TABLE_INTERVAL (the tick below brings the deferred redraw).
        now = time.monotonic()
        if table_dirty or running:
            if not running or now - self._table_at >= TABLE_INTERVAL:
                self._table_at = now
                self._table.value = self._table_html(queue, running, recent_uids, total)
            else:
                with self._lock:
                    self._table_dirty = True
        if shut_down or state == "shut down":
            self._stop()
            return False
        return bool(running)

    def _table_html(
        self, queue: Queue, running: list[Task[Any]], recent: list[str], total: int
    ) -> str:
        """A bounded table: running tasks, then the next to run, then the latest to finish."""
        from nbqueue import frame

        rows: dict[str, Task[Any]] = {t.uid: t for t in running[: self._table_rows]}
        if len(rows) < self._table_rows:
            for t in queue.get_pending_tasks():
                if len(rows) >= self._table_rows // 2 + len(running[: self._table_rows]):
                    break
                rows.setdefault(t.uid, t)
        for uid in recent:
            if len(rows) >= self._table_rows:
                break
            found = queue.get_task(uid)
            if found is not None:
                rows.setdefault(uid, found)
        if not rows:
            return ""
        table = display.status_table_html(
            frame.status_frame(list(rows.values())), columns=display.COMPACT_COLUMNS
        )
        note = (
            f'<div style="color:#757575;font-size:11px">{len(rows)} of {total:,} tasks: running, '
            "next to run, latest finished. <code>queue.status_frame()</code> has them all.</div>"
        )
        return table + note
