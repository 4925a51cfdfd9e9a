"""Procrastinate on the local PostgreSQL, driven as the peer harness drives it.

Two worker processes ``procrastinate --app=bench.procrastinate_app.app worker
--concurrency 1`` (the default concurrency; jobs fetched one at a time, woken by
LISTEN/NOTIFY with the default polling fallback, the sync task run in a worker thread).
Schema from ``procrastinate schema --apply``.

Producer: ``inc.defer(x=i)`` per task (sync connector: one INSERT, one commit). Join: the
client polls the job table every 5 ms for the jobs still unfinished (procrastinate has no
completion notification). It keeps no return values: a task counts as done once its
status is ``succeeded``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from typing import Any

from bench import pg
from bench.common import (
    N_W1,
    N_W2,
    N_W3,
    ROOT,
    WARMUP,
    WORKERS,
    System,
    child_env,
    latency,
    throughput,
    venv_script,
    wait_for_pids,
)

DATABASE = "nbqueue_bench_procrastinate"
POLL_S = 0.005
APP = "--app=bench.procrastinate_app.app"
ENQUEUE = "one INSERT and one commit per defer (inc.defer, sync psycopg connector)"


def main() -> None:
    s = System("procrastinate", "procrastinate, 2 workers x concurrency 1")
    piddir = tempfile.mkdtemp(prefix="nbqueue-bench-procrastinate-")
    os.environ["BENCH_PROCRASTINATE_DSN"] = pg.url_for(DATABASE)
    os.environ["BENCH_PROCRASTINATE_PIDDIR"] = piddir
    try:
        with s:
            s.on_cleanup(lambda: shutil.rmtree(piddir, ignore_errors=True))
            _run(s, piddir)
    finally:
        pg.drop(DATABASE)  # after `with s`: its workers have stopped by then


def _run(s: System, piddir: str) -> None:
    import procrastinate
    import psycopg

    s.version(procrastinate=procrastinate.__version__, psycopg=psycopg.__version__)
    pg.recreate(DATABASE)
    subprocess.run([venv_script("procrastinate"), APP, "schema", "--apply"], check=True,
                   stdout=subprocess.DEVNULL, cwd=ROOT, env=child_env())  # fmt: skip
    storage = pg.describe() + ", procrastinate_jobs logged (durable)"
    s.setting(storage=storage, enqueue=ENQUEUE)

    from bench import procrastinate_app as papp

    papp.app.open()
    s.on_cleanup(papp.app.close)
    poll = psycopg.connect(pg.url_for(DATABASE), autocommit=True)
    s.on_cleanup(poll.close)

    def wait_all(ids: list[int], timeout: float = 300) -> list[Any]:
        pending, status = set(ids), {}
        deadline = time.monotonic() + timeout
        while pending:
            rows = poll.execute(
                "SELECT id, status::text FROM procrastinate_jobs "
                "WHERE id = ANY(%s) AND status NOT IN ('todo', 'doing')",
                (list(pending),),
            ).fetchall()
            for jid, st in rows:
                status[jid] = st
                pending.discard(jid)
            if pending:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(pending)} jobs unfinished")
                time.sleep(POLL_S)
        # no return values in procrastinate: a task is done once it 'succeeded'
        return [i + 1 if status[j] == "succeeded" else status[j] for i, j in enumerate(ids)]

    def whoami_pair() -> list[int]:
        s.check_spawned()
        ids = [papp.whoami.defer(delay=0.02) for _ in range(2)]
        wait_all(ids, timeout=30)
        pids = []
        for j in ids:
            with open(os.path.join(piddir, str(j))) as f:
                pids.append(int(f.read()))
        return pids

    def submit(i: int) -> int:
        return papp.inc.defer(x=i)

    def round_trip(i: int) -> Any:
        status = wait_all([submit(i)])[0]
        return i + 1 if status == 1 else status

    for n in range(WORKERS):
        s.spawn([venv_script("procrastinate"), APP, "--log-level", "warning", "worker",
                 "--concurrency", "1", "--name", f"nbqueue-bench-{n}-{os.getpid()}"],
                f"worker{n}")  # fmt: skip
    wait_for_pids(whoami_pair)
    s.track()
    wait_all([submit(i) for i in range(WARMUP)])

    if s.wants("w1"):
        s.record("w1", throughput(N_W1, submit, wait_all, label="w1"))
    if s.wants("w2"):
        s.record("w2", latency(N_W2, round_trip, label="w2"))
    if s.wants("w3"):
        s.record("w3", throughput(N_W3, submit, wait_all, label="w3") | {"storage": storage})
    s.note("2 x `procrastinate worker --concurrency 1` (LISTEN/NOTIFY, sync task in a thread); "
           f"producer: {ENQUEUE}; join: polls the unfinished job ids every "
           f"{POLL_S * 1000:.0f} ms")  # fmt: skip
    s.note("no return values in procrastinate: a result is checked as status 'succeeded'")


if __name__ == "__main__":
    main()
