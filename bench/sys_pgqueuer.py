"""PgQueuer on the local PostgreSQL, driven as the peer harness drives it.

Two worker processes ``pgq run bench.pgqueuer_app:main`` (one QueueManager each on its own
asyncpg connection; library defaults: batch_size 10, dequeue woken by LISTEN/NOTIFY with a
polling fallback). Tables from ``pgq install`` (every table logged: durable).

Producer: ``SyncQueries.enqueue`` over a psycopg autocommit connection, one INSERT and one
commit per task. Join: one ``CompletionWatcher`` (LISTEN/NOTIFY, 50 ms debounce), the docs'
"wait for all jobs" pattern. PgQueuer keeps no return values: a task counts as done once
its final status is ``successful``.

``--batch-submit`` (W1/W3 only; not the workload as defined): the clock runs from one
``SyncQueries.enqueue(list)`` of all n tasks (one INSERT, one commit) to the last
completion, to show how fast the workers drain when submission does not commit per task.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import tempfile
from typing import Any

from bench import pg
from bench.common import (
    N_W1,
    N_W2,
    N_W3,
    WARMUP,
    WORKERS,
    System,
    child_env,
    latency,
    throughput,
    venv_script,
    wait_for_pids,
)

DATABASE = "nbqueue_bench_pgqueuer"
PER_TASK = "one INSERT and one commit per enqueue (SyncQueries.enqueue, autocommit)"
BATCH = "all n tasks in one SyncQueries.enqueue(list) call (one INSERT, one commit), in the clock"


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-submit", action="store_true", help="one INSERT for all tasks")


def main() -> None:
    s = System("pgqueuer", "PgQueuer, 2 x `pgq run`, one commit per enqueue", extra_args=options)
    batch = s.args.batch_submit
    if batch:
        s.data.update(system="pgqueuer-batch", label="PgQueuer, all tasks in one batch INSERT")
    piddir = tempfile.mkdtemp(prefix="nbqueue-bench-pgq-")
    os.environ["BENCH_PGQ_DSN"] = pg.url_for(DATABASE)
    os.environ["BENCH_PGQ_PIDDIR"] = piddir
    try:
        with s:
            s.on_cleanup(lambda: shutil.rmtree(piddir, ignore_errors=True))
            _run(s, batch, piddir)
    finally:
        pg.drop(DATABASE)  # after `with s`: its workers have stopped by then


def _run(s: System, batch: bool, piddir: str) -> None:
    import asyncpg
    import pgqueuer
    import psycopg
    from pgqueuer.core.completion import CompletionWatcher
    from pgqueuer.db import AsyncpgDriver, SyncPsycopgDriver
    from pgqueuer.queries import Queries, SyncQueries

    s.version(pgqueuer=pgqueuer.__version__, asyncpg=asyncpg.__version__,
              psycopg=psycopg.__version__)  # fmt: skip
    pg.recreate(DATABASE)
    url = pg.url_for(DATABASE)
    subprocess.run([venv_script("pgq"), "--pg-dsn", url, "install"], check=True,
                   stdout=subprocess.DEVNULL, env=child_env())  # fmt: skip
    sync_conn = psycopg.connect(url, autocommit=True)
    s.on_cleanup(sync_conn.close)
    persistence = dict(sync_conn.execute(
        "SELECT relname, relpersistence FROM pg_class WHERE relname IN "
        "('pgqueuer', 'pgqueuer_log', 'pgqueuer_statistics')"
    ).fetchall())  # fmt: skip
    logged = len(persistence) == 3 and set(persistence.values()) == {"p"}
    storage = pg.describe() + (
        ", pgqueuer tables logged (durable)" if logged else f", relpersistence {persistence}"
    )
    s.setting(storage=storage, enqueue=BATCH if batch else PER_TASK)
    queries = SyncQueries(SyncPsycopgDriver(sync_conn))

    loop = asyncio.new_event_loop()
    s.on_cleanup(loop.close)

    async def open_watcher() -> tuple[Any, Any]:
        conn = await asyncpg.connect(dsn=url)
        driver = AsyncpgDriver(conn)
        watcher = CompletionWatcher(driver, queries=Queries(driver))
        await watcher.__aenter__()
        return conn, watcher

    conn, watcher = loop.run_until_complete(open_watcher())

    async def close_watcher() -> None:
        await watcher.__aexit__(None, None, None)
        await conn.close()

    s.on_cleanup(lambda: loop.run_until_complete(close_watcher()))

    async def statuses(ids: list[Any]) -> list[str]:
        return list(await asyncio.gather(*[watcher.wait_for(j) for j in ids]))

    def wait_all(ids: list[Any], timeout: float = 300) -> list[Any]:
        done = loop.run_until_complete(asyncio.wait_for(statuses(ids), timeout))
        # no return values in pgqueuer: a task is done once it is 'successful'
        return [i + 1 if st == "successful" else st for i, st in enumerate(done)]

    def whoami_pair() -> list[int]:
        s.check_spawned()
        ids = [queries.enqueue("whoami", b"0.02")[0] for _ in range(2)]
        wait_all(ids, timeout=30)
        pids = []
        for j in ids:
            with open(os.path.join(piddir, str(j))) as f:
                pids.append(int(f.read()))
        return pids

    def submit(i: int) -> Any:
        return queries.enqueue("inc", str(i).encode())[0]

    def round_trip(i: int) -> Any:
        status = wait_all([submit(i)])[0]
        return i + 1 if status == 1 else status

    for n in range(WORKERS):
        # (pgqueuer 1.6.0's `pgq run` fails in its logger setup with typer 0.29: pin 0.24)
        s.spawn([venv_script("pgq"), "run", "bench.pgqueuer_app:main"], f"worker{n}")
    wait_for_pids(whoami_pair)
    s.track()
    wait_all([submit(i) for i in range(WARMUP)])

    collect = wait_all
    if batch:

        def submit(i: int) -> Any:
            return i  # collected; enqueued all at once by collect()

        def collect(ids: list[Any], timeout: float = 300) -> list[Any]:
            payloads: list[bytes | None] = [str(i).encode() for i in ids]
            return wait_all(queries.enqueue(["inc"] * len(ids), payloads, [0] * len(ids)))

    if s.wants("w1"):
        s.record("w1", throughput(N_W1, submit, collect, label="w1"))
    if s.wants("w2") and not batch:
        s.record("w2", latency(N_W2, round_trip, label="w2"))
    if s.wants("w3"):
        s.record("w3", throughput(N_W3, submit, collect, label="w3") | {"storage": storage})
    s.note(
        f"2 x `pgq run` (QueueManager on an asyncpg connection, batch_size 10, LISTEN/NOTIFY); "
        f"producer: {BATCH if batch else PER_TASK}; join: CompletionWatcher (50 ms debounce)"
    )
    s.note("no return values in pgqueuer: a result is checked as final status 'successful'")


if __name__ == "__main__":
    main()
