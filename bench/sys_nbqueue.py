"""nbqueue: ``Queue(max_workers=2, tasks_per_worker=N)``, in memory or on a database.

    python -m bench.sys_nbqueue --out r.json --store memory --workloads w1,w2
    python -m bench.sys_nbqueue --out r.json --store sqlite --workloads w1,w3
    python -m bench.sys_nbqueue --out r.json --workloads w4      # a fresh process: RSS
    python -m bench.sys_nbqueue --out r.json --workloads w5      # dashboard attached

``--mode notebook`` runs everything inside ``asyncio.run()``, so the controller lives on the
caller's event loop as in a Jupyter kernel and ``wait()`` turns that loop (nest-asyncio);
``--mode thread`` (the default for W1-W4) is a script: the controller has a loop thread of
its own. W5 always runs in notebook mode: the dashboard draws from the kernel's loop.

The persistent stores plug in through ``Queue(db=URL)``: while that raises
ConfigurationError, their workloads are skipped with the error as the reason.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from bench.common import (
    N_W1,
    N_W2,
    N_W3,
    N_W4,
    N_W5,
    PG_URL,
    REPEATS,
    W5_PAUSE,
    W5_STEPS,
    WARMUP,
    WORKERS,
    System,
    cpu_seconds,
    latency,
    rss_mb,
    throughput,
)
from bench.tasks import inc_task, progress_task

#: The in-flight window per worker used for the headline rows. Each worker runs up to this
#: many tasks at once (threads) and the controller keeps that many in flight per worker, so
#: one pipe message carries several tasks when the queue is long. 3 is the library default.
TASKS_PER_WORKER = int(os.environ.get("BENCH_TASKS_PER_WORKER", "16"))

#: Extra ``Queue(...)`` options for W3 per store. Empty: nbqueue's persistence writes every
#: state change (in batches, from a writer thread) with the store's durable settings
#: (SQLite: WAL, synchronous=FULL). Put a durability option here if one appears.
W3_QUEUE_OPTIONS: dict[str, dict[str, Any]] = {"sqlite": {}, "postgresql": {}}

STORES = ("memory", "sqlite", "postgresql")


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", choices=STORES, default="memory")
    parser.add_argument("--tasks-per-worker", type=int, default=TASKS_PER_WORKER)
    parser.add_argument("--mode", choices=("thread", "notebook"), default="thread")


# -- stores -------------------------------------------------------------------------------
class Store:
    """Where a queue keeps its tasks: ``url()`` gives a fresh, empty database each call."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._tmp: str | None = None
        self._count = 0
        self.last_url: str | None = None  # of the latest queue opened

    def url(self) -> str | None:
        self._count += 1
        if self.kind == "memory":
            return None
        if self.kind == "sqlite":
            if self._tmp is None:
                self._tmp = tempfile.mkdtemp(prefix="nbqueue-bench-sqlite-")
            return f"sqlite:///{self._tmp}/bench-{self._count}.db"
        _recreate_pg_database(PG_URL)
        return PG_URL

    def describe(self) -> str:
        return {
            "memory": "in memory",
            "sqlite": "SQLite file (Queue(db='sqlite:///...'))",
            "postgresql": f"PostgreSQL ({PG_URL.split('@')[-1]})",
        }[self.kind]

    def close(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


def _recreate_pg_database(url: str) -> None:
    """Drop and re-create the benchmark's own database (its name is in ``url``)."""
    import psycopg
    import sqlalchemy

    parsed = sqlalchemy.make_url(url)
    name = parsed.database
    admin = parsed.set(drivername="postgresql", database="postgres")
    dsn = admin.render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


class Unsupported(Exception):
    """This nbqueue cannot run on the store (yet)."""


class Committed:
    """Reads the queue's table through a connection of its own: W3 stops its clock only
    once every task's final state is committed there, not when the controller has it."""

    def __init__(self, url: str) -> None:
        from nbqueue.store import make_adapter

        self.adapter = make_adapter(url)
        assert self.adapter is not None
        self.waits: list[float] = []

    def wait(self, uids: list[str], timeout: float = 120.0) -> None:
        t0 = time.perf_counter()
        pending = set(uids)
        while pending:
            done = {r["uid"] for r in self.adapter.load(pending) if r["status"] == "completed"}
            pending -= done
            if pending:
                if time.perf_counter() - t0 > timeout:
                    raise RuntimeError(f"{len(pending)} tasks not committed as completed")
                time.sleep(0.002)
        self.waits.append(time.perf_counter() - t0)

    def close(self) -> None:
        self.adapter.close()


@contextlib.contextmanager
def open_queue(
    store: Store, tpw: int, *, register: Callable[..., Any] = inc_task, type_: str = "inc",
    **extra: Any,
) -> Iterator[Any]:  # fmt: skip
    """A started queue with one registered executor, shut down on exit."""
    from nbqueue import ConfigurationError, Queue

    url = store.url()
    store.last_url = url
    kwargs: dict[str, Any] = dict(max_workers=WORKERS, tasks_per_worker=tpw, **extra)
    if url is not None:
        kwargs["db"] = url
    try:
        queue = Queue(**kwargs)
    except ConfigurationError as exc:
        if url is None:
            raise
        raise Unsupported(f"Queue(db={store.kind} URL) raised ConfigurationError: {exc}") from exc
    try:
        queue.register(register, type=type_)
        queue.init()
        yield queue
    finally:
        queue.shutdown()


# -- workloads ----------------------------------------------------------------------------
def _w1_like(
    queue: Any,
    n: int,
    label: str,
    *,
    repeats: int = REPEATS,
    committed: Committed | None = None,
) -> dict[str, Any]:
    from nbqueue import Task

    warm = [Task("warm-up", "inc", data=i) for i in range(WARMUP)]
    for t in warm:
        queue.add(t)
    queue.wait()
    if repeats > 1:  # (a database queue gets a fresh queue per run instead: no clear())
        queue.clear()

    def submit(i: int) -> Any:
        task = Task("t", "inc", data=i)
        queue.add(task)
        return task

    def collect(tasks: list[Any]) -> list[int]:
        queue.wait()
        values = [t.result["value"] for t in tasks]
        if committed is not None:
            committed.wait([t.uid for t in tasks])
        return values

    between = queue.clear if repeats > 1 else None
    return throughput(n, submit, collect, repeats=repeats, between=between, label=label)


def _combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from single-run results (one fresh queue and database each)."""
    each = [r["runs"][0] for r in runs]
    rates = [x["tasks_per_s"] for x in each]
    return {
        "n": runs[0]["n"],
        "tasks_per_s": statistics.median(rates),
        "min_tasks_per_s": min(rates),
        "max_tasks_per_s": max(rates),
        "runs": each,
    }


def _throughput_on(s: System, store: Store, tpw: int, workload: str, n: int) -> None:
    """W1 or W3. In memory: one queue, cleared between runs. On a database: a fresh queue
    and an empty database for each run (so every run starts alike), and for W3 the clock
    stops only when every task is committed as completed."""
    options = W3_QUEUE_OPTIONS.get(store.kind, {}) if workload == "w3" else {}
    if store.kind == "memory":
        with open_queue(store, tpw) as queue:
            out = _w1_like(queue, n, workload)
    else:
        runs, waits = [], []
        for r in range(REPEATS):
            with open_queue(store, tpw, **options) as queue:
                assert store.last_url is not None
                committed = Committed(store.last_url) if workload == "w3" else None
                try:
                    runs.append(
                        _w1_like(queue, n, f"{workload} ({r + 1}/{REPEATS})", repeats=1,
                                 committed=committed)
                    )  # fmt: skip
                finally:
                    if committed is not None:
                        waits += committed.waits
                        committed.close()
        out = _combine(runs)
        if workload == "w3":
            out["commit_wait_s"] = waits
            s.note(
                "W3 stops the clock once every task is committed as completed in the database "
                "(read back through a connection of its own); W1 when the controller has "
                "every result. A fresh queue and database for each run"
            )
    s.record(workload, out | {"store": store.describe()})


def run_w1(s: System, store: Store, tpw: int) -> None:
    _throughput_on(s, store, tpw, "w1", N_W1)


def run_w3(s: System, store: Store, tpw: int) -> None:
    if store.kind != "memory":
        _throughput_on(s, store, tpw, "w3", N_W3)


def run_w2(s: System, store: Store, tpw: int) -> None:
    from nbqueue import Task

    with open_queue(store, tpw) as queue:

        def round_trip(i: int) -> int:
            task = Task("rt", "inc", data=i)
            queue.add(task)
            result = task.wait()
            assert result is not None
            return result["value"]  # type: ignore[no-any-return]

        s.record("w2", latency(N_W2, round_trip, label="w2") | {"store": store.describe()})


def run_w4(s: System, store: Store, tpw: int) -> None:
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


def _w5_once(store: Store, tpw: int, with_dashboard: bool) -> dict[str, Any]:
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
                from nbqueue import widgets

                dash = widgets.Dashboard(queue)
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
        bad = [t for t in tasks if t.result is None or t.result["value"] != W5_STEPS]
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


def run_w5(s: System, store: Store, tpw: int) -> None:
    """1,000 tasks reporting progress 100 times each, with a dashboard attached."""
    bare = _w5_once(store, tpw, with_dashboard=False)
    out = _w5_once(store, tpw, with_dashboard=True)
    out["controller_cpu_s_without_dashboard"] = bare["controller_cpu_s"]
    out["seconds_without_dashboard"] = bare["seconds"]
    out["store"] = store.describe()
    out["mode"] = "notebook (controller and dashboard on the caller's asyncio loop)"
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


def _run_all(s: System, store: Store, tpw: int) -> None:
    # W4 first: its RSS baseline must not carry what other workloads left behind.
    steps: list[tuple[str, Callable[[System, Store, int], None]]] = [
        ("w4", run_w4), ("w1", run_w1), ("w2", run_w2), ("w3", run_w3),
    ]  # fmt: skip
    for name, fn in steps:
        if not s.wants(name) or (name == "w3" and store.kind == "memory"):
            continue
        try:
            fn(s, store, tpw)
        except Unsupported as exc:
            for w in ("w1", "w2", "w3", "w4"):
                if w != "w3" or store.kind != "memory":
                    s.skip(w, str(exc))
            return


def main() -> None:
    s = System("nbqueue", "nbqueue", extra_args=options)
    args = s.args
    store = Store(args.store)
    tpw = args.tasks_per_worker
    name = f"nbqueue-{args.store}-tpw{tpw}" + ("-notebook" if args.mode == "notebook" else "")
    label = f"nbqueue, {store.describe()}, tasks_per_worker={tpw}"
    if args.mode == "notebook":
        label += ", notebook mode"
    s.data.update(system=name, label=label)
    with s:
        import nbqueue

        s.version(nbqueue=nbqueue.__version__)
        s.setting(store=store.describe(), tasks_per_worker=tpw, mode=args.mode)
        s.on_cleanup(store.close)
        if s.wants("w1") or s.wants("w2") or s.wants("w3") or s.wants("w4"):
            if args.mode == "notebook":

                async def in_loop() -> None:
                    _run_all(s, store, tpw)

                asyncio.run(in_loop())
            else:
                _run_all(s, store, tpw)
        if s.wants("w5"):

            async def w5() -> None:
                try:
                    run_w5(s, store, tpw)
                except Unsupported as exc:
                    s.skip("w5", str(exc))

            asyncio.run(w5())
        s.track()


if __name__ == "__main__":
    main()
