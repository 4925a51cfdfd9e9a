"""RQ on the local Redis: 2 ``rq worker`` processes with ``SimpleWorker`` (jobs run in the
worker process; the default worker forks a process per job, ~100 tasks/s here)."""

from __future__ import annotations

import os
import time

from bench.common import (
    N_W1,
    N_W2,
    N_W3,
    REDIS_URL,
    WARMUP,
    WORKERS,
    System,
    latency,
    throughput,
    venv_script,
    wait_for_pids,
)


def main() -> None:
    with System("rq", "RQ, 2 SimpleWorkers, Redis") as s:
        import redis
        import rq

        from bench.tasks import inc, whoami

        s.version(rq=rq.__version__, redis_py=redis.__version__)
        conn = redis.Redis.from_url(REDIS_URL)
        conn.flushdb()  # this db only: it is the benchmark's own
        s.on_cleanup(conn.flushdb)
        queue = rq.Queue("nbqueue-bench", connection=conn)

        def result(job: rq.job.Job) -> object:
            res = job.latest_result(timeout=120)
            if res is None:
                raise TimeoutError(f"no result for job {job.id}")
            if res.type != res.Type.SUCCESSFUL:
                raise RuntimeError(f"job failed: {res.exc_string}")
            return res.return_value

        for n in range(WORKERS):
            s.spawn(
                [venv_script("rq"), "worker", "-u", REDIS_URL, "-q", "--worker-class",
                 "rq.worker.SimpleWorker", "--name", f"nbqueue-bench-{n}-{os.getpid()}",
                 "nbqueue-bench"],
                f"worker{n}",
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while rq.Worker.count(connection=conn) < WORKERS:
            if time.monotonic() > deadline:
                raise RuntimeError("the rq workers did not register within 60 s")
            time.sleep(0.01)
        wait_for_pids(lambda: [result(j) for j in [queue.enqueue(whoami, 0.02) for _ in range(2)]])
        s.track()
        [result(j) for j in [queue.enqueue(inc, i) for i in range(WARMUP)]]

        def collect(jobs: list) -> list:
            return [result(j) for j in jobs]

        storage = "Redis in memory (the local server keeps nothing on disk)"
        if s.wants("w1"):
            s.record("w1", throughput(N_W1, lambda i: queue.enqueue(inc, i), collect, label="w1"))
        if s.wants("w2"):
            s.record("w2", latency(N_W2, lambda i: result(queue.enqueue(inc, i)), label="w2"))
        if s.wants("w3"):
            s.record(
                "w3",
                throughput(N_W3, lambda i: queue.enqueue(inc, i), collect, label="w3")
                | {"storage": storage},
            )
        s.setting(storage=storage)
        s.note("queue.enqueue(inc, i); results by job.latest_result(timeout) (blocking read)")


if __name__ == "__main__":
    main()
