"""Celery on the local Redis (broker and result backend): one ``celery worker`` with
``--concurrency=2 --pool=prefork``, library defaults otherwise."""

from __future__ import annotations

import os

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
    with System("celery", "Celery, prefork x 2, Redis") as s:
        import celery
        import kombu
        import redis
        from celery.result import ResultSet

        from bench import celery_app as capp

        s.version(celery=celery.__version__, kombu=kombu.__version__, redis_py=redis.__version__)
        conn = redis.Redis.from_url(REDIS_URL)
        conn.flushdb()  # this db only: it is the benchmark's own
        s.on_cleanup(conn.flushdb)
        name = f"nbqueue-bench-{os.getpid()}@localhost"
        s.spawn(
            [venv_script("celery"), "-A", "bench.celery_app", "worker", f"--concurrency={WORKERS}",
             "--pool=prefork", "--loglevel=WARNING", "-n", name],
            "worker",
        )  # fmt: skip
        wait_for_pids(
            lambda: [r.get(timeout=120) for r in [capp.whoami.delay(0.02) for _ in range(2)]]
        )
        s.track()
        ResultSet([capp.inc.delay(i) for i in range(WARMUP)]).get(timeout=120)

        def collect(results: list) -> list:
            return ResultSet(results).get(timeout=300)  # type: ignore[no-any-return]

        storage = "Redis in memory (the local server keeps nothing on disk)"
        if s.wants("w1"):
            s.record("w1", throughput(N_W1, lambda i: capp.inc.delay(i), collect, label="w1"))
        if s.wants("w2"):
            s.record("w2", latency(N_W2, lambda i: capp.inc.delay(i).get(timeout=60), label="w2"))
        if s.wants("w3"):
            s.record(
                "w3",
                throughput(N_W3, lambda i: capp.inc.delay(i), collect, label="w3")
                | {"storage": storage},
            )
        s.setting(storage=storage, enqueue="one message per task to Redis in memory: never on disk")
        s.note("inc.delay(i); W1/W3 collect with ResultSet.get (Celery's join)")


if __name__ == "__main__":
    main()
