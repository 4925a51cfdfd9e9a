"""dask.distributed LocalCluster: 2 worker processes with 1 thread each.

W1/W2: ``client.submit(inc, i, pure=False)`` per task. ``wdask``: the same tasks with at
most as many in flight as the cluster has worker threads (a new one submitted as each
finishes, through ``distributed.as_completed``): the cap nbqueue's Dask backend keeps, so
the two compare like for like. ``wbig``: ``client.scatter(frame)``, then one task per
reader on the scattered future.
"""

from __future__ import annotations

from typing import Any

from bench import shared_input
from bench.common import (
    N_W1,
    N_W2,
    N_WD,
    WARMUP,
    System,
    latency,
    throughput,
)
from bench.dask_cluster import start_cluster
from bench.tasks import frame_rows, inc


def capped(client: Any, n: int, cap: int) -> list[int]:
    """``inc(i)`` for i < n with at most ``cap`` futures in flight; results in order."""
    import distributed

    results: list[int] = [0] * n
    index: dict[str, int] = {}  # future key -> i
    pending = iter(range(min(cap, n), n))
    running = distributed.as_completed()

    def submit(i: int) -> None:
        future = client.submit(inc, i, pure=False)
        index[future.key] = i
        running.add(future)

    for first in range(min(cap, n)):
        submit(first)
    for done in running:
        results[index.pop(done.key)] = done.result()
        i = next(pending, None)
        if i is not None:
            submit(i)
    return results


def main() -> None:
    with System("dask", "Dask LocalCluster (2 processes x 1 thread)") as s:
        import dask
        import distributed

        s.version(dask=dask.__version__, distributed=distributed.__version__)
        client = start_cluster(s)
        client.gather([client.submit(inc, i, pure=False) for i in range(WARMUP)])
        if s.wants("w1"):
            s.record(
                "w1",
                throughput(
                    N_W1, lambda i: client.submit(inc, i, pure=False), client.gather, label="w1"
                ),
            )
        if s.wants("w2"):
            s.record(
                "w2",
                latency(N_W2, lambda i: client.submit(inc, i, pure=False).result(), label="w2"),
            )
        if s.wants("w1") or s.wants("w2"):
            s.note("client.submit(inc, i, pure=False); the scheduler runs in the client process")
        if s.wants("wdask"):
            cap = sum(client.nthreads().values())
            s.data.update(system="dask-capped", label=f"Dask futures, at most {cap} in flight")
            # submit() only collects; capped() submits as slots free up, inside the clock
            s.record("wdask", throughput(N_WD, lambda i: i, lambda ids: capped(
                client, len(ids), cap), label="wdask") | {"cap": cap})  # fmt: skip
            s.note(f"wdask: {N_WD} tasks inc(i), a new client.submit as each of the {cap} in "
                   "flight finishes (distributed.as_completed)")  # fmt: skip
        if s.wants("wbig"):
            s.data.update(system="dask-big", label="Dask, client.scatter(frame)")
            how = "fut = client.scatter(frame); client.submit(rows, fut) per task"
            s.record("wbig", shared_input.measure(
                shared_input.make_frame(), client.scatter,
                lambda fut, n: client.gather(
                    [client.submit(frame_rows, fut, pure=False) for _ in range(n)]
                ),
            ) | {"how": how})  # fmt: skip


if __name__ == "__main__":
    main()
