"""Profile nbqueue's controller with pyinstrument on one workload.

    python -m bench.profile_nbqueue                       # W1, 20,000 tasks, thread mode
    python -m bench.profile_nbqueue --workload w2 --n 2000
    python -m bench.profile_nbqueue --mode notebook       # the caller inside a running loop
    python -m bench.profile_nbqueue --out /tmp/prof       # also writes text and HTML reports
    python -m bench.profile_nbqueue --store sqlite --n 5000   # on a database

With ``--store sqlite|postgresql`` the database calls of the queue's writer thread (which
no profiler here samples) are counted and timed instead: calls, rows, seconds per method.

In thread mode the controller's work is split between the calling thread (``add()``,
``wait()``, results) and the controller's loop thread (reading worker messages): one
profiler runs in each, in notebook mode too (the caller then runs inside ``asyncio.run()``,
as a cell runs inside the kernel's loop). The CPU time of
the controller process and of the worker processes is printed as well, per 1,000 tasks,
so it is clear which side bounds the throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import time
from typing import Any

import psutil

from bench.common import WORKERS, cpu_seconds
from bench.tasks import inc_task


def _in_loop(queue: Any, fn: Any) -> Any:
    """Run ``fn`` on the controller's loop thread and return its result."""
    loop = queue._controller.loop.loop  # the controller's own thread
    done: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def call() -> None:
        try:
            done.set_result(fn())
        except BaseException as exc:
            done.set_exception(exc)

    loop.call_soon_threadsafe(call)
    return done.result(30)


def workload(queue: Any, name: str, n: int) -> None:
    from nbqueue import Task

    if name == "w1":
        tasks = []
        for i in range(n):
            task = Task("t", "inc", data=i)
            queue.add(task)
            tasks.append(task)
        queue.wait()
        assert [t.wait()["value"] for t in tasks] == [i + 1 for i in range(n)]
    elif name == "w2":
        for i in range(n):
            task = Task("rt", "inc", data=i)
            queue.add(task)
            assert task.wait()["value"] == i + 1
    elif name == "w4":
        for i in range(n):
            queue.add(Task(f"task-{i}", "inc", data=i))
        queue.status_frame()
    queue.clear()


class DbCalls:
    """Counts and times the storage adapter's methods (the writer thread's work)."""

    METHODS = ("write", "save", "delete", "load", "load_changed", "claim", "claim_next",
               "heartbeat", "requeue_expired")  # fmt: skip

    def __init__(self) -> None:
        self.stats: dict[str, list[float]] = {}  # name -> [calls, rows, seconds]
        self._undo: list[Any] = []

    def install(self) -> None:
        from nbqueue.store import DatabaseAdapter

        for name in self.METHODS:
            original = getattr(DatabaseAdapter, name)

            def timed(
                adapter: Any, *a: Any, _name: str = name, _f: Any = original, **k: Any
            ) -> Any:
                t0 = time.perf_counter()
                try:
                    return _f(adapter, *a, **k)
                finally:
                    st = self.stats.setdefault(_name, [0, 0, 0.0])
                    st[0] += 1
                    first = a[0] if a else None
                    st[1] += len(first) if isinstance(first, (list, set, tuple)) else 0
                    st[2] += time.perf_counter() - t0

            setattr(DatabaseAdapter, name, timed)
            self._undo.append((name, original))

    def reset(self) -> None:
        self.stats.clear()

    def report(self, n: int) -> str:
        lines = [f"{'method':16} {'calls':>7} {'rows':>8} {'seconds':>8} {'ms/call':>8}"]
        for name, (calls, rows, secs) in sorted(self.stats.items(), key=lambda x: -x[1][2]):
            lines.append(
                f"{name:16} {calls:7.0f} {rows:8.0f} {secs:8.3f} {1000 * secs / calls:8.2f}"
            )
        total = sum(v[2] for v in self.stats.values())
        lines.append(f"database time per 1,000 tasks: {1000 * total / n * 1000:.0f} ms")
        return "\n".join(lines)


def run(args: argparse.Namespace) -> None:
    from pyinstrument import Profiler

    from nbqueue import Queue, Task

    db_calls = None
    kwargs: dict[str, Any] = {}
    if args.store != "memory":
        from bench.nbqueue_store import Store

        store = Store(args.store)
        kwargs["db"] = store.url()
        db_calls = DbCalls()
        db_calls.install()
    queue = Queue(max_workers=WORKERS, tasks_per_worker=args.tasks_per_worker, **kwargs)
    queue.register(inc_task, type="inc")
    queue.init()
    try:
        warm = [Task("warm-up", "inc", data=i) for i in range(200)]
        for t in warm:
            queue.add(t)
        queue.wait()
        queue.clear()
        threaded = True  # the controller always runs on a thread of its own
        me = psutil.Process()
        kids = me.children()
        main_prof = Profiler(interval=args.interval, async_mode="disabled")
        loop_prof = Profiler(interval=args.interval, async_mode="disabled") if threaded else None
        cpu0 = cpu_seconds()
        kid0 = sum(cpu_seconds(k) for k in kids)
        if db_calls is not None:
            db_calls.reset()
        if loop_prof is not None:
            _in_loop(queue, loop_prof.start)
        main_prof.start()
        t0 = time.perf_counter()
        workload(queue, args.workload, args.n)
        wall = time.perf_counter() - t0
        main_prof.stop()
        if loop_prof is not None:
            _in_loop(queue, loop_prof.stop)
        cpu = cpu_seconds() - cpu0
        kid = sum(cpu_seconds(k) for k in kids) - kid0
    finally:
        queue.shutdown()

    per = 1000.0 / args.n
    print(
        f"{args.workload} n={args.n:,} tasks_per_worker={args.tasks_per_worker} "
        f"mode={args.mode}: {wall:.2f} s ({args.n / wall:,.0f} tasks/s)\n"
        f"CPU per 1,000 tasks: controller {cpu * per * 1000:.0f} ms, "
        f"workers {kid * per * 1000:.0f} ms (both together {(cpu + kid) * per * 1000:.0f} ms; "
        f"wall {wall * per * 1000:.0f} ms)"
    )
    if db_calls is not None:
        print(f"\n===== database calls ({args.store}) =====\n{db_calls.report(args.n)}")
    reports = [("calling thread", main_prof)]
    if loop_prof is not None:
        reports.append(("controller loop thread", loop_prof))
    for title, prof in reports:
        text = prof.output_text(unicode=True, show_all=False)
        flat = prof.output_text(unicode=True, flat=True)
        print(f"\n===== {title}: flat (self time) =====")
        print("\n".join(flat.splitlines()[: args.top + 8]))
        if args.tree:
            print(f"\n===== {title}: call tree =====")
            print(text)
        if args.out:
            os.makedirs(args.out, exist_ok=True)
            stem = os.path.join(args.out, f"{args.workload}-{title.split()[0]}")
            with open(stem + ".txt", "w") as f:
                f.write(text + "\n\n" + flat)
            with open(stem + ".html", "w") as f:
                f.write(prof.output_html())
    if args.out:
        print(f"\nreports in {args.out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_nbqueue", description=__doc__)
    parser.add_argument("--workload", choices=("w1", "w2", "w4"), default="w1")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--tasks-per-worker", type=int, default=16)
    parser.add_argument("--mode", choices=("thread", "notebook"), default="thread")
    parser.add_argument("--store", choices=("memory", "sqlite", "postgresql"), default="memory")
    parser.add_argument("--interval", type=float, default=0.0005, help="sampling, seconds")
    parser.add_argument("--top", type=int, default=25, help="rows of the flat profile")
    parser.add_argument("--tree", action="store_true", help="print the call trees too")
    parser.add_argument("--out", help="directory for text and HTML reports")
    args = parser.parse_args(argv)
    if args.mode == "notebook":

        async def in_loop() -> None:
            run(args)

        asyncio.run(in_loop())
    else:
        run(args)


if __name__ == "__main__":
    main()
