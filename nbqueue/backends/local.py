"""Local worker processes (``spawn``), talking to the controller over pipes."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import sys
import time
from collections.abc import Iterable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from nbqueue import checks, config, protocol, serialization
from nbqueue.backends import frames, worker
from nbqueue.backends.base import BackendSink, ExecutionBackend, WorkerInfo
from nbqueue.errors import ConfigurationError, WorkerCrashedError, WorkerStartError

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from nbqueue.backends.base import Runtime
    from nbqueue.registry import ExecutorSpec
    from nbqueue.task import Task

#: Tasks sent to a worker ahead of its free threads wait there, so that a thread that frees
#: up starts the next task at once (even while the controller is slowed down, say by a cell
#: computing in the kernel), and one pipe message carries several tasks. How many: enough
#: for about PREFETCH_SECONDS of work at the attempts' average duration, at most
#: PREFETCH_MAX. Long tasks get none, so that one worker never hoards tasks another,
#: idle worker could run. A worker sends its outcomes when half of what waits there has
#: started, so tiny tasks need a deep window to keep it busy while the controller reads
#: one batch and sends the next.
PREFETCH_SECONDS = 0.5
PREFETCH_MAX = 64
#: Weight of the newest attempt in the average duration.
DURATION_WEIGHT = 0.2
#: Workers that exit before they are ready this many times per slot in a row, with none
#: ready in between, are not started again: the queue raises WorkerStartError.
START_ATTEMPTS = 3


class _Worker:
    def __init__(
        self, slot: int, name: str, process: BaseProcess, conn: Connection, table: Any
    ) -> None:
        self.slot, self.name, self.process, self.conn = slot, name, process, conn
        self.reader = frames.FrameReader(conn.fileno())  # (one read per loop callback)
        # Shared with the worker process: the number of each task it runs (the nth task
        # sent to it is number n), 0 for a free place; it outlives the process.
        self.table = table
        self.tasks: dict[str, Task[Any]] = {}  # sent to it, started or waiting there
        self.numbers: dict[str, int] = {}  # uid -> its number, for the tasks above
        self.sent = 0
        self.started: dict[str, float] = {}  # uid -> when it started (epoch seconds)
        self.digests: set[str] = set()
        self.shared: set[str] = set()  # queue.put() objects it has
        self.aborted: set[str] = set()
        self.killed = False  # stopped on purpose (a timeout or cancel of one of its tasks)
        self.ready = False  # it said READY: it started
        self.fatal: str | None = None


def describe_exit(code: int | None) -> str:
    if code is None:
        return "an unknown status"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


class LocalBackend(ExecutionBackend):
    """``max_workers`` processes started with ``spawn``, each running up to
    ``tasks_per_worker`` tasks at once. A worker that dies is replaced, after a back-off
    that doubles with each crash in a row."""

    def __init__(
        self,
        *,
        max_workers: int = 1,
        tasks_per_worker: int = config.DEFAULT_TASKS_PER_WORKER,
        worker_prefix: str = config.DEFAULT_WORKER_PREFIX,
        db_url: str | None = None,
    ) -> None:
        for option, value, low in (
            ("max_workers", max_workers, 0),
            ("tasks_per_worker", tasks_per_worker, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigurationError(f"{option} must be an int >= {low}, got {value!r}")
        # a worker's name (prefix + number) is stored with each task it runs
        checks.text(
            worker_prefix, "worker_prefix", max_length=checks.MAX_NAME_LENGTH - 10, allow_empty=True
        )
        self.max_workers = max_workers
        self.tasks_per_worker = tasks_per_worker
        self.worker_prefix = worker_prefix
        self.db_url = db_url
        self._workers: dict[int, _Worker] = {}
        self._where: dict[str, _Worker] = {}
        self._crashes: dict[int, int] = {}
        self._restarts: dict[int, int] = {}
        self._failed_starts = 0  # workers that exited before they were ready, in a row
        self._stopping = False
        self._duration: float | None = None  # average attempt duration, seconds
        self._sink: BackendSink | None = None
        self._runtime: Runtime | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, sink: BackendSink, runtime: Runtime) -> None:
        self._sink, self._runtime = sink, runtime
        for slot in range(self.max_workers):
            self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        assert self._runtime is not None
        if self._stopping:
            return
        ctx = multiprocessing.get_context("spawn")
        ours, theirs = ctx.Pipe(duplex=True)
        table = ctx.RawArray("q", self.tasks_per_worker)
        name = f"{self.worker_prefix}{slot}"
        process = ctx.Process(
            target=worker.main,
            args=(theirs, self.tasks_per_worker, self.db_url, os.getpid(), table),
            name=name,
            daemon=True,
        )
        process.start()
        theirs.close()
        w = _Worker(slot, name, process, ours, table)
        self._workers[slot] = w
        self._runtime.add_reader(ours.fileno(), self._on_readable, w)

    def shutdown(self) -> None:
        self._stopping = True
        workers = list(self._workers.values())
        for w in workers:
            try:
                frames.send(w.conn, pickle.dumps([(protocol.STOP,)]))
            except OSError:
                pass
        for w in workers:
            w.process.join(config.SHUTDOWN_GRACE_SECONDS / max(1, len(workers)))
        for w in workers:
            if w.process.is_alive():
                w.process.kill()
                w.process.join(5)
            self._close(w)
        self._workers.clear()
        self._where.clear()

    def _close(self, w: _Worker) -> None:
        assert self._runtime is not None
        try:
            self._runtime.loop.remove_reader(w.conn.fileno())
        except (OSError, ValueError):
            pass
        w.conn.close()

    # -- dispatch ------------------------------------------------------------------------
    def free_slots(self) -> int:
        window = self.tasks_per_worker + self._prefetch()
        free = 0
        for w in self._workers.values():  # (a loop: this runs for every dispatch)
            if not w.killed and len(w.tasks) < window:
                free += window - len(w.tasks)
        return free

    def _prefetch(self) -> int:
        if self._duration is None:
            return 1  # nothing known yet: one each, to learn
        return min(PREFETCH_MAX, int(PREFETCH_SECONDS / max(self._duration, 1e-6)))

    def _finished(self, w: _Worker, uid: str) -> None:
        """An attempt ended: fold its duration into the average."""
        started = w.started.get(uid)
        if started is not None:
            took = max(0.0, time.time() - started)
            old = self._duration
            self._duration = took if old is None else old + DURATION_WEIGHT * (took - old)

    def capacity(self) -> int:
        return self.max_workers * self.tasks_per_worker

    def pace(self) -> float | None:
        if self._duration is None:
            return None
        return self.capacity() / max(self._duration, 1e-6)

    def submit(self, batch: list[tuple[Task[Any], ExecutorSpec]]) -> None:
        outgoing: dict[_Worker, list[tuple[Any, ...]]] = {}
        big: dict[_Worker, list[bytes]] = {}  # queue.put() pickles, sent as they are
        usable = [w for w in self._workers.values() if not w.killed]
        for task, spec in batch:
            w = min(usable, key=lambda w: len(w.tasks))
            commands = outgoing.setdefault(w, [])
            kind, value = spec.ref
            if kind == "pickle" and value not in w.digests:
                commands.append((protocol.EXECUTOR, value, spec.payload))
                w.digests.add(value)
            for digest, payload in task._shared:
                if digest not in w.shared:
                    commands.append((protocol.SHARED, digest))
                    big.setdefault(w, []).append(payload)
                    w.shared.add(digest)
            commands.append((protocol.RUN, task.header(), task._payload, task.type, spec.ref))
            w.sent += 1
            w.numbers[task.uid] = w.sent
            w.tasks[task.uid] = task
            self._where[task.uid] = w
        for w, commands in outgoing.items():
            self._send(w, commands, big.get(w, ()))

    def _send(
        self, w: _Worker, commands: list[tuple[Any, ...]], payloads: Iterable[bytes] = ()
    ) -> None:
        try:
            frames.send(w.conn, pickle.dumps(commands, serialization.PROTOCOL))
            for payload in payloads:  # after their SHARED commands, in order
                frames.send(w.conn, payload)
        except OSError:
            pass  # the worker is dying; its end-of-file handler requeues its tasks

    def cancel(self, uid: str) -> None:
        w = self._where.get(uid)
        if w is not None:
            self._send(w, [(protocol.CANCEL, uid)])

    def abort(self, uid: str) -> None:
        w = self._where.get(uid)
        if w is None:
            return
        w.aborted.add(uid)
        w.killed = True
        try:
            os.kill(w.process.pid, signal.SIGKILL)  # type: ignore[arg-type]
        except ProcessLookupError:
            pass

    def workers(self) -> list[WorkerInfo]:
        return [
            WorkerInfo(w.name, w.process.pid, w.process.is_alive() and not w.killed,
                       len(w.started), self.tasks_per_worker, self._restarts.get(w.slot, 0))
            for w in self._workers.values()
        ]  # fmt: skip

    # -- messages from workers -----------------------------------------------------------
    def _on_readable(self, w: _Worker) -> None:
        assert self._sink is not None and self._runtime is not None
        batches: list[list[tuple[Any, ...]]] = []
        gone = False
        try:
            batches = [pickle.loads(message) for message in w.reader.read()]
        except (EOFError, OSError):
            gone = True
        sink = self._sink
        with self._runtime.lock:
            if self._workers.get(w.slot) is not w:
                return
            for batch in batches:
                # tasks whose outcome came with their start (a lone task's always does)
                ended = {m[1] for m in batch if m[0] == protocol.DONE or m[0] == protocol.FAILED}
                for message in batch:
                    self._apply(w, sink, message, ended)
            if gone:
                self._on_exit(w)
            sink.capacity_changed()

    def _apply(
        self, w: _Worker, sink: BackendSink, message: tuple[Any, ...], ended: set[str]
    ) -> None:
        kind = message[0]
        if kind == protocol.READY:
            w.ready = True
            self._failed_starts = 0
            return
        if kind == protocol.FATAL:
            w.fatal = message[1]
            return
        uid = message[1]
        if uid not in w.tasks:
            return  # aborted, or removed from the queue meanwhile
        if kind == protocol.STARTED:
            w.started[uid] = message[2]
            sink.task_started(uid, w.name, message[2], ended=uid in ended)
        elif kind == protocol.PROGRESS:
            sink.task_progress(uid, message[2])
        elif kind == protocol.OUTPUT:
            sink.task_output(uid, message[2])
        elif kind == protocol.DONE:
            self._finished(w, uid)
            self._release(w, uid)
            self._crashes[w.slot] = 0
            sink.task_completed(uid, message[2], message[3])
        elif kind == protocol.FAILED:
            self._finished(w, uid)
            self._release(w, uid)
            sink.task_failed(uid, message[2], message[3], message[4])

    def _release(self, w: _Worker, uid: str) -> None:
        del w.tasks[uid]
        del w.numbers[uid]
        w.started.pop(uid, None)
        self._where.pop(uid, None)

    def _on_exit(self, w: _Worker) -> None:
        assert self._sink is not None and self._runtime is not None
        self._close(w)
        w.process.join(1.0)
        if w.process.is_alive():
            w.process.kill()
            w.process.join(5)
        del self._workers[w.slot]
        how = describe_exit(w.process.exitcode)
        # The tasks it was running, by its table, whether or not their start was reported
        # (a task that kills its worker at once counts an attempt); the others were
        # waiting there, or done with their outcome still unsent: no penalty.
        running = set(w.table)
        for uid in list(w.tasks):
            self._where.pop(uid, None)
            if uid in w.aborted:
                continue
            if w.killed or w.numbers[uid] not in running:
                self._sink.task_lost(uid, None)
                continue
            detail = f"\nworker traceback:\n{w.fatal}" if w.fatal else ""
            self._sink.task_lost(
                uid,
                WorkerCrashedError(
                    f"worker {w.name} (pid {w.process.pid}) died with {how} while running task "
                    f"{w.tasks[uid].name!r}; the worker has been replaced{detail}"
                ),
            )
        if self._stopping:
            return
        if not w.ready and not w.killed:
            self._failed_starts += 1
            if self._failed_starts >= START_ATTEMPTS * self.max_workers:
                self._sink.backend_failed(self._start_error(w, how))
                return
        if w.killed:
            delay = 0.0
        else:
            crashes = self._crashes.get(w.slot, 0)
            self._crashes[w.slot] = crashes + 1
            delay = min(config.RESTART_BACKOFF_CAP, config.RESTART_BACKOFF_BASE * 2**crashes)
        self._restarts[w.slot] = self._restarts.get(w.slot, 0) + 1
        self._runtime.call_later(delay, lambda: self._respawn(w.slot))

    def _start_error(self, w: _Worker, how: str) -> WorkerStartError:
        if w.fatal:
            why = f"The last one said:\n{w.fatal}"
        elif getattr(sys.modules["__main__"], "__file__", None):
            why = (
                'In a script, create and start the queue under `if __name__ == "__main__":` '
                "(each worker is started with multiprocessing's spawn, which imports the "
                "main module again); the workers' own error is on stderr."
            )
        else:
            why = "The workers' own error is on stderr."
        return WorkerStartError(
            f"nbqueue: the worker processes exit before they are ready ({how}, "
            f"{self._failed_starts} times in a row), so no task can run; the tasks stay "
            f"pending. {why}"
        )

    def _respawn(self, slot: int) -> None:
        assert self._runtime is not None and self._sink is not None
        with self._runtime.lock:
            if slot not in self._workers and not self._stopping:
                self._spawn(slot)
                self._sink.capacity_changed()
