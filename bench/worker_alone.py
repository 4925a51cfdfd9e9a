"""One local worker process driven directly over its pipe, without a controller: the
worker's own share of a round trip (W2) and of throughput (W1), so that it can be told
apart from the controller's.

    python -m bench.worker_alone                      # tasks_per_worker 1, then 16

Round trip: send one RUN of ``inc``, wait for its outcome, 3,000 times. Throughput: keep
``tasks_per_worker + 16`` tasks in flight (the local backend's most prefetch), refilling as
outcomes come. Medians of a few rounds.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import statistics
import time
from typing import Any

from bench.tasks import inc
from nbqueue import Task, protocol, serialization
from nbqueue.backends import worker
from nbqueue.executor import call_data
from nbqueue.registry import ExecutorSpec, Registry

ROUNDS = 5
PREFETCH = 16


def _start(tasks_per_worker: int) -> tuple[Any, Any]:
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe(duplex=True)
    table = ctx.RawArray("q", tasks_per_worker)
    args = (theirs, tasks_per_worker, None, os.getpid(), table)
    process = ctx.Process(target=worker.main, args=args, daemon=True)
    process.start()
    theirs.close()
    return process, ours


def _run(spec: ExecutorSpec, i: int) -> tuple[Any, ...]:
    task = Task(type=spec.type, data=call_data((i,), {}), name="inc")
    payload = serialization.dumps((task.data, task.metadata, task.user_id), "inc")
    return (protocol.RUN, task.header(), payload, task.type, spec.ref)


def _outcomes(conn: Any) -> tuple[int, int]:
    """Read one message: (outcomes in it, 1)."""
    messages = pickle.loads(conn.recv_bytes())
    return sum(m[0] in (protocol.DONE, protocol.FAILED) for m in messages), 1


def round_trips(conn: Any, spec: ExecutorSpec, n: int) -> tuple[float, float]:
    """p50 and p99 of ``n`` round trips, in microseconds."""
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        conn.send_bytes(pickle.dumps([_run(spec, i)]))
        while not _outcomes(conn)[0]:
            pass
        lat.append((time.perf_counter() - t0) * 1e6)
    lat.sort()
    return lat[n // 2], lat[int(n * 0.99)]


def throughput(conn: Any, spec: ExecutorSpec, n: int, window: int) -> tuple[float, float]:
    """Tasks per second and messages per task, ``window`` tasks in flight."""
    runs = [_run(spec, i) for i in range(n)]
    t0 = time.perf_counter()
    conn.send_bytes(pickle.dumps(runs[:window]))
    sent, done, messages = window, 0, 0
    while done < n:
        finished, one = _outcomes(conn)
        done, messages = done + finished, messages + one
        if finished and sent < n:
            conn.send_bytes(pickle.dumps(runs[sent : sent + finished]))
            sent += finished
    return n / (time.perf_counter() - t0), messages / n


def main() -> None:
    spec = Registry().register_call(inc)
    for tasks_per_worker in (1, 16):
        process, conn = _start(tasks_per_worker)
        conn.send_bytes(pickle.dumps([(protocol.EXECUTOR, spec.ref[1], spec.payload)]))
        round_trips(conn, spec, 300)  # warm-up
        trips = [round_trips(conn, spec, 3000) for _ in range(ROUNDS)]
        rates = [throughput(conn, spec, 5000, tasks_per_worker + PREFETCH) for _ in range(ROUNDS)]
        conn.send_bytes(pickle.dumps([(protocol.STOP,)]))
        process.join(5)
        print(
            f"tasks_per_worker={tasks_per_worker}: round trip p50 "
            f"{statistics.median(t[0] for t in trips):.0f} us, p99 "
            f"{statistics.median(t[1] for t in trips):.0f} us; "
            f"{statistics.median(r[0] for r in rates):,.0f} tasks/s, "
            f"{statistics.median(r[1] for r in rates):.2f} messages per task"
        )


if __name__ == "__main__":
    main()
