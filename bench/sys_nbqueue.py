"""nbqueue: ``Queue(max_workers=2)`` at default options (or ``tasks_per_worker=N``), in
memory or on a database.

    python -m bench.sys_nbqueue --out r.json --store memory --workloads w1,w2
    python -m bench.sys_nbqueue --out r.json --store sqlite --workloads w1,w3
    python -m bench.sys_nbqueue --out r.json --store postgresql --workloads w3 --flush
    python -m bench.sys_nbqueue --out r.json --workloads w4      # a fresh process: RSS
    python -m bench.sys_nbqueue --out r.json --workloads w5      # dashboard attached
    python -m bench.sys_nbqueue --out r.json --workloads wbig    # a big shared input

``--mode notebook`` runs everything inside ``asyncio.run()``, as a Jupyter cell runs inside
the kernel's running event loop (the controller has a loop thread of its own either way);
``--mode thread`` (the default for W1-W4) is a plain script. W5 always runs in notebook
mode, with the dashboard attached.

On a database ``add()`` returns before the task's row is committed (a writer thread commits
in batches), so W3 stops its clock only once every task is committed as completed, read
back over a connection of its own. ``--flush`` also calls ``queue.flush()`` after the last
``add()``, inside the clock: every task is committed before the wait for results starts
(as with a queue that commits each enqueue). Workloads the installed nbqueue cannot run
(``Queue(db=...)`` refused, no ``flush()``, no ``put()``) are skipped with the reason.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench import shared_input
from bench.common import N_W1, N_W2, N_W3, REPEATS, WARMUP, System, latency, throughput
from bench.nbqueue_store import STORES, Committed, Store, Unsupported, open_queue
from bench.nbqueue_w45 import run_w4, run_w5
from bench.tasks import frame_rows_task

#: Extra ``Queue(...)`` options for W3 per store. Empty: nbqueue's persistence writes every
#: state change (in batches, from a writer thread) with the store's durable settings
#: (SQLite: WAL, synchronous=FULL). Put a durability option here if one appears.
W3_QUEUE_OPTIONS: dict[str, dict[str, Any]] = {"sqlite": {}, "postgresql": {}}

NEEDS_FLUSH = "needs flush(): Queue.flush(timeout=None) is not in this nbqueue yet"
NEEDS_PUT = "needs queue.put(): Queue.put(obj) -> handle is not in this nbqueue yet"


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", choices=STORES, default="memory")
    parser.add_argument("--tasks-per-worker", type=int, default=None,
                        help="default: the library's default (not passed)")  # fmt: skip
    parser.add_argument("--mode", choices=("thread", "notebook"), default="thread")
    parser.add_argument(
        "--flush", action="store_true", help="queue.flush() after the last add(), in the clock"
    )


@dataclasses.dataclass
class Setup:
    store: Store
    tpw: int | None  # None: the library's default tasks_per_worker
    flush: bool = False


# -- workloads ----------------------------------------------------------------------------
def _w1_like(
    queue: Any,
    n: int,
    label: str,
    *,
    repeats: int = REPEATS,
    committed: Committed | None = None,
    flush: bool = False,
) -> dict[str, Any]:
    from nbqueue import Task

    if flush and not hasattr(queue, "flush"):
        raise Unsupported(NEEDS_FLUSH)
    warm = [Task("warm-up", "inc", data=i) for i in range(WARMUP)]
    for t in warm:
        queue.add(t)
    queue.wait()
    if repeats > 1:  # (a database queue gets a fresh queue per run instead: no clear())
        queue.clear()
    flush_s: list[float] = []

    def submit(i: int) -> Any:
        task = Task("t", "inc", data=i)
        queue.add(task)
        return task

    def collect(tasks: list[Any]) -> list[int]:
        if flush:
            t0 = time.perf_counter()
            queue.flush()
            flush_s.append(time.perf_counter() - t0)
        queue.wait()
        values = [t.wait()["value"] for t in tasks]
        if committed is not None:
            committed.wait([t.uid for t in tasks])
        return values

    between = queue.clear if repeats > 1 else None
    out = throughput(n, submit, collect, repeats=repeats, between=between, label=label)
    return out | ({"flush_s": flush_s} if flush else {})


def _combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from single-run results (one fresh queue and database each)."""
    each = [r["runs"][0] for r in runs]
    rates = [x["tasks_per_s"] for x in each]
    out = {
        "n": runs[0]["n"],
        "tasks_per_s": statistics.median(rates),
        "min_tasks_per_s": min(rates),
        "max_tasks_per_s": max(rates),
        "runs": each,
    }
    if "flush_s" in runs[0]:
        out["flush_s"] = [x for r in runs for x in r["flush_s"]]
    return out


def _throughput_on(s: System, setup: Setup, workload: str, n: int) -> None:
    """W1 or W3. In memory: one queue, cleared between runs. On a database: a fresh queue
    and an empty database for each run (so every run starts alike), and for W3 the clock
    stops only when every task is committed as completed."""
    store = setup.store
    options = W3_QUEUE_OPTIONS.get(store.kind, {}) if workload == "w3" else {}
    if store.kind == "memory":
        with open_queue(store, setup.tpw) as queue:
            out = _w1_like(queue, n, workload, flush=setup.flush)
    else:
        runs, waits = [], []
        for r in range(REPEATS):
            with open_queue(store, setup.tpw, **options) as queue:
                assert store.last_url is not None
                committed = Committed(store.last_url) if workload == "w3" else None
                try:
                    runs.append(
                        _w1_like(queue, n, f"{workload} ({r + 1}/{REPEATS})", repeats=1,
                                 committed=committed, flush=setup.flush)
                    )  # fmt: skip
                    if committed is not None:
                        committed.check()
                finally:
                    if committed is not None:
                        waits += committed.waits
                        committed.close()
        out = _combine(runs)
        if workload == "w3":
            out["commit_wait_s"] = waits
    s.record(workload, out | {"store": store.describe()})


def run_w1(s: System, setup: Setup) -> None:
    _throughput_on(s, setup, "w1", N_W1)


def run_w3(s: System, setup: Setup) -> None:
    _throughput_on(s, setup, "w3", N_W3)


def run_w2(s: System, setup: Setup) -> None:
    from nbqueue import Task

    with open_queue(setup.store, setup.tpw) as queue:

        def round_trip(i: int) -> int:
            task = Task("rt", "inc", data=i)
            queue.add(task)
            return task.wait()["value"]  # type: ignore[no-any-return]

        s.record("w2", latency(N_W2, round_trip, label="w2") | {"store": setup.store.describe()})


def run_big(s: System, setup: Setup) -> None:
    """The big shared input: ``handle = queue.put(frame)``, then one task per reader with
    the handle as its data; the worker's ``task.data`` is the frame itself."""
    from nbqueue import Task

    with open_queue(setup.store, setup.tpw, register=frame_rows_task, type_="rows") as queue:
        if not hasattr(queue, "put"):
            raise Unsupported(NEEDS_PUT)
        warm = [Task("warm-up", "rows", data=[0]) for _ in range(4)]
        for t in warm:
            queue.add(t)
        queue.wait()

        def run(handle: Any, n: int) -> list[int]:
            tasks = [Task(f"big-{i}", "rows", data=handle) for i in range(n)]
            for t in tasks:
                queue.add(t)
            return [t.wait()["value"] for t in tasks]

        how = "handle = queue.put(frame); Task(..., data=handle) per task"
        s.record("wbig", shared_input.measure(shared_input.make_frame(), queue.put, run)
                 | {"how": how})  # fmt: skip


def _run_all(s: System, setup: Setup) -> None:
    # W4 first: its RSS baseline must not carry what other workloads left behind.
    steps: list[tuple[str, Callable[[System, Setup], None]]] = [
        ("w4", lambda s, setup: run_w4(s, setup.store, setup.tpw)),
        ("w1", run_w1), ("w2", run_w2), ("w3", run_w3), ("wbig", run_big),
    ]  # fmt: skip
    for name, fn in steps:
        if not s.wants(name) or (name == "w3" and setup.store.kind == "memory"):
            continue
        try:
            fn(s, setup)
        except Unsupported as exc:
            s.skip(name, str(exc))


def _describe(s: System, setup: Setup, mode: str) -> None:
    """Name, label and the notes that say how this row was driven."""
    store, tpw = setup.store, setup.tpw
    options = "default options" if tpw is None else f"tasks_per_worker={tpw}"
    name = f"nbqueue-{store.kind}-" + ("default" if tpw is None else f"tpw{tpw}")
    label = f"nbqueue, {store.describe()}, {options}"
    if mode == "notebook":
        name, label = name + "-notebook", label + ", notebook mode"
    if setup.flush:
        name, label = name + "-flush", label + ", clock includes flush()"
    s.data.update(system=name, label=label)
    s.setting(store=store.describe(), tasks_per_worker=tpw, mode=mode, flush=setup.flush)
    if store.kind == "memory":
        return
    enqueue = (
        "add() returns before the task's row is committed (a writer thread commits in batches)"
    )
    if setup.flush:
        enqueue += "; queue.flush() after the last add(), inside the clock, commits them all"
    s.setting(enqueue=enqueue)
    s.note(
        f"{enqueue}. W3 stops the clock once every task is committed as completed (read back "
        "over a connection of its own); W1 when the controller has every result. A fresh "
        "queue and database for each run"
    )


def main() -> None:
    s = System("nbqueue", "nbqueue", extra_args=options)
    args = s.args
    setup = Setup(Store(args.store), args.tasks_per_worker, args.flush)
    with s:
        import nbqueue

        s.version(nbqueue=nbqueue.__version__)
        _describe(s, setup, args.mode)
        s.on_cleanup(setup.store.close)
        if any(s.wants(w) for w in ("w1", "w2", "w3", "w4", "wbig")):
            if args.mode == "notebook":

                async def in_loop() -> None:
                    _run_all(s, setup)

                asyncio.run(in_loop())
            else:
                _run_all(s, setup)
        if s.wants("w5"):

            async def w5() -> None:
                try:
                    run_w5(s, setup.store, setup.tpw)
                except Unsupported as exc:
                    s.skip("w5", str(exc))

            asyncio.run(w5())
        s.track()


if __name__ == "__main__":
    main()
