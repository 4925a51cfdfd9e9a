"""Widgets and rich display, in this process against real queues and worker processes.

The queue runs on an asyncio loop that these tests start (as a Jupyter kernel's loop would
be), so the dashboard and the controller share it exactly as in a notebook. Tests poll with
``await asyncio.sleep`` and a deadline instead of ``queue.wait()``: that keeps nest-asyncio,
which patches asyncio for the whole process, out of the test runner.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ipywidgets
import pytest

from nbqueue import Queue, Task, display, widgets

pytestmark = pytest.mark.timeout(120)


async def until(condition: Callable[[], object], timeout: float = 60.0) -> None:
    """Let the loop run until ``condition()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)


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

    async def main() -> tuple[list[float], int, int, float]:
        queue = Queue(max_workers=2, tasks_per_worker=8).init()
        try:
            queue.register(quick)
            events = [0]
            queue.events.subscribe(lambda kind, task: events.__setitem__(0, events[0] + 1))
            dashboard = widgets.Dashboard(queue)
            changes = [0]
            for w in walk(dashboard.widget, visible_only=False):
                w.observe(lambda change: changes.__setitem__(0, changes[0] + 1))
            for i in range(n):
                queue.add(Task(f"t{i}", "quick", data=i, max_retries=0))
            queue.run_automatically()
            await until(lambda: queue.counts()["completed"] == n)
            await until(lambda: dashboard.percent == 100.0)
            return dashboard.flush_times, events[0], changes[0], len(list(walk(dashboard.widget)))
        finally:
            queue.shutdown()

    flushes, events, changes, _ = asyncio.run(main())
    assert events >= 4 * n  # added, dispatched, started, progress, finished for each task
    # Redraws are spaced by the interval, whatever the event rate...
    gaps = [b - a for a, b in itertools.pairwise(flushes)]
    assert min(gaps) >= widgets.UPDATE_INTERVAL * 0.99, min(gaps)
    # ...and each redraw changes a bounded number of widget properties (one message each).
    widget_count = 1 + 8 + 4 * widgets.RUNNING_ROWS + 8
    assert changes <= len(flushes) * widget_count * 3
    assert len(flushes) < events


def test_dashboard_shows_running_tasks_failures_and_the_table(tmp_path: Path) -> None:
    gate = tmp_path / "gate"

    async def main() -> None:
        queue = Queue(max_workers=2, tasks_per_worker=2).init()
        try:
            queue.register(gated)
            dashboard = widgets.Dashboard(queue)
            tasks = [
                Task(f"job {i}", "gated", data={"gate": str(gate), "fail": i == 1}, max_retries=0)
                for i in range(6)
            ]
            for task in tasks:
                queue.add(task)
            queue.run_automatically()
            # Four run (two workers, two slots each), each at 50 %; two wait.
            await until(lambda: shown_bars(dashboard).count(50.0) == 4)
            html = shown_html(dashboard)
            assert "running</b> (4)" in html and "pending 2" in html and "running 4" in html
            assert "job 0 <code>gated</code>" in html and "&nbsp;50%" in html
            assert "0 / 6 finished (0%)" in html
            await until(lambda: "job 5" in shown_html(dashboard))  # the table lists pending
            gate.touch()
            await until(lambda: dashboard.percent == 100.0)
            html = shown_html(dashboard)
            assert "6 / 6 finished (100%)" in html
            assert "completed 5" in html and "failed 1" in html
            # The failure, its error escaped as HTML.
            assert "recent failures" in html
            assert "ValueError: job 1 &lt;is&gt; broken" in html
            assert "running</b>" not in html  # no task runs any more
            assert dashboard._overall.bar_style == "warning"  # finished, with a failure
        finally:
            queue.shutdown()
        await until(lambda: "shut down" in shown_html(dashboard))

    asyncio.run(main())


def test_dashboard_holds_its_queue_weakly_and_stops_on_close() -> None:
    async def main() -> None:
        queue = Queue(max_workers=1).init()
        queue.register(quick)
        dashboard = widgets.Dashboard(queue)
        queue.add(Task("one", "quick", data=1))
        queue.run_automatically()
        await until(lambda: dashboard.percent == 100.0)
        queue.shutdown()
        await until(lambda: "shut down" in shown_html(dashboard))
        ref = weakref.ref(queue)
        del queue
        gc.collect()
        assert ref() is None, "the dashboard kept the queue alive"
        assert "nbqueue.Queue" not in str(dashboard)  # it says the queue is gone

        # close(): unsubscribed, widgets closed, and nothing keeps the view alive.
        other = Queue(max_workers=1).init()
        try:
            view = widgets.Dashboard(other)
            assert other.events
            view.close()
            await until(lambda: not other.events)
            assert view.widget.comm is None  # closed
            view_ref = weakref.ref(view)
            del view
            gc.collect()
            assert view_ref() is None
        finally:
            other.shutdown()

    asyncio.run(main())


def test_throttle_bounds_the_rate_from_any_thread_and_never_drops_the_last_update() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        seen: list[int] = []
        state = [0]
        throttle = widgets.Throttle(loop, lambda: seen.append(state[0]), 0.05)

        def hammer(offset: int) -> None:
            for i in range(2000):
                state[0] = offset + i
                throttle.poke()

        threads = [threading.Thread(target=hammer, args=(k * 10_000,)) for k in range(4)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            await asyncio.sleep(0.01)
        final = state[0]
        throttle.poke()
        await until(lambda: seen and seen[-1] == final)
        gaps = [b - a for a, b in itertools.pairwise(throttle.history)]
        assert all(gap >= 0.05 * 0.99 for gap in gaps), min(gaps)
        assert len(seen) < 8000

    asyncio.run(main())


# -- a task's own bar ----------------------------------------------------------------------
def test_task_progress_follows_a_task_into_its_queue_and_to_the_end(tmp_path: Path) -> None:
    gate = tmp_path / "gate"

    async def main() -> None:
        queue = Queue(max_workers=1, tasks_per_worker=2).init()
        try:
            queue.register(gated)
            ok = Task("resize <b>", "gated", data={"gate": str(gate)}, max_retries=0)
            bad = Task("broken", "gated", data={"gate": str(gate), "fail": True}, max_retries=0)
            ok_view = widgets.TaskProgress(ok)  # before the task is in a queue
            assert "pending" in shown_html(ok_view) and "resize &lt;b&gt;" in shown_html(ok_view)
            queue.add(ok).add(bad)
            bad_view = widgets.TaskProgress(bad)
            queue.run_automatically()
            await until(lambda: shown_bars(ok_view) == [50.0] and shown_bars(bad_view) == [50.0])
            assert "running" in shown_html(ok_view)
            gate.touch()
            await until(lambda: "completed" in shown_html(ok_view))
            await until(lambda: "failed" in shown_html(bad_view))
            assert shown_bars(ok_view) == [100.0]
            assert ok_view._bar.bar_style == "success" and bad_view._bar.bar_style == "danger"
            assert "ValueError: broken &lt;is&gt; broken" in shown_html(bad_view)
            # Finished: both stopped observing the queue.
            await until(lambda: not queue.events)
            assert str(ok_view) == repr(ok)
        finally:
            queue.shutdown()

    asyncio.run(main())


# -- fallbacks -----------------------------------------------------------------------------
def test_outside_a_notebook_the_dashboard_is_a_text_snapshot() -> None:
    with Queue(max_workers=1) as queue:
        queue.register(quick)
        queue.add(Task("a", "quick", data=1)).add(Task("b", "quick", data=2))
        snapshot = queue.dashboard()
        assert isinstance(snapshot, display.TextDashboard)
        text = str(snapshot)
        assert "nbqueue.Queue (running): 2 tasks" in text
        assert "[--------------------] 0/2 finished (0%)" in text and "pending 2" in text
        assert "needs a Jupyter notebook" in repr(snapshot)
        assert "nbqueue.Queue" in snapshot._repr_html_()
        queue.wait(60)
        assert "[####################] 2/2 finished (100%)" in str(snapshot)  # read afresh


def test_without_ipywidgets_the_error_says_how_to_fix_it() -> None:
    code = (
        "import sys; sys.modules['ipywidgets'] = None\n"  # as if it were not installed
        "from nbqueue import Task, widgets\n"
        "try:\n"
        "    widgets.TaskProgress(Task('a', 'b'))\n"
        "except ImportError as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "WidgetsUnavailableError" in out and "pip install ipywidgets" in out


# -- rich HTML -----------------------------------------------------------------------------
def test_rich_html_for_tasks_queues_and_the_status_table() -> None:
    with Queue(max_workers=1) as queue:
        queue.register(quick)
        tasks = [Task(f"<i>t{i}</i>", "quick", data=i) for i in range(display.TABLE_ROWS + 5)]
        for task in tasks:
            queue.add(task)
        html = queue._repr_html_()
        assert "nbqueue.Queue" in html and f"pending {len(tasks)}" in html
        assert "<code>quick</code>" in html

        task_html = tasks[0]._repr_html_()
        assert "&lt;i&gt;t0&lt;/i&gt;" in task_html and "<i>" not in task_html
        assert "pending" in task_html and "0%" in task_html

        queue.wait(60)
        table = display.status_table_html(queue.status_frame())
        assert table.count("<tr>") == display.TABLE_ROWS + 1  # header + limited rows
        assert "5 more row(s) not shown" in table
        assert "&lt;i&gt;t0&lt;/i&gt;" in table and "<i>" not in table
        assert f'title="{tasks[0].uid}"' in table  # short uid, full one on hover

        view = display.status_view(queue)
        assert f"completed {len(tasks)}" in repr(view)
        assert "nbqueue-status" in view._repr_html_()
        assert "completed" in tasks[0]._repr_html_()
