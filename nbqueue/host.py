"""``nbqueue worker``: a long-running host that runs the tasks of a shared queue database.

A host is a queue with worker processes that never adds tasks: it claims ready tasks from
the database (priority, then creation order), runs them with the same hooks, retries,
timeouts and progress reporting as any queue, and writes everything back. SIGTERM (or a
first Ctrl-C) drains: no new claims, claimed-but-unstarted tasks handed back, running ones
finished; a second Ctrl-C stops at once (running tasks go back to pending).

A host runs whatever the database holds, so it refuses every unsigned pickle (task data,
results, executors) wherever the database is -- their tasks fail, in the database, with the
reason -- unless the opt-out (``--allow-unsigned``, NBQUEUE_ALLOW_UNSIGNED=1) is given; plain
JSON data and task-file executors need no signature.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from nbqueue import config, signing, store
from nbqueue.errors import NbqueueError
from nbqueue.queue import Queue
from nbqueue.task import Task

#: How often the main thread checks for a drain request.
TICK_SECONDS = 1.0


class _Signals:
    """SIGTERM / SIGINT turned into a drain request, then (second SIGINT) an immediate stop."""

    def __init__(self) -> None:
        self.drain = threading.Event()
        self.now = threading.Event()

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_int)

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        self.drain.set()

    def _on_int(self, signum: int, frame: FrameType | None) -> None:
        if self.drain.is_set():
            self.now.set()
            raise KeyboardInterrupt
        self.drain.set()


def serve(
    db: str,
    tasks: Path | None,
    *,
    processes: int,
    concurrency: int,
    name: str,
    lease_seconds: float,
    allow_unsigned: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """Run a host until SIGTERM or Ctrl-C; returns the exit status. ``allow_unsigned`` is
    the opt-out from refusing unsigned pickles (NBQUEUE_ALLOW_UNSIGNED=1 is another)."""
    adapter = store.make_adapter(db)
    assert adapter is not None
    signer = signing.for_database(adapter.url, host=True, allow_unsigned=allow_unsigned)
    adapter.signer = signer
    queue = Queue(
        tasks,
        db=adapter,
        max_workers=processes,
        tasks_per_worker=concurrency,
        worker_prefix=f"{name}-",
        lease_seconds=lease_seconds,
        name=name,
    )
    signals = _Signals()
    signals.install()

    def report(kind: str, task: Task[Any] | None) -> None:
        if kind == "finished" and task is not None and task.worker and task.worker.startswith(name):
            print(f"{name}: {task.status.value} {task.name} ({task.uid})", file=out, flush=True)

    queue.events.subscribe(report)
    try:
        queue.init()  # (warns when unsigned pickles are allowed)
        print(
            f"{name}: serving {signer.where} with {processes} process(es) x {concurrency}, "
            f"task types: {', '.join(queue.types) or 'none yet'}; {signer.summary()}",
            file=out,
            flush=True,
        )
        # the periodic pass polls for ready tasks; PostgreSQL notifications come sooner
        queue.run_automatically(config.sync_seconds())
        try:
            while not signals.drain.wait(TICK_SECONDS):
                queue.check()
        except NbqueueError as exc:  # (workers that cannot start, a lost database)
            # closed below (what it claimed goes back); a service manager restarts it
            print(f"{name}: stopping: {exc}", file=out, flush=True)
            return 1
        print(f"{name}: draining (Ctrl-C again to stop at once)", file=out, flush=True)
        queue.drain()
        print(f"{name}: drained", file=out, flush=True)
    except KeyboardInterrupt:
        print(f"{name}: stopping now; running tasks go back to the queue", file=out, flush=True)
    finally:
        queue.close()  # what is still running goes back to the queue
    return 0
