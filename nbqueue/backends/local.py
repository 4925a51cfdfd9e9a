"""Local worker processes (``spawn``), talking to the controller over pipes."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from nbqueue import config, protocol, serialization, worker
from nbqueue.backends.base import BackendSink, ExecutionBackend, WorkerInfo
from nbqueue.errors import ConfigurationError, WorkerCrashedError

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from nbqueue.registry import ExecutorSpec
    from nbqueue.runtime import Runtime
    from nbqueue.task import Task

#: Most messages read from one worker per loop callback, so one busy worker cannot starve
#: the others.
MAX_READS_PER_CALLBACK = 64
#: Tasks sent to a worker ahead of its free threads, as multiples of tasks_per_worker: they
#: wait in the worker, so that a thread that frees up starts the next task at once and one
#: pipe message carries several tasks.
PREFETCH = 4


class _Worker:
    def __init__(self, slot: int, name: str, process: BaseProcess, conn: Connection) -> None:
        self.slot, self.name, self.process, self.conn = slot, name, process, conn
        self.tasks: dict[str, Task[Any]] = {}  # sent to it, started or waiting there
        self.started: set[str] = set()
        self.digests: set[str] = set()
        self.aborted: set[str] = set()
        self.killed = False  # stopped on purpose (a timeout or cancel of one of its tasks)
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
        max_workers: int = config.DEFAULT_MAX_WORKERS,
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
        if not isinstance(worker_prefix, str):
            raise ConfigurationError(f"worker_prefix must be a string, got {worker_prefix!r}")
        self.max_workers = max_workers
        self.tasks_per_worker = tasks_per_worker
        self.worker_prefix = worker_prefix
        self.db_url = db_url
        self._workers: dict[int, _Worker] = {}
        self._where: dict[str, _Worker] = {}
        self._crashes: dict[int, int] = {}
        self._restarts: dict[int, int] = {}
        self._stopping = False
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
        name = f"{self.worker_prefix}{slot}"
        process = ctx.Process(
            target=worker.main,
            args=(theirs, self.tasks_per_worker, self.db_url, os.getpid()),
            name=name,
            daemon=True,
        )
        process.start()
        theirs.close()
        w = _Worker(slot, name, process, ours)
        self._workers[slot] = w
        self._runtime.loop.add_reader(ours.fileno(), self._on_readable, w)

    def shutdown(self) -> None:
        self._stopping = True
        workers = list(self._workers.values())
        for w in workers:
            try:
                w.conn.send_bytes(pickle.dumps([(protocol.STOP,)]))
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
        return sum(
            self.tasks_per_worker * PREFETCH - len(w.tasks)
            for w in self._workers.values()
            if not w.killed
        )

    def capacity(self) -> int:
        return self.max_workers * self.tasks_per_worker

    def submit(self, batch: list[tuple[Task[Any], ExecutorSpec]]) -> None:
        outgoing: dict[_Worker, list[tuple[Any, ...]]] = {}
        usable = [w for w in self._workers.values() if not w.killed]
        for task, spec in batch:
            w = min(usable, key=lambda w: len(w.tasks))
            commands = outgoing.setdefault(w, [])
            kind, value = spec.ref
            if kind == "pickle" and value not in w.digests:
                commands.append((protocol.EXECUTOR, value, spec.payload))
                w.digests.add(value)
            commands.append((protocol.RUN, task._header(), task._payload, task.type, spec.ref))
            w.tasks[task.uid] = task
            self._where[task.uid] = w
        for w, commands in outgoing.items():
            self._send(w, commands)

    def _send(self, w: _Worker, commands: list[tuple[Any, ...]]) -> None:
        try:
            w.conn.send_bytes(pickle.dumps(commands, serialization.PROTOCOL))
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
            for _ in range(MAX_READS_PER_CALLBACK):
                batches.append(pickle.loads(w.conn.recv_bytes()))
                if not w.conn.poll():
                    break
        except (EOFError, OSError):
            gone = True
        sink = self._sink
        with self._runtime.lock:
            if self._workers.get(w.slot) is not w:
                return
            for batch in batches:
                for message in batch:
                    self._apply(w, sink, message)
            if gone:
                self._on_exit(w)
            sink.capacity_changed()

    def _apply(self, w: _Worker, sink: BackendSink, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == protocol.FATAL:
            w.fatal = message[1]
            return
        uid = message[1]
        if uid not in w.tasks:
            return  # aborted, or removed from the queue meanwhile
        if kind == protocol.STARTED:
            w.started.add(uid)
            sink.task_started(uid, w.name, message[2])
        elif kind == protocol.PROGRESS:
            sink.task_progress(uid, message[2])
        elif kind == protocol.DONE:
            self._release(w, uid)
            self._crashes[w.slot] = 0
            sink.task_completed(uid, message[2], message[3])
        elif kind == protocol.FAILED:
            self._release(w, uid)
            sink.task_failed(uid, message[2], message[3], message[4])

    def _release(self, w: _Worker, uid: str) -> None:
        del w.tasks[uid]
        w.started.discard(uid)
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
        for uid in list(w.tasks):
            self._where.pop(uid, None)
            if uid in w.aborted:
                continue
            if w.killed or uid not in w.started:  # (waiting there, never started: no penalty)
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
        if w.killed:
            delay = 0.0
        else:
            crashes = self._crashes.get(w.slot, 0)
            self._crashes[w.slot] = crashes + 1
            delay = min(config.RESTART_BACKOFF_CAP, config.RESTART_BACKOFF_BASE * 2**crashes)
        self._restarts[w.slot] = self._restarts.get(w.slot, 0) + 1
        self._runtime.call_later(delay, lambda: self._respawn(w.slot))

    def _respawn(self, slot: int) -> None:
        assert self._runtime is not None and self._sink is not None
        with self._runtime.lock:
            if slot not in self._workers and not self._stopping:
                self._spawn(slot)
                self._sink.capacity_changed()
