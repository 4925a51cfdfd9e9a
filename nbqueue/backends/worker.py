"""The worker process: receives tasks over a pipe, runs them, streams results back.

Runs in a process started with ``spawn``. ``tasks_per_worker + 1`` serving threads take
turns: one at a time reads the pipe, and the one that reads a task while a slot is free
runs it itself, so that a lone task is read, run and answered on one thread, with no
thread to wake on the way (its outcome goes to the pipe from that thread). A thread that
ends a task starts the next one waiting, if any; more threads start waiting tasks at once
unless the tasks here are short (:data:`SHORT_TASK_SECONDS`). An ``async def exec`` runs
on the worker's event loop (the thread that started it waits for it). What tasks write is
captured per task (:mod:`nbqueue.backends.capture`).

A ticker thread sends what running tasks report: outcomes of tasks that end while others
run, starts, progress and output, every :data:`TICK_SECONDS` (progress and output alone
sooner); and, if no thread reads the pipe, it wakes one to read it: a CANCEL, a STOP or
more tasks are read promptly while a long task runs on the thread that read it.

Which tasks run is kept in a table shared with the controller (``LocalBackend``): when the
process dies, the tasks it was running count an attempt, whether or not their start was
reported, and no other. The process exits by itself when the controller goes away (pipe
closed, or the parent pid changes).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import inspect
import os
import pickle
import signal
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, NoReturn

from nbqueue import context, protocol, shared
from nbqueue.backends import capture, frames
from nbqueue.backends.outbox import COALESCE_SECONDS, PipeOutbox
from nbqueue.backends.runner import run_one
from nbqueue.registry import ExecutorCache
from nbqueue.task import Task

ORPHAN_CHECK_SECONDS = 0.5
#: While tasks run, how often what they reported is sent, and a thread is made to read the
#: pipe if none does and to start a waiting task if a slot is free.
TICK_SECONDS = COALESCE_SECONDS
#: Tasks that take less than this on average run one after another on the threads already
#: busy: waking another thread for each would cost more than it gains (they share one
#: GIL). Longer ones (or while nothing is known) start on a thread of their own at once.
SHORT_TASK_SECONDS = 0.001
#: Weight of the newest task in the average duration.
DURATION_WEIGHT = 0.2

#: A RUN command, numbered (the nth RUN this worker received is number n) instead of its
#: kind: (number, header, payload, task_type, executor_ref).
Run = tuple[int, tuple[Any, ...], bytes, str, tuple[str, str]]


class WorkerProcess:
    """State of one worker process."""

    def __init__(
        self, conn: Connection, tasks_per_worker: int, db_url: str | None, table: Any
    ) -> None:
        self.conn = conn
        self.reader = frames.FrameReader(conn.fileno())
        #: Shared with the controller: the number of the task each place runs, or 0.
        self.table = table
        self.outbox = PipeOutbox(conn)
        self.capture = capture.Capture(strays=True)
        self.fd_capture: capture.FdCapture | None = None
        self.executors = ExecutorCache()
        self.slots = tasks_per_worker
        # _lock is _cond's: taken alone (it is cheaper) unless the thread waits or notifies.
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        # Under _lock: RUN commands received so far, the tasks received and not started,
        # the places in the table that are free, how many tasks run, whether a thread
        # reads the pipe, the uids of tasks received and not finished, whether a task
        # started since the ticker last looked, whether the ticker waits for one to start.
        self.received = 0
        self.waiting: collections.deque[Run] = collections.deque()
        self.places = list(range(tasks_per_worker))
        self.running = 0
        self.reading = False
        self.known: set[str] = set()
        self.busy = False
        self.ticker_idle = False
        #: How many waiting tasks are left when the outcomes so far are sent (half of those
        #: waiting after the last read), so that the controller sends more before this
        #: worker runs out; 0: only once it has run out.
        self.refill_at = 0
        self.duration: float | None = None  # average, seconds
        self.cancel_events: dict[str, threading.Event] = {}
        self.async_futures: dict[str, concurrent.futures.Future[Any]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._db_url = db_url
        self._db: Any = None

    # -- AttemptHooks: what a running task reports to ----------------------------------------
    def report_progress(self, task: Task[Any], progress: float) -> None:
        self.capture.own_progress(task.uid)
        self.outbox.progress(task.uid, progress)

    def cancel_event(self, task: Task[Any]) -> threading.Event:
        with self._lock:
            event = self.cancel_events.get(task.uid)
            if event is None:
                event = self.cancel_events[task.uid] = threading.Event()
            return event

    def cancelled(self, task: Task[Any]) -> bool:
        event = self.cancel_events.get(task.uid)  # (set under _lock; a read needs none)
        return event is not None and event.is_set()

    # -- the threads ---------------------------------------------------------------------
    def start(self) -> None:
        """Start the ticker and all but one of the serving threads (the caller serves
        too)."""
        threading.Thread(target=self._tick, name="nbqueue-ticker", daemon=True).start()
        for i in range(self.slots):
            threading.Thread(target=self.serve, name=f"nbqueue-worker-{i + 1}", daemon=True).start()

    def _tick(self) -> None:
        """The sending thread: while tasks run, sends what they reported every
        TICK_SECONDS (progress and output COALESCE_SECONDS after they come), then wakes a
        serving thread if none reads the pipe or a waiting task could start. When no task
        ran during a whole tick, it waits for one to start (or for something to send)."""
        try:
            while True:
                with self._lock:
                    self.ticker_idle = not self.busy and not self.running
                    self.busy = False
                self.outbox.send_due(None if self.ticker_idle else TICK_SECONDS)
                with self._lock:
                    self.ticker_idle = False
                    if (self.running and not self.reading) or self._startable():
                        self._cond.notify()
        except BaseException:
            self.die()

    def serve(self) -> None:
        """One serving thread's work, forever: run a waiting task when a slot is free,
        else read the pipe when no other thread does, else wait. A worker that cannot go
        on says why (FATAL) and exits."""
        try:
            while True:
                work = self._next()
                if work is None:
                    self._read()
                else:
                    self.run_task(*work)
        except BaseException:
            self.die()

    def die(self) -> NoReturn:
        """Tell the controller why this worker cannot go on (the exception being handled),
        and exit."""
        try:
            self.outbox.deliver((protocol.FATAL, traceback.format_exc()))
        finally:
            os._exit(70)

    def _next(self) -> tuple[Run, int] | None:
        """Wait for something to do: a task to run and its place in the table, or None:
        read the pipe."""
        with self._lock:
            while True:
                if self.waiting and self.running < self.slots:
                    run = self.waiting.popleft()
                    place = self.places.pop()
                    self.table[place] = run[0]
                    self.running += 1
                    self.busy = True
                    if self.ticker_idle:
                        self.outbox.wake()
                    if self._startable() and not self._short():
                        self._cond.notify()  # another thread starts the next one
                    return run, place
                if not self.reading:
                    self.reading = True
                    return None
                self._cond.wait()

    def _startable(self) -> bool:
        return bool(self.waiting) and self.running < self.slots

    def _short(self) -> bool:
        return self.duration is not None and self.duration < SHORT_TASK_SECONDS

    def _read(self) -> None:
        try:
            commands = pickle.loads(self.reader.receive())
        except (EOFError, OSError):
            os._exit(0)  # the controller closed the pipe or died
        with self._lock:
            self.reading = False
            for command in commands:
                kind = command[0]
                if kind == protocol.RUN:
                    self.received += 1
                    self.known.add(command[1][0])
                    self.waiting.append((self.received, *command[1:]))
                elif kind == protocol.EXECUTOR:
                    self.executors.add_payload(command[1], command[2])
                elif kind == protocol.SHARED:  # its pickle is the next message
                    shared.provide(command[1], pickle.loads(self.reader.receive()))
                elif kind == protocol.CANCEL:
                    self._cancel(command[1])
                elif kind == protocol.STOP:
                    os._exit(0)
            self.refill_at = len(self.waiting) // 2

    def _cancel(self, uid: str) -> None:
        if uid not in self.known:
            return
        self.cancel_events.setdefault(uid, threading.Event()).set()
        future = self.async_futures.get(uid)
        if future is not None:
            future.cancel()

    def run_task(self, run: Run, place: int) -> None:
        """Run one task on this thread (it is in the table at ``place``) and send its
        outcome: from this thread when the worker has nothing else to do, or when half
        the tasks waiting here have started (the controller then sends more before they
        run out); else with the next batch, with whatever else is ready. Its start goes
        with the next batch."""
        _, header, payload, task_type, ref = run
        uid = header[0]
        self.outbox.later((protocol.STARTED, uid, time.time()))
        text = self.capture.begin(
            uid, lambda s: self.outbox.output(uid, s), lambda p: self.outbox.progress(uid, p)
        )
        began = time.perf_counter()
        outcome = run_one(self, self.executors, header, payload, task_type, ref, self.db, self.call)
        took = time.perf_counter() - began
        if self.fd_capture is not None:
            self.fd_capture.drain()
        rest = self.capture.end(text)
        if rest:
            self.outbox.output(uid, rest)
        with self._lock:
            self.table[place] = 0
            self.places.append(place)
            self.running -= 1
            self.known.discard(uid)
            self.cancel_events.pop(uid, None)
            idle = not self.running and not self.waiting
            refill = 0 < self.refill_at == len(self.waiting)
            old = self.duration
            self.duration = took if old is None else old + DURATION_WEIGHT * (took - old)
        if idle or refill:  # with the outcomes waiting to go, so that more tasks come
            self.outbox.deliver((outcome[0], uid, *outcome[1:]))
        else:  # with the outcomes of the tasks that run meanwhile, in one message
            self.outbox.later((outcome[0], uid, *outcome[1:]))

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call a hook from a task thread; a coroutine runs on the worker's event loop."""
        value = fn(*args)
        if value is None or not inspect.isawaitable(value):  # (None: most hooks)
            return value
        task = args[0] if args and isinstance(args[0], Task) else None
        future = asyncio.run_coroutine_threadsafe(_await(value, task), self.loop())
        if task is not None:
            with self._lock:
                self.async_futures[task.uid] = future
                if task.uid in self.cancel_events and self.cancel_events[task.uid].is_set():
                    future.cancel()
        try:
            return future.result()
        finally:
            if task is not None:
                with self._lock:
                    self.async_futures.pop(task.uid, None)

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(
                    target=self._loop.run_forever, name="nbqueue-worker-loop", daemon=True
                ).start()
            return self._loop

    def db(self) -> Any:
        if self._db_url is None:
            return None
        with self._lock:
            if self._db is None:
                import sqlalchemy

                self._db = sqlalchemy.create_engine(self._db_url)
            return self._db


async def _await(value: Any, task: Task[Any] | None) -> Any:
    """Await a hook's coroutine on the worker's loop, as the current task."""
    token = None if task is None else context.running(task)
    try:
        return await value
    finally:
        if token is not None:
            context.finished(token)


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(ORPHAN_CHECK_SECONDS)
        if os.getppid() != parent:
            os._exit(0)


def main(
    conn: Connection, tasks_per_worker: int, db_url: str | None, parent: int, table: Any
) -> None:
    """Entry point of a worker process; ``table`` is shared with the controller: which
    tasks it runs (see :class:`WorkerProcess`)."""
    # Jupyter interrupts (SIGINT) and restarts (SIGTERM) the kernel's whole process group,
    # and systemd stops a service's whole cgroup: a worker leaves that to its controller,
    # which drains or stops it, and exits by itself if the controller is gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.getppid() != parent:
        os._exit(0)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    worker = WorkerProcess(conn, tasks_per_worker, db_url, table)
    try:
        # The worker inherited the kernel's stdout and stderr, which Jupyter shows under
        # whichever cell ran last: what it writes goes to its tasks' output instead.
        worker.fd_capture = capture.FdCapture(worker.capture)
        worker.fd_capture.start()
        capture.install(worker.capture, keep_other_output=False)
        worker.start()
        worker.outbox.deliver((protocol.READY,))
    except BaseException:
        worker.die()
    worker.serve()
