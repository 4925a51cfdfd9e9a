"""nbqueue on Dask: ``Queue(backend=DaskBackend(client))`` at default options, on the same
kind of LocalCluster (2 processes x 1 thread) as the plain Dask rows.

``wdask``: ``BENCH_WD_N`` (500) tasks ``inc`` added one by one, then ``queue.wait()``. The
backend keeps at most as many attempts in flight as the cluster has worker threads (so the
queue's priorities hold); the plain-Dask row it is compared with (``dask-capped``) submits
under the same cap.
"""

from __future__ import annotations

from typing import Any

from bench.common import N_WD, System, throughput
from bench.dask_cluster import start_cluster
from bench.tasks import inc_task

#: Warm-up tasks (few: at the cap they go one slot at a time).
WARMUP_TASKS = 20


def main() -> None:
    with System("nbqueue-dask", "nbqueue, Queue(backend=DaskBackend(client))") as s:
        import distributed

        import nbqueue
        from nbqueue import Queue, Task
        from nbqueue.backends import DaskBackend

        s.version(nbqueue=nbqueue.__version__, distributed=distributed.__version__)
        client = start_cluster(s)
        queue = Queue(backend=DaskBackend(client))
        s.on_cleanup(queue.shutdown)  # before the client and the cluster close
        queue.register(inc_task, type="inc")
        queue.init()
        warm = [Task("warm-up", "inc", data=i) for i in range(WARMUP_TASKS)]
        for t in warm:
            queue.add(t)
        queue.wait()
        queue.clear()

        def submit(i: int) -> Any:
            task = Task("t", "inc", data=i)
            queue.add(task)
            return task

        def collect(tasks: list[Any]) -> list[int]:
            queue.wait()
            return [t.wait()["value"] for t in tasks]

        if s.wants("wdask"):
            cap = sum(client.nthreads().values())
            s.record("wdask", throughput(N_WD, submit, collect, between=queue.clear,
                                         label="wdask") | {"cap": cap})  # fmt: skip
        s.note("Task('t', 'inc', data=i) added one by one, then queue.wait(); the backend keeps "
               "at most as many in flight as the cluster has worker threads")  # fmt: skip


if __name__ == "__main__":
    main()
