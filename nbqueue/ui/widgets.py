"""Live ipywidgets views: what they share (:class:`View`) and a task's own progress bar
(:class:`TaskProgress`); the dashboard is in :mod:`nbqueue.ui.dashboard`.

The views only draw. They observe the controller through ``queue.events``: a listener just
pokes the view's :class:`~nbqueue.ui.throttle.Throttle`, and the redraw runs later on the
redraw thread at a bounded rate (:data:`UPDATE_INTERVAL`), reading the state afresh, so ten
thousand tasks cost the front end no more messages than ten, and the views move while the
kernel's main thread is busy. The views hold weak references to the queue and its tasks: a
view never keeps a queue alive.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nbqueue.errors import WidgetsUnavailableError
from nbqueue.ui import figures, html, throttle

if TYPE_CHECKING:
    from nbqueue.queue import Queue
    from nbqueue.task import Task

#: Shortest time between two redraws of one view (at most ~10 updates per second).
UPDATE_INTERVAL = 0.1
#: While tasks run, redraw this often even without events (elapsed times move on).
TICK_SECONDS = 1.0
#: ipywidgets' bar styles by task status.
BAR_STYLES = {"completed": "success", "failed": "danger", "retrying": "warning",
              "cancelled": "warning"}  # fmt: skip


def require_ipywidgets() -> Any:
    """The ipywidgets module, or a clear error saying how to get it."""
    try:
        import ipywidgets
    except ImportError as exc:
        raise WidgetsUnavailableError() from exc
    return ipywidgets


def _listener(ref: weakref.ref[View]) -> Callable[[str, Any], None]:
    """An event listener that forwards to a view while it lives (the queue keeps only this
    small closure, not the view)."""

    def listener(kind: str, task: Any) -> None:
        view = ref()
        if view is not None:
            view._on_event(kind, task)

    return listener


class View:
    """What the dashboard and the task bar share: a throttle, a tick while work is in
    flight, a subscription to a queue's events, and ``close()``. Redraws of one view never
    overlap (the first one runs in the constructor, the others on the redraw thread)."""

    widget: Any

    def __init__(self, interval: float) -> None:
        self._throttle = throttle.Throttle(self._flush, interval)
        self._draw_lock = threading.Lock()
        self._tick: throttle.Handle | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.closed = False

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
        with self._draw_lock:
            if self.closed:
                return
            if self._tick is not None:
                self._tick.cancel()
                self._tick = None
            if self._redraw() and not self._throttle.closed:
                self._tick = throttle.scheduler().call_later(TICK_SECONDS, self._throttle.poke)

    def refresh(self) -> None:
        """Ask for a redraw (it comes within ``UPDATE_INTERVAL``)."""
        self._throttle.poke()

    def _stop(self) -> None:
        """Stop observing; the widgets keep showing the last state."""
        self._throttle.close()
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()  # never called from a listener: listeners only poke

    def close(self) -> None:
        """Stop observing and close the widgets (they disappear from the notebook)."""
        with self._draw_lock:
            self.closed = True
            self._stop()
        self.widget.close()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict) and "text/plain" in bundle:
            bundle["text/plain"] = str(self)  # for text front ends and saved notebooks
        return bundle


class TaskProgress(View):
    """A live progress bar for one task: name, type, status, percent, elapsed time and the
    last error. Created for a task that is not in a queue yet, it starts following the
    queue once the task is added."""

    def __init__(self, task: Task[Any], *, interval: float = UPDATE_INTERVAL) -> None:
        w = require_ipywidgets()
        super().__init__(interval)
        self._task_ref = weakref.ref(task)
        self.uid = task.uid
        self._name = w.HTML(layout=w.Layout(width="30%", overflow="hidden"))
        self._bar = w.FloatProgress(value=0.0, min=0.0, max=100.0, layout=w.Layout(width="40%"))
        self._info = w.HTML(layout=w.Layout(width="30%"))
        self._error = w.HTML(layout=w.Layout(display="none"))
        self._output = w.HTML()
        self._output_box = w.Accordion(children=[self._output], layout=w.Layout(display="none"))
        self._output_box.set_title(0, "output")
        self.widget = w.VBox(
            [w.HBox([self._name, self._bar, self._info]), self._error, self._output_box]
        )
        self.widget.add_class("nbqueue-task")
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
            self._info.value = html.muted("task is gone")
            self._stop()
            return False
        queue = task.queue
        if queue is not None and self._unsubscribe is None and not self._throttle.closed:
            self._subscribe(queue)
        snapshot = task.get_status()
        status = snapshot.status.value
        self._name.value = html.task_name(snapshot)
        self._bar.value = float(snapshot.progress)
        self._bar.bar_style = BAR_STYLES.get(status, "")
        self._info.value = html.task_info(snapshot)
        if snapshot.output:  # what it printed, the last lines, behind a fold
            self._output.value = html.output(
                figures.last_lines(snapshot.output, figures.WIDGET_OUTPUT_LINES)
            )
            self._output_box.layout.display = None
        if figures.shows_error(snapshot):
            self._error.value = html.error(snapshot.error or "")
            self._error.layout.display = None
        else:
            self._error.layout.display = "none"
        if snapshot.status.finished:
            self._stop()
            return False
        return True
