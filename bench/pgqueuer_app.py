"""The PgQueuer worker factory, run by each worker process as
``pgq run bench.pgqueuer_app:main``.

One QueueManager per process on its own asyncpg connection (the docs' setup for the
manager that LISTENs: a direct connection, not a pool). Entrypoints are async in pgqueuer
1.x; ``inc`` is called inline (it does no I/O). PgQueuer keeps no return values, so
``whoami`` reports its pid in a file named after the job id in ``BENCH_PGQ_PIDDIR``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from pgqueuer import PgQueuer
from pgqueuer.models import Job

from bench import tasks

DSN = os.environ["BENCH_PGQ_DSN"]
PIDDIR = os.environ["BENCH_PGQ_PIDDIR"]


@asynccontextmanager
async def main() -> AsyncIterator[PgQueuer]:
    conn = await asyncpg.connect(dsn=DSN)
    pgq = PgQueuer.from_asyncpg_connection(conn)

    @pgq.entrypoint("inc")
    async def inc(job: Job) -> None:
        tasks.inc(int(job.payload or b"0"))

    @pgq.entrypoint("whoami")
    async def whoami(job: Job) -> None:
        await asyncio.sleep(float(job.payload or b"0"))
        with open(os.path.join(PIDDIR, str(job.id)), "w") as f:
            f.write(str(os.getpid()))

    try:
        yield pgq
    finally:
        await conn.close()
