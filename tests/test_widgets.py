"""Presentation in this process, against real queues and worker processes: the live widgets
(redrawn on their own thread), the figures every view shares, the HTML and text views.

The queues here run their controller on a thread of their own (no event loop runs in the
test's thread), as the controller will in a kernel; the tests poll with a deadline.
"""

from __future__ import annotations

import gc
import io
import itertools
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ipywidgets
import pytest
from helpers import poll

from nbqueue import Queue, Task
from nbqueue.ui import dashboard as live
from nbqueue.ui import figures, formatters, html, text, throttle, views, widgets

pytestmark = pytest.mark.timeout(120)


def walk(widget: Any, visible_only: bool = True) -> Iterator[Any]:
    layout = getattr(widget, "layout", None)
    if visible_only and layout is not None and layout.display == "none":
        return
    yield widget
    for child in getattr(widget, "children", ()):
        yield from walk(child, visible_only)


def shown_html(view: Any) -> str:
    """What the view's visible HTML widgets say."""
    return "\n".join(w.value for w in walk(view.widget) if isinstance(w, ipywidgets.HTML))


def shown_bars(view: Any) -> list[float]:
    return [w.value for w in walk(view.widget) if isinstance(w, ipywidgets.FloatProgress)]


def gated(task: Task[Any]) -> str:
    """Reports 50 %, then holds until the file named by task.data exists."""
    task.update_progress(50)
    while not Path(task.data["gate"]).exists():
        task.sleep(0.02)
    if task.data.get("fail"):
        raise ValueError(f"{task.name} <is> broken")
    return "done"


def quick(task: Task[Any]) -> int:
    task.update_progress(50)
    return int(task.data)


# -- the dashboard -------------------------------------------------------------------------
def test_dashboard_redraws_at_a_bounded_rate_however_many_tasks() -> None:
    n = 2000
    with Queue(max_workers=2, tasks_per_worker=8) as queue:
        queue.register(quick)
        events = [0]
        queue.events.subscribe(lambda kind, task: events.__setitem__(0, events[0] + 1))
        dashboard = live.Dashboard(queue)
        changes = [0]
        for w in walk(dashboard.widget, visible_only=False):
            w.observe(lambda change: changes.__setitem__(0, changes[0] + 1))
        for i in range(n):
            queue.add(Task(f"t{i}", "quick", data=i, max_retries=0))
        queue.run_automatically()
        poll(lambda: queue.counts()["completed"] == n, timeout=90)
        poll(lambda: dashboard.percent == 100.0)
        flushes = dashboard.flush_times
    assert events[0] >= 4 * n  # added, dispatched, started, progress, finished for each task
    # Redraws are spaced by the interval, whatever the event rate...
    gaps = [b - a for a, b in itertools.pairwise(flushes)]
    assert min(gaps) >= widgets.UPDATE_INTERVAL * 0.99, min(gaps)
    # ...and each redraw changes a bounded number of widget properties (one message each).
    widget_count = 1 + 8 + 4 * live.RUNNING_ROWS + 8
    assert changes[0] <= len(flushes) * widget_count * 3
    assert len(flushes) < events[0]


def test_dashboard_moves_while_the_thread_that_made_it_blocks_in_wait(tmp_path: Path) -> None:
    """Redraws run on their own thread: a cell blocked in queue.wait() (a plain threading
    wait, no event loop turning) still sees the dashboard move."""
    gate = tmp_path / "gate"
    with Queue(max_workers=2) as queue:
        queue.register(gated)
        dashboard = live.Dashboard(queue)
        for i in range(4):
            queue.add(Task(f"job {i}", "gated", data={"gate": str(gate)}))
        opener = threading.Thread(
            target=lambda: (poll(lambda: queue.counts()["running"] == 2), gate.touch())
        )
        opener.start()
        started = time.monotonic()
        queue.wait(60)  # this thread blocks; nothing here turns a loop
        ended = time.monotonic()
        opener.join()
        during = [t for t in dashboard.flush_times if started < t < ended]
        assert during, "no redraw while the thread that made the dashboard waited"
        poll(lambda: dashboard.percent == 100.0)
        assert "4 / 4 finished (100%)" in shown_html(dashboard)
        threads = {t.name for t in threading.enumerate()}
        assert "nbqueue-redraw" in threads


def test_dashboard_shows_running_tasks_failures_and_the_table(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    with Queue(max_workers=2, tasks_per_worker=2) as queue:
        queue.register(gated)
        dashboard = live.Dashboard(queue)
        tasks = [
            Task(f"job {i}", "gated", data={"gate": str(gate), "fail": i == 1}, max_retries=0)
            for i in range(6)
        ]
        for task in tasks:
            queue.add(task)
        queue.run_automatically()
        # Four run (two workers, two slots each), each at 50 %; two wait.
        poll(lambda: shown_bars(dashboard).count(50.0) == 4)
        poll(lambda: "job 5" in shown_html(dashboard))  # the table lists the pending ones
        html_text = shown_html(dashboard)
        assert "running</b> (4)" in html_text
        assert "pending 2" in html_text and "running 4" in html_text
        assert "job 0 <code>gated</code>" in html_text and "&nbsp;50%" in html_text
        assert "0 / 6 finished (0%)" in html_text
        gate.touch()
        poll(lambda: dashboard.percent == 100.0)
        html_text = shown_html(dashboard)
        assert "6 / 6 finished (100%)" in html_text
        assert "completed 5" in html_text and "failed 1" in html_text
        # The failure, its error escaped as HTML.
        assert "recent failures" in html_text
        assert "ValueError: job 1 &lt;is&gt; broken" in html_text
        assert "running</b>" not in html_text  # no task runs any more
        assert dashboard._overall.bar_style == "warning"  # finished, with a failure
    poll(lambda: "shut down" in shown_html(dashboard))


def test_dashboard_holds_its_queue_weakly_and_stops_on_close() -> None:
    queue = Queue(max_workers=1).init()
    queue.register(quick)
    dashboard = live.Dashboard(queue)
    queue.add(Task("one", "quick", data=1))
    queue.run_automatically()
    poll(lambda: dashboard.percent == 100.0)
    queue.shutdown()
    poll(lambda: "shut down" in shown_html(dashboard))
    ref = weakref.ref(queue)
    del queue
    gc.collect()
    assert ref() is None, "the dashboard kept the queue alive"
    assert "nbqueue.Queue" not in str(dashboard)  # it says the queue is gone

    # close(): unsubscribed, widgets closed, and nothing keeps the view alive.
    with Queue(max_workers=1) as other:
        view = live.Dashboard(other)
        assert other.events
        view.close()
        assert not other.events
        assert view.widget.comm is None  # closed
        view_ref = weakref.ref(view)
        del view
        gc.collect()
        assert view_ref() is None


def test_throttle_bounds_the_rate_from_any_thread_and_never_drops_the_last_update() -> None:
    seen: list[int] = []
    state = [0]
    flushed_on: set[str] = set()

    def flush() -> None:
        flushed_on.add(threading.current_thread().name)
        seen.append(state[0])

    pacer = throttle.Throttle(flush, 0.05)

    def hammer(offset: int) -> None:
        for i in range(2000):
            state[0] = offset + i
            pacer.poke()

    threads = [threading.Thread(target=hammer, args=(k * 10_000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = state[0]
    pacer.poke()
    poll(lambda: seen and seen[-1] == final)
    gaps = [b - a for a, b in itertools.pairwise(pacer.history)]
    assert all(gap >= 0.05 * 0.99 for gap in gaps), min(gaps)
    assert len(seen) < 8000
    assert flushed_on == {"nbqueue-redraw"}
    pacer.close()


def test_a_slow_redraw_spaces_the_next_ones_out() -> None:
    """A view whose redraw takes long (a huge queue) redraws less often, so that drawing
    never takes more than about 1/COST_FACTOR of the time."""
    slow = 0.05
    done: list[float] = []

    def flush() -> None:
        end = time.monotonic() + slow
        while time.monotonic() < end:  # busy, as a redraw is
            pass
        done.append(time.monotonic())

    pacer = throttle.Throttle(flush, 0.01)
    for _ in range(3):
        count = len(done)
        pacer.poke()
        poll(lambda count=count: len(done) > count)  # type: ignore[misc]
    gaps = [b - a for a, b in itertools.pairwise(pacer.history)]
    assert all(gap >= throttle.COST_FACTOR * slow for gap in gaps), gaps


# -- a task's own bar ----------------------------------------------------------------------
def test_task_progress_follows_a_task_into_its_queue_and_to_the_end(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    with Queue(max_workers=1, tasks_per_worker=2) as queue:
        queue.register(gated)
        ok = Task("resize <b>", "gated", data={"gate": str(gate)}, max_retries=0)
        bad = Task("broken", "gated", data={"gate": str(gate), "fail": True}, max_retries=0)
        ok_view = widgets.TaskProgress(ok)  # before the task is in a queue
        assert "pending" in shown_html(ok_view) and "resize &lt;b&gt;" in shown_html(ok_view)
        queue.add(ok).add(bad)
        bad_view = widgets.TaskProgress(bad)
        queue.run_automatically()
        poll(lambda: shown_bars(ok_view) == [50.0] and shown_bars(bad_view) == [50.0])
        assert "running" in shown_html(ok_view)
        gate.touch()
        poll(lambda: "completed" in shown_html(ok_view))
        poll(lambda: "failed" in shown_html(bad_view))
        assert shown_bars(ok_view) == [100.0]
        assert ok_view._bar.bar_style == "success" and bad_view._bar.bar_style == "danger"
        assert "ValueError: broken &lt;is&gt; broken" in shown_html(bad_view)
        # Finished: both stopped observing the queue.
        poll(lambda: not queue.events)
        assert str(ok_view) == repr(ok)


# -- one figure, one definition --------------------------------------------------------------
def test_every_view_shows_the_same_figures(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    with Queue(max_workers=1) as queue:
        queue.register(gated)
        queue.register(quick)
        for i in range(3):
            queue.add(Task(f"q{i}", "quick", data=i))
        queue.add(Task("held", "gated", data={"gate": str(gate)}, max_retries=0))
        queue.run_automatically()
        poll(lambda: queue.counts()["running"] == 1 and queue.counts()["completed"] == 3)
        held_at_50 = queue.get_task_statuses()
        summary = figures.summarize(held_at_50)
        # Percent finished is the share of finished tasks (the held one's 50 % counts not).
        assert (summary.finished, summary.total, summary.percent) == (3, 4, 75.0)
        assert summary.finished_text == "3 / 4 finished (75%)"
        assert summary.counts_text == "running 1, completed 3"

        dashboard = live.Dashboard(queue)
        line = io.StringIO()
        text.ProgressLine(line).update(held_at_50)
        shown = {
            "dashboard": shown_html(dashboard),
            "queue html": formatters.queue_html(queue),
            "text snapshot": str(views.TextDashboard(queue, "test")),
            "status view": repr(views.status_view(queue)),
            "status view html": views.status_view(queue)._repr_html_(),
            "progress line": line.getvalue(),
        }
        for where, what in shown.items():
            assert summary.finished_text in what, where
        assert line.getvalue() == "3 / 4 finished (75%): running 1, completed 3\n"
        assert "running 1, completed 3: 3 / 4 finished (75%)" in shown["status view"]

        # A task's elapsed time: the same figure on its bar, in the table and in the frame.
        [running] = figures.running(held_at_50)
        took = figures.elapsed(running)
        assert took is not None and took > 0
        frame = queue.status_frame()
        duration = frame.loc[frame["name"] == "held", "duration"].item()
        assert duration >= round(took, 3)  # read a moment later, so a bit longer
        gate.touch()
        queue.wait(60)
        final = queue.get_task(running.uid)
        assert final is not None
        frame = queue.status_frame()
        assert frame.loc[frame["name"] == "held", "duration"].item() == round(
            figures.elapsed(final.get_status()) or 0.0, 3
        )


def test_errors_are_shortened_by_one_rule() -> None:
    assert figures.shorten("x" * 10, 10) == "x" * 10
    assert figures.shorten("x" * 11, 10) == "x" * 9 + "…"
    long_error = "E" * 500

    def fails(task: Task[Any]) -> None:
        raise RuntimeError(long_error)

    with Queue(max_workers=1) as queue:
        queue.register(fails)
        task = Task("long error", "fails", max_retries=0)
        queue.add(task)
        queue.wait(60)
        frame = queue.status_frame()
    error = frame["error"].item()
    assert error == figures.shorten(f"RuntimeError: {long_error}", figures.FRAME_ERROR_WIDTH)
    cell = html.status_table(frame)
    assert figures.shorten(error, html.CELL_ERROR_WIDTH) in cell
    assert figures.shorten(error, text.CELL_WIDTH) in text.status_table(frame)


# -- fallbacks -----------------------------------------------------------------------------
def test_outside_a_notebook_the_dashboard_is_a_text_snapshot() -> None:
    with Queue(max_workers=1) as queue:
        queue.register(quick)
        queue.add(Task("a", "quick", data=1)).add(Task("b", "quick", data=2))
        snapshot = queue.dashboard()
        assert isinstance(snapshot, views.TextDashboard)
        shown = str(snapshot)
        assert "nbqueue.Queue (running): 2 tasks" in shown
        assert "[--------------------] 0 / 2 finished (0%)" in shown and "pending 2" in shown
        assert "needs a Jupyter notebook" in repr(snapshot)
        assert "nbqueue.Queue" in snapshot._repr_html_()
        queue.wait(60)
        assert "[####################] 2 / 2 finished (100%)" in str(snapshot)  # read afresh


def test_without_ipywidgets_the_error_says_how_to_fix_it() -> None:
    code = (
        "import sys; sys.modules['ipywidgets'] = None\n"  # as if it were not installed
        "from nbqueue import Task\n"
        "from nbqueue.ui import widgets\n"
        "try:\n"
        "    widgets.TaskProgress(Task('a', 'b'))\n"
        "except ImportError as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "WidgetsUnavailableError" in out and "pip install ipywidgets" in out


def test_formatters_only_inside_a_running_ipython() -> None:
    """``import nbqueue`` never imports IPython; inside a running IPython shell it registers
    how tasks and queues display (the model has no _repr_* methods)."""
    plain = (
        "import sys, nbqueue\n"
        "print('IPython' in sys.modules, hasattr(nbqueue.Task, '_repr_html_'),"
        " hasattr(nbqueue.Queue, '_repr_html_'))\n"
    )
    in_shell = (
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "shell = InteractiveShell.instance()\n"
        "import nbqueue\n"
        "data, _ = shell.display_formatter.format(nbqueue.Task('<b>t</b>', 'x'))\n"
        "print(sorted(data), '&lt;b&gt;t&lt;/b&gt;' in data['text/html'])\n"
        "data, _ = shell.display_formatter.format(nbqueue.Queue(max_workers=1))\n"
        "print(sorted(data), 'nbqueue.Queue' in data['text/html'])\n"
    )
    outs = [
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
        ).stdout.splitlines()
        for code in (plain, in_shell)
    ]
    assert outs[0] == ["False False False"]
    # No kernel: no live widget, the static HTML.
    assert outs[1] == ["['text/html', 'text/plain'] True", "['text/html', 'text/plain'] True"]


# -- rich HTML -----------------------------------------------------------------------------
def test_rich_html_for_tasks_queues_and_the_status_table() -> None:
    with Queue(max_workers=1) as queue:
        queue.register(quick)
        tasks = [Task(f"<i>t{i}</i>", "quick", data=i) for i in range(html.TABLE_ROWS + 5)]
        for task in tasks:
            queue.add(task)
        queue_html = formatters.queue_html(queue)
        assert "nbqueue.Queue" in queue_html and f"pending {len(tasks)}" in queue_html
        assert "<code>quick</code>" in queue_html

        task_html = formatters.task_html(tasks[0])
        assert "&lt;i&gt;t0&lt;/i&gt;" in task_html and "<i>" not in task_html
        assert "pending" in task_html and "0%" in task_html

        queue.wait(60)
        table = html.status_table(queue.status_frame())
        assert table.count("<tr>") == html.TABLE_ROWS + 1  # header + limited rows
        assert "5 more row(s) not shown" in table
        assert "&lt;i&gt;t0&lt;/i&gt;" in table and "<i>" not in table
        assert f'title="{tasks[0].uid}"' in table  # short uid, full one on hover

        view = views.status_view(queue)
        assert f"completed {len(tasks)}" in repr(view)
        assert "5 more row(s)" in repr(view)
        assert "nbqueue-status" in view._repr_html_()
        assert "completed" in formatters.task_html(tasks[0])


def test_output_shows_with_the_task_and_on_the_dashboard() -> None:
    from nbqueue.backends import InProcessBackend

    backend = InProcessBackend(slots=1, run=False)
    with Queue(backend=backend) as queue:
        queue.register(gated)
        task = Task("talker", "gated", data={"gate": "/nonexistent"})
        queue.add(task)
        queue.run_tasks([task])
        poll(lambda: task.uid in backend.sent)
        bar, dash = widgets.TaskProgress(task), live.Dashboard(queue)
        backend.started(task.uid)
        backend.printed(task.uid, "loading <data>\nepoch 1: loss 0.50\n")
        poll(lambda: "epoch 1: loss 0.50" in shown_html(dash))  # the running row's last line
        poll(lambda: "loading &lt;data&gt;" in shown_html(bar))  # the widget's output fold
        assert task.output == "loading <data>\nepoch 1: loss 0.50\n"
        assert task.get_status().output == task.output
        backend.completed(task.uid, "done")
        queue.wait(10)
        bar.close()
        dash.close()
