"""nbqueue's own workloads: W4 (100,000 pending tasks: memory and ``status_frame()``) and
W5 (progress reports with the dashboard attached: controller CPU, widget updates)."""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable
from typing import Any

from bench.common import N_W4, N_W5, W5_PAUSE, W5_STEPS, System, cpu_seconds, rss_mb
from bench.nbqueue_store import Store, open_queue
from bench.tasks import progress_task


def run_w4(s: System, store: Store, tpw: int | None) -> None:
    """100,000 pending tasks: RSS above the baseline, time to add them, status_frame()."""
    import pandas  # noqa: F401  (imported before the baseline: status_frame() needs it)

    from nbqueue import Task

    with open_queue(store, tpw) as queue:
        gc.collect()
        base = rss_mb()
        t0 = time.perf_counter()
        for i in range(N_W4):
            queue.add(Task(f"task-{i}", "inc", data=i))
        add_s = time.perf_counter() - t0
        after_add = rss_mb()
        t0 = time.perf_counter()
        frame = queue.status_frame()
        frame_s = time.perf_counter() - t0
        after_frame = rss_mb()
        pending = int((frame["status"] == "pending").sum())
        if len(frame) != N_W4 or pending != N_W4:
            raise RuntimeError(f"status_frame: {len(frame)} rows, {pending} pending of {N_W4}")
        out = {
            "n": N_W4,
            "baseline_rss_mb": base,
            "rss_above_baseline_mb": after_add - base,
            "rss_above_baseline_with_frame_mb": after_frame - base,
            "add_s": add_s,
            "adds_per_s": N_W4 / add_s,
            "status_frame_s": frame_s,
            "bytes_per_task": (after_add - base) * 2**20 / N_W4,
            "store": store.describe(),
        }
        print(
            f"  w4: +{out['rss_above_baseline_mb']:.0f} MB for {N_W4:,} pending tasks, "
            f"added in {add_s:.2f} s, status_frame() {frame_s:.2f} s",
            flush=True,
        )
        del frame
        s.record("w4", out)


class _WidgetCounter:
    """Counts the comm messages ipywidgets sends (``Widget._send``: one per state update
    of one widget), with their times."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._undo: Callable[[], None] | None = None

    def __enter__(self) -> _WidgetCounter:
        import ipywidgets

        original = ipywidgets.Widget._send
        times = self.times

        def counting_send(widget: Any, msg: Any, buffers: Any = None) -> Any:
            times.append(time.monotonic())
            return original(widget, msg, buffers)

        ipywidgets.Widget._send = counting_send

        def undo() -> None:
            ipywidgets.Widget._send = original

        self._undo = undo
        return self

    def __exit__(self, *exc: object) -> None:
        if self._undo is not None:
            self._undo()


def _max_in_window(times: list[float], window: float = 1.0) -> int:
    best, lo = 0, 0
    for hi in range(len(times)):
        while times[hi] - times[lo] >= window:  # a half-open window [t, t + 1 s)
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def _w5_once(store: Store, tpw: int | None, with_dashboard: bool) -> dict[str, Any]:
    from nbqueue import Task

    with open_queue(store, tpw, register=progress_task, type_="progress") as queue:
        events = {"progress": 0, "all": 0}

        def listener(kind: str, task: Any) -> None:
            events["all"] += 1
            if kind == "progress":
                events["progress"] += 1

        queue.events.subscribe(listener)
        warm = Task("warm-up", "progress", data=(1, 0.0))
        queue.add(warm)
        warm.wait()
        dash = None
        note = None
        counter = _WidgetCounter()
        if with_dashboard:
            try:
                from nbqueue.ui import dashboard

                dash = dashboard.Dashboard(queue)
            except ImportError as exc:
                note = f"no widget dashboard ({exc}); counted controller events instead"
        events["progress"] = events["all"] = 0
        with counter if dash is not None else contextlib.nullcontext():
            t_start = time.monotonic()
            cpu0 = cpu_seconds()
            tasks = [Task(f"p{i}", "progress", data=(W5_STEPS, W5_PAUSE)) for i in range(N_W5)]
            for task in tasks:
                queue.add(task)
            queue.wait()
            wall = time.monotonic() - t_start
            cpu = cpu_seconds() - cpu0
            # let the last throttled redraw land, as it would in a kernel: wait() on one
            # more task that sleeps 0.3 s keeps the loop turning meanwhile
            if dash is not None:
                tail = Task("tail", "progress", data=(1, 0.3))
                queue.add(tail)
                tail.wait()
            t_end = time.monotonic()
        bad = [t for t in tasks if t.wait()["value"] != W5_STEPS]
        if bad:
            raise RuntimeError(f"W5: {len(bad)} tasks without the expected result")
        out: dict[str, Any] = {
            "n": N_W5,
            "steps": W5_STEPS,
            "pause_s": W5_PAUSE,
            "seconds": wall,
            "controller_cpu_s": cpu,
            "controller_cpu_pct": 100.0 * cpu / wall,
            "progress_events": events["progress"],
            "events": events["all"],
            "progress_reports": N_W5 * W5_STEPS,
        }
        if dash is not None:
            flushes = [t for t in dash.flush_times if t_start <= t <= t_end]
            out.update(
                widget_updates=len(flushes),
                widget_updates_per_s=len(flushes) / (t_end - t_start),
                widget_updates_max_1s=_max_in_window(flushes),
                widget_messages=len(counter.times),
                widget_messages_per_s=len(counter.times) / (t_end - t_start),
                counted="dashboard redraws",
            )
            dash.close()
        elif with_dashboard:
            out.update(
                widget_updates=events["all"],
                widget_updates_per_s=events["all"] / wall,
                counted="controller events (no dashboard: what an unthrottled view would draw)",
                note=note,
            )
        return out


def run_w5(s: System, store: Store, tpw: int | None) -> None:
    """1,000 tasks reporting progress 100 times each, with a dashboard attached."""
    bare = _w5_once(store, tpw, with_dashboard=False)
    out = _w5_once(store, tpw, with_dashboard=True)
    out["controller_cpu_s_without_dashboard"] = bare["controller_cpu_s"]
    out["seconds_without_dashboard"] = bare["seconds"]
    out["store"] = store.describe()
    out["mode"] = "notebook (the caller inside a running asyncio loop, as a cell)"
    if out.get("note"):
        s.note(f"W5: {out['note']}")
    print(
        f"  w5: {out['seconds']:.2f} s, controller CPU {out['controller_cpu_s']:.2f} s "
        f"({bare['controller_cpu_s']:.2f} s without the dashboard), "
        f"{out.get('widget_updates')} widget updates "
        f"({out.get('widget_updates_per_s', 0):.1f}/s), "
        f"{out['progress_events']:,} progress events for {out['progress_reports']:,} reports",
        flush=True,
    )
    s.record("w5", out)
