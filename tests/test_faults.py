"""Crashes, timeouts and cancellation, with real worker processes.

Like loky's crash table: each way a task can break its worker maps to the error the user
sees; after each, the queue keeps working with a replacement worker."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import poll

from nbqueue import (
    Queue,
    SerializationError,
    Status,
    Task,
    TaskCancelledError,
    TaskTimeoutError,
    WorkerCrashedError,
)


class Unloadable:
    """Pickles fine, fails to unpickle in the worker."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_refuse, ())


def _refuse() -> None:
    raise RuntimeError("cannot rebuild this object")


def crash_exit(task: Task[None]) -> None:
    os._exit(3)


def crash_sigkill(task: Task[None]) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def crash_segfault(task: Task[None]) -> None:
    import ctypes

    ctypes.string_at(0)


def raise_error(task: Task[None]) -> None:
    raise ZeroDivisionError("division by zero in task")


def unpicklable_result(task: Task[None]) -> Any:
    import threading

    return threading.Lock()


def read_data(task: Task[Any]) -> None:
    return None


CRASH_TABLE: list[tuple[str, Callable[..., Any], Any, type[BaseException], str]] = [
    ("os._exit", crash_exit, None, WorkerCrashedError, "exit code 3"),
    ("SIGKILL", crash_sigkill, None, WorkerCrashedError, "SIGKILL"),
    ("segfault", crash_segfault, None, WorkerCrashedError, "SIGSEGV"),
    ("raise", raise_error, None, ZeroDivisionError, "division by zero"),
    ("pickle result", unpicklable_result, None, SerializationError, "result of task"),
    ("unpickle data", read_data, Unloadable(), SerializationError, "cannot rebuild"),
]


@pytest.mark.parametrize(
    ("fn", "data", "error", "message"),
    [row[1:] for row in CRASH_TABLE],
    ids=[row[0] for row in CRASH_TABLE],
)
def test_crash_table(
    fn: Callable[..., Any], data: Any, error: type[BaseException], message: str
) -> None:
    def inc(task: Task[int]) -> int:
        return task.data + 1  # type: ignore[operator]

    with Queue(max_workers=1) as q:
        q.register(fn, type="breaks")
        q.register(inc)
        t = Task("b", "breaks", data=data, max_retries=0)
        q.add(t)
        with pytest.raises(error, match=message):
            t.wait(60)
        assert t.status is Status.FAILED
        after = Task("after", "inc", data=1)
        q.add(after)
        assert after.wait(60) == {"processed": True, "value": 2}


def test_crash_is_retried_then_fails_with_worker_crashed(marker_dir: Path) -> None:
    with Queue(max_workers=1) as q:
        q.register(crash_exit, type="crash")
        t = Task("c", "crash", max_retries=2)
        q.add(t)
        with pytest.raises(WorkerCrashedError, match="has been replaced"):
            t.wait(60)
    assert t.retry_count == 2
    assert [e.type for e in t.errors] == ["WorkerCrashedError"] * 3


def test_a_task_that_kills_its_worker_at_once_counts_each_attempt() -> None:
    """Its worker dies before it can say the task started: each attempt counts all the
    same, so the task stops after max_retries, and the tasks that waited behind it in that
    worker go back to the queue without penalty and finish."""

    def exit_at_once(task: Task[None]) -> None:
        os._exit(1)

    def inc(task: Task[int]) -> int:
        return task.data + 1  # type: ignore[operator]

    with Queue(max_workers=2) as q:
        q.register(exit_at_once)
        q.register(inc)
        crasher = Task("crasher", "exit_at_once", max_retries=2)
        q.add(crasher)
        others = [Task(f"other-{i}", "inc", data=i) for i in range(20)]
        for task in others:
            q.add(task)
        with pytest.raises(WorkerCrashedError, match="exit code 1"):
            crasher.wait(60)
        assert [task.wait(60)["value"] for task in others] == [i + 1 for i in range(20)]  # type: ignore[index]
        poll(lambda: len(q.workers()) == 2)  # (a worker is replaced after a back-off)
        assert sum(w.restarts for w in q.workers()) == 3  # exactly three attempts ran
    assert crasher.retry_count == 2
    assert [e.type for e in crasher.errors] == ["WorkerCrashedError"] * 3
    assert all(task.retry_count == 0 and not task.errors for task in others)


def test_sigkill_of_worker_pid_from_outside(marker_dir: Path) -> None:
    pidfile = marker_dir / "pid"

    def wait_forever(task: Task[None]) -> str:
        if task.retry_count == 0:
            pidfile.write_text(str(os.getpid()))
            while True:
                task.sleep(0.05)
        return "second attempt"

    with Queue(max_workers=1) as q:
        q.register(wait_forever)
        t = Task("w", "wait_forever", max_retries=1)
        q.add(t)
        q.run_automatically(3600)
        poll(lambda: pidfile.exists() and pidfile.read_text())
        os.kill(int(pidfile.read_text()), signal.SIGKILL)
        assert t.wait(60)["value"] == "second attempt"  # type: ignore[index]
    assert t.retry_count == 1 and t.errors[0].type == "WorkerCrashedError"


def test_spinning_task_times_out_and_co_runner_is_requeued(marker_dir: Path) -> None:
    started = marker_dir / "companion-started"

    def spin(task: Task[None]) -> None:
        while True:
            pass

    def companion(task: Task[None]) -> str:
        with open(started, "a") as f:
            f.write("x")
        if len(started.read_text()) == 1:
            time.sleep(60)  # runs beside the spinner on the same worker until it is killed
        return "done"

    with Queue(max_workers=1, tasks_per_worker=2) as q:
        q.register(spin)
        q.register(companion)
        c = Task("companion", "companion", max_retries=0, timeout=120)
        s = Task("spinner", "spin", timeout=0.5, max_retries=0)
        q.add(c)
        q.run_automatically(3600)
        poll(lambda: started.exists())
        q.add(s)
        with pytest.raises(TaskTimeoutError, match=r"timed out after 0\.5 s"):
            s.wait(60)
        assert c.wait(60)["value"] == "done"  # type: ignore[index]
    assert c.retry_count == 0 and not c.errors
    assert len(started.read_text()) == 2


def test_cancel_pending_and_retrying() -> None:
    with Queue(max_workers=1) as q:
        q.register(raise_error, type="fails")
        pending = Task("p", "fails")
        q.add(pending)
        assert q.cancel(pending.uid)
        assert pending.status is Status.CANCELLED
        assert not q.cancel(pending.uid) and not q.cancel("no-such-uid")
        retrying = Task("r", "fails", max_retries=5)
        q.add(retrying)
        q.run_automatically(3600)
        poll(lambda: retrying.status is Status.RETRYING)
        assert retrying.cancel()
        assert retrying.status is Status.CANCELLED
        with pytest.raises(TaskCancelledError):
            retrying.wait(60)
        q.wait(60)


def test_cancel_running_stops_at_cancellation_point(marker_dir: Path) -> None:
    def looping(task: Task[None]) -> None:
        while True:
            task.update_progress(10)
            task.sleep(0.01)

    with Queue(max_workers=1) as q:
        q.register(looping)
        t = Task("l", "looping", max_retries=3)
        q.add(t)
        q.run_automatically(3600)
        poll(lambda: t.progress == 10)
        pid = next(w.pid for w in q.workers())
        assert q.cancel(t.uid)
        with pytest.raises(TaskCancelledError):
            t.wait(60)
        assert t.status is Status.CANCELLED and t.retry_count == 0
        assert next(w.pid for w in q.workers()) == pid  # stopped cooperatively, not killed


def test_cancel_running_that_never_yields_is_killed(marker_dir: Path) -> None:
    flag = marker_dir / "running"

    def stubborn(task: Task[None]) -> None:
        flag.touch()
        while True:
            pass

    with Queue(max_workers=1) as q:
        q.register(stubborn)
        t = Task("s", "stubborn", timeout=120)
        q.add(t)
        q.run_automatically(3600)
        poll(flag.exists)
        assert q.cancel(t.uid)
        with pytest.raises(TaskCancelledError):
            t.wait(60)
        assert t.status is Status.CANCELLED


def test_async_task_cancelled_while_awaiting() -> None:
    async def sleeper(task: Task[None]) -> None:
        import asyncio

        task.update_progress(5)
        await asyncio.sleep(60)

    with Queue(max_workers=1) as q:
        q.register(sleeper)
        t = Task("a", "sleeper", timeout=120)
        q.add(t)
        q.run_automatically(3600)
        poll(lambda: t.progress == 5)
        q.cancel(t.uid)
        with pytest.raises(TaskCancelledError):
            t.wait(60)


def test_workers_exit_when_the_controller_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "controller.py"
    pids = tmp_path / "pids"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, sys, time
            from nbqueue import Queue, Task

            def hold(task):
                while True:
                    task.sleep(0.1)

            if __name__ == "__main__":
                q = Queue(max_workers=2, tasks_per_worker=1).init()
                q.register(hold)
                for i in range(2):
                    q.add(Task(str(i), "hold"))
                q.run_automatically(1)
                while sum(1 for t in q.tasks if t.started_at) < 2:
                    time.sleep(0.02)
                open({str(pids)!r}, "w").write(" ".join(str(w.pid) for w in q.workers()))
                time.sleep(600)
            """
        )
    )
    proc = subprocess.Popen([sys.executable, str(script)])
    try:
        poll(lambda: pids.exists() and len(pids.read_text().split()) == 2, timeout=60)
        workers = [psutil.Process(int(p)) for p in pids.read_text().split()]
        proc.kill()
        proc.wait(10)
        _, alive = psutil.wait_procs(workers, timeout=15)
        assert not alive, f"orphaned workers: {alive}"
    finally:
        proc.kill()
        proc.wait(10)


def test_close_is_bounded_with_busy_workers() -> None:
    def forever(task: Task[None]) -> None:
        while True:
            pass

    q = Queue(max_workers=2, tasks_per_worker=1).init()
    q.register(forever)
    tasks = [Task(str(i), "forever", timeout=120) for i in range(2)]
    for t in tasks:
        q.add(t)
    q.run_automatically(3600)
    poll(lambda: all(t.started_at for t in tasks))
    pids = [w.pid for w in q.workers()]
    q.close()
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids)
    assert all(t.status is Status.PENDING for t in tasks)


def test_workers_that_cannot_start_make_the_queue_raise_and_keep_the_tasks(tmp_path: Path) -> None:
    """A script that starts its queue outside ``if __name__ == "__main__":`` has workers
    that die while importing it (multiprocessing's spawn runs the main module again): the
    queue stops starting them and its wait() raises WorkerStartError saying so, instead of
    restarting them forever; the task stays pending in the database."""
    db = tmp_path / "q.db"
    script = tmp_path / "unguarded.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import json
            from nbqueue import Queue, Task, WorkerStartError

            q = Queue(db={f"sqlite:///{db}"!r}, max_workers=2).init()
            q.register(len, type="len")
            task = Task("a", "len", data=[1, 2])
            q.add(task)
            try:
                q.wait(timeout=120)
            except WorkerStartError as exc:
                print(json.dumps({{"error": str(exc), "status": task.status.value}}))
            q.close()  # (shutdown() would wait for the task, and raise the same error)
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["status"] == "pending"
    assert "before they are ready" in report["error"]
    assert 'if __name__ == "__main__":' in report["error"]
    assert "RuntimeError" in done.stderr  # the workers' own error
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT name, status FROM tasks").fetchall() == [("a", "pending")]
