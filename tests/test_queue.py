"""The controller with real worker processes: scheduling, hooks, retries, status."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from pathlib import Path

import pytest
from helpers import poll, write_task

from nbqueue import (
    ConfigurationError,
    Queue,
    Status,
    Task,
    TaskExecutor,
    TaskFailedError,
    TaskValidationError,
)


def test_priority_then_creation_order(marker_dir: Path) -> None:
    log = marker_dir / "order.log"

    def record(task: Task[str]) -> None:
        with open(log, "a") as f:
            f.write(task.name + "\n")

    with Queue(max_workers=1, tasks_per_worker=1) as q:
        q.register(record)
        specs = [("low-1", 0), ("high-1", 5), ("mid", 2), ("high-2", 5), ("low-2", 0)]
        for name, priority in specs:
            q.add(Task(name, "record", priority=priority))
        q.wait(60)
    assert log.read_text().split() == ["high-1", "high-2", "mid", "low-1", "low-2"]


def test_closure_executor_and_result_round_trip() -> None:
    offset = 100

    def add_offset(task: Task[int]) -> int:
        return task.data + offset  # type: ignore[operator]

    with Queue(max_workers=2) as q:
        q.register(add_offset, type="add")
        tasks = [Task(f"t{i}", "add", data=i) for i in range(20)]
        for t in tasks:
            q.add(t)
        q.wait(60)
    assert [t.result()["value"] for t in tasks] == [i + 100 for i in range(20)]  # type: ignore[index]
    assert {t.worker for t in tasks} <= {"nbqueue-worker-0", "nbqueue-worker-1"}
    assert all(t.started_at and t.finished_at and t.started_at <= t.finished_at for t in tasks)


def test_register_as_decorator_and_class_executors() -> None:
    with Queue(max_workers=1) as q:

        @q.register(type="square")
        def square(task: Task[int]) -> int:
            return task.data**2  # type: ignore[operator]

        class Greeter(TaskExecutor[str, str]):
            def exec(self, task: Task[str]):  # type: ignore[no-untyped-def]
                return {"processed": True, "greeting": f"hello {task.data}"}

        q.register(Greeter, type="greet")
        a, b = Task("a", "square", data=7), Task("b", "greet", data="ada")
        q.add(a).add(b)
        assert a.wait(60) == {"processed": True, "value": 49}
        assert b.wait(60) == {"processed": True, "greeting": "hello ada"}
    assert callable(square)


def test_async_exec_runs_on_worker_loop() -> None:
    async def fetch(task: Task[int]) -> str:
        await task.sleep(0.01)
        await asyncio.sleep(0)
        return f"{asyncio.get_running_loop().__class__.__name__}:{task.data}"

    with Queue(max_workers=1) as q:
        q.register(fetch)
        t = Task("a", "fetch", data=3)
        q.add(t)
        assert t.wait(60)["value"].endswith(":3")  # type: ignore[index]


def test_tasks_per_worker_run_concurrently(marker_dir: Path) -> None:
    def rendezvous(task: Task[str]) -> int:
        (marker_dir / task.name).touch()
        deadline = time.monotonic() + 30
        while len(list(marker_dir.iterdir())) < 3:
            if time.monotonic() > deadline:
                raise RuntimeError("the three tasks did not run at the same time")
            time.sleep(0.01)
        return os.getpid()

    with Queue(max_workers=1, tasks_per_worker=3) as q:
        q.register(rendezvous)
        tasks = [Task(f"r{i}", "rendezvous", max_retries=0) for i in range(3)]
        for t in tasks:
            q.add(t)
        q.wait(60)
    assert [t.status for t in tasks] == [Status.COMPLETED] * 3
    assert len({t.result()["value"] for t in tasks}) == 1  # type: ignore[index]


def test_hooks_run_in_worker_and_errors_arrive(task_dir: Path, marker_dir: Path) -> None:
    write_task(
        task_dir,
        "hooked",
        f"""
    def validation_schema(self):
        return [lambda task: has_property(task.data, "n")]

    def exec(self, task):
        task.add_error(RuntimeError("context for debugging"))
        return {{"processed": True, "n": task.data["n"]}}

    def save_result(self, task, result, db):
        open({str(marker_dir / "saved")!r}, "w").write(str(result["n"]) + " " + str(db))

    def on_complete(self, task, result, db):
        open({str(marker_dir / "completed")!r}, "w").write(str(os.getpid()))

    def on_failure(self, task, result, error, db):
        open({str(marker_dir / "failed")!r}, "w").write(type(error).__name__)
""",
    )
    with Queue(task_dir, max_workers=1) as q:
        good, bad = Task("good", "hooked", data={"n": 5}), Task("bad", "hooked", data={})
        q.add(good).add(bad)
        q.wait(60)
    assert (marker_dir / "saved").read_text() == "5 None"
    assert int((marker_dir / "completed").read_text()) != os.getpid()
    assert good.errors[0].message == "context for debugging"
    assert bad.status is Status.FAILED and bad.retry_count == 0
    assert "has_property" in str(bad.error)
    assert (marker_dir / "failed").read_text() == "TaskValidationError"
    with pytest.raises(TaskValidationError):
        bad.wait()


def test_retries_with_backoff_until_success(marker_dir: Path) -> None:
    attempts = marker_dir / "attempts"

    def flaky(task: Task[None]) -> str:
        with open(attempts, "a") as f:
            f.write("x")
        if len(attempts.read_text()) < 3:
            raise ConnectionError("service unavailable")
        return "ok"

    seen: list[str] = []
    with Queue(max_workers=1) as q:
        q.register(flaky)
        q.events.subscribe(lambda kind, task: seen.append(kind))
        t = Task("f", "flaky", max_retries=3)
        q.add(t)
        assert t.wait(60)["value"] == "ok"  # type: ignore[index]
    assert t.retry_count == 2
    assert seen.count("retrying") == 2
    assert [e.type for e in t.errors] == ["ConnectionError", "ConnectionError"]


def test_retry_schema_limits_what_is_retried(task_dir: Path) -> None:
    write_task(
        task_dir,
        "picky",
        """
    def retry_schema(self):
        return [r"temporary", KeyError]

    def exec(self, task):
        kind = task.data
        if kind == "temporary":
            raise RuntimeError("temporary glitch")
        if kind == "key":
            raise KeyError("missing")
        raise ValueError("permanent")
""",
    )
    with Queue(task_dir, max_workers=1) as q:
        tasks = {k: Task(k, "picky", data=k, max_retries=2) for k in ("temporary", "key", "value")}
        for t in tasks.values():
            q.add(t)
        q.wait(60)
    assert tasks["temporary"].retry_count == 2 and tasks["temporary"].status is Status.FAILED
    assert tasks["key"].retry_count == 2
    assert tasks["value"].retry_count == 0 and tasks["value"].status is Status.FAILED
    with pytest.raises(ValueError, match="permanent"):
        tasks["value"].wait()


def test_progress_streams_while_running(marker_dir: Path) -> None:
    go = marker_dir / "go"

    def slow(task: Task[None]) -> None:
        task.update_progress(40)
        deadline = time.monotonic() + 30
        while not go.exists() and time.monotonic() < deadline:
            task.sleep(0.01)

    with Queue(max_workers=1) as q:
        q.register(slow)
        q.run_automatically(3600)
        t = Task("s", "slow")
        q.add(t)
        poll(lambda: t.progress == 40)
        assert t.status is Status.RUNNING
        go.touch()
        t.wait(60)
    assert t.progress == 100


def test_run_automatically_returns_at_once_and_dispatch_is_event_driven() -> None:
    def inc(task: Task[int]) -> int:
        return task.data + 1  # type: ignore[operator]

    with Queue(max_workers=2) as q:
        q.register(inc)
        q.run_automatically(3600)  # the tick never comes: completion relies on events
        tasks = [Task(str(i), "inc", data=i) for i in range(50)]
        for t in tasks:
            q.add(t)
        poll(lambda: all(t.status is Status.COMPLETED for t in tasks))


def test_without_processing_tasks_stay_pending_until_run_tasks() -> None:
    def inc(task: Task[int]) -> int:
        return task.data + 1  # type: ignore[operator]

    with Queue(max_workers=1) as q:
        q.register(inc)
        a, b = Task("a", "inc", data=1), Task("b", "inc", data=2, priority=1)
        q.add(a).add(b)
        assert q.get_pending_tasks() == [b, a]
        assert q.schedule_tasks() == [b, a]
        assert a.status is Status.PENDING
        q.run_tasks([a])
        poll(lambda: a.status is Status.COMPLETED)
        assert b.status is Status.PENDING
        q.run_tasks()
        poll(lambda: b.status is Status.COMPLETED)


def test_delay_and_run_at_are_honoured() -> None:
    def stamp(task: Task[None]) -> float:
        return time.time()

    with Queue(max_workers=1) as q:
        q.register(stamp)
        at = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=0.3)
        delayed, scheduled = Task("d", "stamp", delay=0.3), Task("s", "stamp", run_at=at)
        q.add(delayed).add(scheduled)
        q.wait(60)
    assert delayed.result()["value"] >= delayed.created_at.timestamp() + 0.3  # type: ignore[index]
    assert scheduled.result()["value"] >= at.timestamp()  # type: ignore[index]


def test_status_frame_and_statuses() -> None:
    def fail(task: Task[None]) -> None:
        raise ValueError("x" * 500)

    with Queue(max_workers=1) as q:
        q.register(fail)
        t = Task("f", "fail", max_retries=0)
        q.add(t)
        q.wait(60)
        frame = q.status_frame()
        statuses = q.get_task_statuses()
    assert list(frame.columns) == [
        "uid", "name", "type", "status", "priority", "progress", "retry_count", "created_at",
        "started_at", "finished_at", "duration", "worker", "error",
    ]  # fmt: skip
    row = frame.iloc[0]
    assert (row["uid"], row["status"], row["worker"]) == (t.uid, "failed", "nbqueue-worker-0")
    assert row["duration"] >= 0 and len(row["error"]) <= 200
    assert [s.status for s in statuses] == [Status.FAILED]


def test_remove_clear_get_task() -> None:
    def inc(task: Task[int]) -> int:
        return task.data + 1  # type: ignore[operator]

    with Queue(max_workers=1) as q:
        q.register(inc)
        a, b, c = (Task(n, "inc", data=1) for n in "abc")
        q.add(a).add(b).add(c)
        assert q.get_task(a.uid) is a
        assert q.remove(a.uid) and not q.remove(a.uid)
        assert q.get_task(a.uid) is None
        q.clear()
        assert q.tasks == [] and q.get_pending_tasks() == []
        q.wait(10)  # nothing left: returns at once
        d = Task("d", "inc", data=1)
        q.add(d)
        q.wait(60)
        assert d.status is Status.COMPLETED and a.status is Status.PENDING


def test_wait_timeout_raises_and_loses_nothing(marker_dir: Path) -> None:
    go = marker_dir / "go"

    def blocked(task: Task[None]) -> None:
        while not go.exists():
            task.sleep(0.01)

    with Queue(max_workers=1) as q:
        q.register(blocked)
        t = Task("b", "blocked")
        q.add(t)
        with pytest.raises(TimeoutError, match="1 task"):
            q.wait(0.2)
        go.touch()
        q.wait(60)
        assert t.status is Status.COMPLETED


def test_shutdown_is_idempotent_and_final() -> None:
    q = Queue(max_workers=1).init()
    assert q.init() is q
    q.shutdown()
    q.shutdown()
    with pytest.raises(Exception, match="shut down"):
        q.add(Task("a", "x"))


def test_failed_result_raises_from_wait() -> None:
    def boom(task: Task[None]) -> None:
        raise KeyError("nope")

    with Queue(max_workers=1) as q:
        q.register(boom)
        t = Task("b", "boom", max_retries=0)
        q.add(t)
        with pytest.raises(KeyError):
            t.wait(60)


def test_exec_must_return_processed(task_dir: Path) -> None:
    write_task(
        task_dir,
        "lazy",
        """
    def exec(self, task):
        return {"processed": False}
""",
    )
    with Queue(task_dir, max_workers=1) as q:
        t = Task("l", "lazy", max_retries=0)
        q.add(t)
        q.wait(60)
    assert t.status is Status.FAILED and t.error is not None
    assert t.error.type == "TaskNotProcessedError"
    with pytest.raises(TaskFailedError):
        raise TaskFailedError(str(t.error))


def test_add_twice_is_refused() -> None:
    with Queue(max_workers=1) as q:
        q.register(lambda task: None, type="noop")
        t = Task("a", "noop")
        q.add(t)
        with pytest.raises(ConfigurationError, match="already in a queue"):
            q.add(t)
        q.wait(60)
