"""The threads of a local worker process: the thread that reads a task runs it, and the
pipe is still read while it does; a worker runs up to tasks_per_worker tasks at once."""

from __future__ import annotations

import time
from pathlib import Path

from helpers import poll

from nbqueue import Queue, Status, Task


def test_a_task_sent_while_another_runs_on_the_reading_thread_starts(marker_dir: Path) -> None:
    """The first task runs on the thread that read it and never reaches a cancellation
    point until the second task has started in the same worker: the second task must be
    read and started meanwhile (and the first reported running, although it never returns
    to say so)."""
    gate = marker_dir / "second-ran"

    def first(task: Task[None]) -> str:
        while not gate.exists():
            time.sleep(0.01)
        return "first"

    def second(task: Task[None]) -> str:
        gate.touch()
        return "second"

    with Queue(max_workers=1, tasks_per_worker=2) as q:
        q.register(first)
        q.register(second)
        a = Task("a", "first", timeout=120)
        q.add(a)
        q.run_automatically(3600)
        poll(lambda: a.status is Status.RUNNING)
        b = Task("b", "second", timeout=120)
        q.add(b)
        assert b.wait(60)["value"] == "second"  # type: ignore[index]
        assert a.wait(60)["value"] == "first"  # type: ignore[index]
    assert a.retry_count == b.retry_count == 0


def test_a_worker_runs_tasks_per_worker_tasks_at_once(marker_dir: Path) -> None:
    """Three tasks in one worker with three slots wait for each other: they finish only if
    all three run at the same time."""

    def meet(task: Task[None]) -> str:
        (marker_dir / task.name).touch()
        while len(list(marker_dir.iterdir())) < 3:
            time.sleep(0.01)
        return task.name

    with Queue(max_workers=1, tasks_per_worker=3) as q:
        q.register(meet)
        tasks = [Task(f"m{i}", "meet", timeout=120) for i in range(3)]
        for task in tasks:
            q.add(task)
        q.run_automatically(3600)
        assert [t.wait(60)["value"] for t in tasks] == ["m0", "m1", "m2"]  # type: ignore[index]
