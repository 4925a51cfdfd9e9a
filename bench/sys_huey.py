"""Huey with SqliteHuey (a file) and a consumer of 2 worker processes (``-w 2 -k process``).

``--tuned``: poll every millisecond (consumer ``-d 0.001 -m 0.01``, client ``Result.get``
with a 1 ms delay) instead of the library's defaults (the consumer sleeps 0.1 s and more
when idle; ``Result.get`` polls from 50 ms up)."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile

from bench.common import (
    N_W1,
    N_W2,
    N_W3,
    WARMUP,
    WORKERS,
    System,
    latency,
    throughput,
    venv_script,
    wait_for_pids,
)

SYNC = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tuned", action="store_true", help="1 ms polling")


def main() -> None:
    tmp = tempfile.mkdtemp(prefix="nbqueue-bench-huey-")
    os.environ["BENCH_HUEY_DB"] = os.path.join(tmp, "huey.db")
    s = System("huey", "Huey, SqliteHuey, default polling", extra_args=options)
    tuned = s.args.tuned
    if tuned:
        s.data.update(system="huey-tuned", label="Huey, SqliteHuey, 1 ms polling")
    with s:
        s.on_cleanup(lambda: shutil.rmtree(tmp, ignore_errors=True))
        import huey

        from bench import huey_app as app

        s.version(huey=huey.__version__)
        get: dict[str, object] = {"blocking": True, "timeout": 120}
        cmd = [venv_script("huey_consumer"), "bench.huey_app.huey", "-w", str(WORKERS)]
        cmd += ["-k", "process", "-q"]
        if tuned:
            cmd += ["-d", "0.001", "-m", "0.01"]
            get.update(backoff=1.0, max_delay=0.001)
        conn = app.huey.storage.conn
        journal = conn.execute("pragma journal_mode").fetchone()[0]
        sync = conn.execute("pragma synchronous").fetchone()[0]
        storage = (
            f"SQLite file, journal_mode={journal}, synchronous={SYNC.get(sync, sync)} "
            "(a sync per commit)"
        )
        enqueue = f"one commit per enqueue (SQLite, synchronous={SYNC.get(sync, sync)})"
        s.setting(storage=storage, enqueue=enqueue)
        s.spawn(cmd, "consumer", cwd=tmp)
        wait_for_pids(lambda: [r.get(**get) for r in [app.whoami(0.02) for _ in range(2)]])
        s.track()
        [r.get(**get) for r in [app.inc(i) for i in range(WARMUP)]]

        def collect(results: list) -> list:
            return [r.get(**get) for r in results]

        if s.wants("w1"):
            s.record("w1", throughput(N_W1, app.inc, collect, label="w1"))
        if s.wants("w2"):
            s.record("w2", latency(N_W2, lambda i: app.inc(i).get(**get), label="w2"))
        if s.wants("w3"):
            s.record("w3", throughput(N_W3, app.inc, collect, label="w3") | {"storage": storage})


if __name__ == "__main__":
    main()
