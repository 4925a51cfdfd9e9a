"""Bad input: a clear exception at the earliest point, and nothing already queued lost."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from helpers import write_task

from nbqueue import (
    ConfigurationError,
    ExecutorImportError,
    ExecutorImportWarning,
    NbqueueError,
    Queue,
    SerializationError,
    Status,
    Task,
    UnknownTaskTypeError,
)


def inc(task: Task[int]) -> int:
    return task.data + 1  # type: ignore[operator]


@pytest.fixture
def queue_with_one_task() -> tuple[Queue, Task[int]]:
    q = Queue(max_workers=1).init()
    q.register(inc)
    queued = Task("queued", "inc", data=1)
    q.add(queued)
    yield q, queued
    q.shutdown()


def finishes(q: Queue, task: Task[int]) -> bool:
    q.wait(60)
    return task.status is Status.COMPLETED and task.result() == {"processed": True, "value": 2}


def test_unknown_type_names_known_types(queue_with_one_task: tuple[Queue, Task[int]]) -> None:
    q, queued = queue_with_one_task
    with pytest.raises(UnknownTaskTypeError, match=r"'nope'.*known types: 'inc'"):
        q.add(Task("x", "nope"))
    assert finishes(q, queued)


def test_unpicklable_data_is_refused_at_add(queue_with_one_task: tuple[Queue, Task[int]]) -> None:
    q, queued = queue_with_one_task
    with pytest.raises(SerializationError, match="data of task 'locked'"):
        q.add(Task("locked", "inc", data={"lock": threading.Lock()}))
    assert len(q.tasks) == 1
    assert finishes(q, queued)


def test_not_a_task_is_refused(queue_with_one_task: tuple[Queue, Task[int]]) -> None:
    q, queued = queue_with_one_task
    with pytest.raises(ConfigurationError, match="takes a Task"):
        q.add({"name": "x"})  # type: ignore[arg-type]
    assert finishes(q, queued)


def test_finished_task_cannot_be_added_again(
    queue_with_one_task: tuple[Queue, Task[int]],
) -> None:
    q, queued = queue_with_one_task
    done = Task("done", "inc")
    done.cancel()
    with pytest.raises(ConfigurationError, match="cancelled"):
        q.add(done)
    assert finishes(q, queued)


def test_progress_outside_range_fails_the_task() -> None:
    def overshoot(task: Task[None]) -> None:
        task.update_progress(150)

    with Queue(max_workers=1) as q:
        q.register(overshoot)
        t = Task("o", "overshoot", max_retries=0)
        q.add(t)
        with pytest.raises(ConfigurationError, match="from 0 to 100, got 150"):
            t.wait(60)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_workers": -1}, "max_workers"),
        ({"max_workers": 0}, "needs db="),
        ({"max_workers": "2"}, "max_workers"),
        ({"tasks_per_worker": 0}, "tasks_per_worker"),
        ({"worker_prefix": 5}, "worker_prefix"),
        ({"task_directory": "/no/such/dir"}, "not a directory"),
    ],
)
def test_invalid_queue_options(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Queue(**kwargs)  # type: ignore[arg-type]


def test_invalid_interval(queue_with_one_task: tuple[Queue, Task[int]]) -> None:
    q, queued = queue_with_one_task
    for bad in (0, -1, "5", None):
        with pytest.raises(ConfigurationError, match="interval_seconds"):
            q.run_automatically(bad)  # type: ignore[arg-type]
    assert finishes(q, queued)


def test_register_rejects_non_executors() -> None:
    q = Queue(max_workers=1)
    with pytest.raises(ConfigurationError, match="TaskExecutor"):
        q.register(42, type="x")
    with pytest.raises(ConfigurationError, match="lambda"):
        q.register(lambda task: None)


def test_broken_task_file_is_reported_and_others_work(task_dir: Path) -> None:
    write_task(task_dir, "good", "    def exec(self, task):\n        return {'processed': True}\n")
    (task_dir / "broken.py").write_text("import no_such_module_here\n")
    (task_dir / "empty.py").write_text("x = 1\n")
    (task_dir / "_helper.py").write_text("raise RuntimeError('never imported')\n")
    with pytest.warns(ExecutorImportWarning) as warned:
        q = Queue(task_dir, max_workers=1).init()
    try:
        reported = [w for w in warned if issubclass(w.category, ExecutorImportWarning)]
        assert sorted(str(w.message).split("'")[1] for w in reported) == ["broken", "empty"]
        assert {w.filename for w in reported} == {__file__}  # the line that called init()
        assert q.types == ["broken", "empty", "good"]
        assert "No module named 'no_such_module_here'" in q.import_errors["broken"]
        assert "exactly one TaskExecutor" in q.import_errors["empty"]
        with pytest.raises(ExecutorImportError, match="no_such_module_here"):
            q.add(Task("b", "broken"))
        t = Task("g", "good")
        q.add(t)
        q.wait(60)
        assert t.status is Status.COMPLETED
    finally:
        q.shutdown()


def test_every_error_is_an_nbqueue_error() -> None:
    import nbqueue.errors as errors

    classes = [
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type)
        and obj.__module__ == errors.__name__
        and issubclass(obj, Exception)
        and not issubclass(obj, Warning)
    ]
    assert all(issubclass(c, NbqueueError) for c in classes)
    plain = [c for c in classes if c.__init__ is NbqueueError.__init__]
    assert len(plain) > 10
    assert all(c().args[0] for c in plain)  # the docstring is the default message
