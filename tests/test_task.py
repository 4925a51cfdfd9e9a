"""Task options, state methods and one in-process attempt (no worker processes)."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from nbqueue import (
    ConfigurationError,
    Status,
    Task,
    TaskExecutor,
    TaskStatus,
    TaskTimeoutError,
    TaskValidationError,
    has_property,
)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "name"),
        ({"name": 3}, "name"),
        ({"type": ""}, "type"),
        ({"priority": "high"}, "priority"),
        ({"priority": 1.5}, "priority"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": True}, "max_retries"),
        ({"delay": -1}, "delay"),
        ({"delay": "soon"}, "delay"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -5}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"run_at": "tomorrow"}, "run_at"),
        ({"metadata": [1, 2]}, "metadata"),
        ({"description": 5}, "description"),
    ],
)
def test_invalid_options_raise_at_construction(kwargs: dict[str, object], message: str) -> None:
    options: dict[str, object] = {"name": "n", "type": "t", **kwargs}
    with pytest.raises(ConfigurationError, match=message):
        Task(**options)  # type: ignore[arg-type]


def test_units_are_seconds_or_timedelta() -> None:
    task = Task("n", "t", delay=dt.timedelta(milliseconds=1500), timeout=2)
    assert task.delay == 1.5
    assert task.timeout == 2.0
    assert not task.ready_to_run()


def test_defaults_come_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_TASK_RETRIES", "7")
    monkeypatch.setenv("TASK_TIMEOUT_MS", "1500")
    task = Task("n", "t")
    assert (task.max_retries, task.timeout) == (7, 1.5)
    monkeypatch.setenv("NBQUEUE_MAX_TASK_RETRIES", "2")
    monkeypatch.setenv("NBQUEUE_TASK_TIMEOUT_MS", "250")
    task = Task("n", "t")
    assert (task.max_retries, task.timeout) == (2, 0.25)
    monkeypatch.setenv("NBQUEUE_TASK_TIMEOUT_MS", "soon")
    with pytest.raises(ConfigurationError, match="TASK_TIMEOUT_MS"):
        Task("n", "t")


def test_run_at_in_the_future_is_not_ready() -> None:
    later = dt.datetime.now() + dt.timedelta(hours=1)
    task = Task("n", "t", run_at=later)
    assert task.run_at is not None and task.run_at.tzinfo is not None
    assert not task.ready_to_run()
    assert Task("n", "t", run_at=dt.datetime.now() - dt.timedelta(seconds=1)).ready_to_run()


def test_update_progress_rejects_values_outside_range() -> None:
    task = Task("n", "t")
    task.update_progress(42)
    assert task.progress == 42
    for bad in (-1, 101, "50", None):
        with pytest.raises(ConfigurationError, match="progress"):
            task.update_progress(bad)  # type: ignore[arg-type]
    assert task.progress == 42


def test_has_property_on_mappings_and_objects() -> None:
    class Email:
        to = "a@b"

    assert has_property({"email": 1}, "email")
    assert not has_property({"x": 1}, "email")
    assert has_property(Email(), "to")
    assert not has_property(None, "to")


def test_validate_names_the_failing_rule() -> None:
    def needs_email(task: Task[dict[str, int]]) -> bool:
        return has_property(task.data, "email")

    def raises(task: Task[object]) -> bool:
        raise RuntimeError("boom")

    task = Task("n", "t", data={"x": 1})
    assert Task("n", "t", data={"email": 1}).validate([needs_email])
    verdict = task.validate([needs_email])
    assert not verdict and "needs_email" in verdict.reason
    verdict = task.validate([raises])
    assert not verdict and "RuntimeError: boom" in verdict.reason


def test_retry_counts_attempts_up_to_max() -> None:
    task = Task("n", "t", max_retries=2)
    assert task.retry() and task.retry()
    assert task.status is Status.RETRYING and task.retry_count == 2
    assert not task.retry()


def test_cancel_outside_a_queue() -> None:
    task = Task("n", "t")
    assert task.cancel()
    assert task.status is Status.CANCELLED
    assert not task.cancel()


def test_get_status_snapshot() -> None:
    task = Task("n", "t", priority=3, user_id=9, metadata={"k": "v"})
    task.add_error(ValueError("bad"))
    snap = task.get_status()
    assert isinstance(snap, TaskStatus)
    assert (snap.uid, snap.status, snap.priority, snap.user_id) == (task.uid, "pending", 3, 9)
    assert snap.error == "ValueError: bad"
    assert TaskStatus.COMPLETED == "completed"


class Doubler(TaskExecutor[int, int]):
    def validation_schema(self):  # type: ignore[no-untyped-def]
        return [lambda task: isinstance(task.data, int)]

    def exec(self, task: Task[int]):  # type: ignore[no-untyped-def]
        task.update_progress(50)
        return {"processed": True, "value": task.data * 2}


def test_execute_in_process_success() -> None:
    task = Task("n", "doubler", data=21)
    result = task.execute(Doubler())
    assert result == {"processed": True, "value": 42}
    assert task.status is Status.COMPLETED and task.progress == 100


def test_execute_in_process_validation_failure_is_not_retried() -> None:
    task = Task("n", "doubler", data="x")
    with pytest.raises(TaskValidationError, match="lambda"):
        task.execute(Doubler())
    assert task.status is Status.FAILED and task.retry_count == 0


def test_execute_in_process_error_marks_retrying_when_schema_matches() -> None:
    def flaky(task: Task[None]) -> None:
        raise ConnectionError("network down")

    task = Task("n", "flaky", max_retries=1)
    with pytest.raises(ConnectionError):
        task.execute(flaky, retry_schema=["network"])
    assert task.status is Status.RETRYING and task.retry_count == 1
    with pytest.raises(ConnectionError):
        task.execute(flaky, retry_schema=[KeyError])
    assert task.status is Status.FAILED


def test_execute_in_process_times_out() -> None:
    release = threading.Event()

    def stuck(task: Task[None]) -> None:
        release.wait(10)

    task = Task("n", "stuck", timeout=0.1, max_retries=0)
    with pytest.raises(TaskTimeoutError):
        task.execute(stuck)
    release.set()
    assert task.status is Status.FAILED


def test_execute_async_exec_in_process() -> None:
    class AsyncExec(TaskExecutor[int, int]):
        async def exec(self, task: Task[int]):  # type: ignore[no-untyped-def,override]
            await task.sleep(0)
            return {"processed": True, "value": task.data}

    assert Task("n", "a", data=5).execute(AsyncExec())["value"] == 5
