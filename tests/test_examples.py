"""The example task files in tasks/, run through a real queue with worker processes."""

from __future__ import annotations

import importlib
import shutil
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from nbqueue import Queue, Status, Task, TaskValidationError

EXAMPLES = Path(__file__).resolve().parent.parent / "tasks"


@pytest.fixture
def examples(task_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the example task files, with its folder on sys.path the way test-task.py
    puts it there (undone after the test)."""
    monkeypatch.setattr(sys, "path", [str(task_dir), *sys.path])
    for path in EXAMPLES.glob("*.py"):
        shutil.copy(path, task_dir)
    return task_dir


def email_class() -> Any:
    """The examples' Email, as a notebook would import it."""
    return importlib.import_module("_models").Email


def test_test_task_completes_with_an_email_made_in_the_controller(examples: Path) -> None:
    Email = email_class()
    email = Email(to=["ada@example.com"], sender="hello@example.com", cc=["bob@example.com"])
    with Queue(examples, max_workers=1) as queue:
        task = Task("welcome", "test-task", data={"email": email})
        queue.add(task)
        queue.wait(timeout=60)

    # The rule `isinstance(data["email"], Email)` passed in the worker: the Email unpickled
    # there as an Email.
    assert task.status is Status.COMPLETED, task.errors
    assert task.retry_count == 0
    assert task.result() == {
        "processed": True,
        "data": True,
        "sent_to": ["ada@example.com", "bob@example.com"],
    }


@pytest.mark.parametrize(
    "data",
    [None, {}, {"email": "ada@example.com"}, {"email": {"to": ["ada@example.com"]}}],
    ids=["no-data", "no-email", "email-is-a-string", "email-is-a-dict"],
)
def test_test_task_with_bad_data_fails_validation_and_is_not_retried(
    examples: Path, data: Any
) -> None:
    with Queue(examples, max_workers=1) as queue:
        task = Task("welcome", "test-task", data=data, max_retries=3)
        queue.add(task)
        queue.wait(timeout=60)

    assert task.status is Status.FAILED
    assert task.retry_count == 0
    assert [e.type for e in task.errors] == ["TaskValidationError"]
    assert "has_email" in task.errors[0].message
    with pytest.raises(TaskValidationError, match="validation rule has_email"):
        task.wait()


def test_compress_image_reports_progress_and_returns_the_files(examples: Path) -> None:
    seen: list[float] = []
    sizes = [{"width": 64, "height": 48}, {"width": 128, "height": 96},
             {"width": 256, "height": 192}, {"width": 512, "height": 384}]  # fmt: skip
    with Queue(examples, max_workers=1) as queue:
        task = Task(
            "thumbnails",
            "compress-image",
            data={"image": "cat.jpg", "sizes": sizes, "step_seconds": 0.01},
        )

        def on_event(kind: str, t: Task[Any] | None) -> None:
            if kind == "progress" and t is task:
                seen.append(task.progress)

        queue.events.subscribe(on_event)
        queue.add(task)
        queue.wait(timeout=60)

    assert task.status is Status.COMPLETED, task.errors
    assert task.result() == {
        "processed": True,
        "files": ["cat-64x48.jpg", "cat-128x96.jpg", "cat-256x192.jpg", "cat-512x384.jpg"],
    }
    assert task.progress == 100.0
    # Progress streams from the worker in steps of 25 (updates close together may be
    # coalesced into one message, but never reordered; the last one is always delivered).
    assert seen and set(seen) <= {25.0, 50.0, 75.0, 100.0}
    assert seen == sorted(seen) and seen[-1] == 100.0


def test_compress_image_progress_is_visible_while_it_runs(examples: Path) -> None:
    reported = threading.Event()
    sizes = [{"width": w, "height": w} for w in range(1, 401)]
    with Queue(examples, max_workers=1) as queue:
        task = Task(
            "a long batch",
            "compress-image",
            timeout=120,
            data={"image": "big.png", "sizes": sizes, "step_seconds": 0.05},
        )
        queue.events.subscribe(lambda kind, t: reported.set() if kind == "progress" else None)
        queue.add(task)
        queue.run_tasks()
        assert reported.wait(timeout=60), "no progress reported"
        assert 0 < task.progress < 100
        assert task.status.value == "running"
        assert queue.cancel(task.uid)  # task.sleep() is a cancellation point
        queue.wait(timeout=60)
    assert task.status is Status.CANCELLED


def test_compress_image_rejects_data_without_sizes(examples: Path) -> None:
    with Queue(examples, max_workers=1) as queue:
        task = Task("no sizes", "compress-image", data={"image": "cat.jpg", "sizes": []})
        queue.add(task)
        queue.wait(timeout=60)
    assert task.status is Status.FAILED
    assert task.retry_count == 0
    assert "has_sizes" in str(task.error)
