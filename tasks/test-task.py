"""Example executor "test-task": sends a welcome email (the seed's TestTask).

Its validation rule requires ``task.data["email"]`` to be an ``Email``; any other data
fails validation (which is never retried).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TypedDict

from nbqueue import Task, TaskExecutor, TaskResult, has_property

# Task files are imported by path under a generated module name, so a sibling module is not
# importable by default. Putting this folder on sys.path lets both the controller and every
# worker import it as "_models", which is what a pickled Email refers to.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from _models import Email  # noqa: E402


class TestTaskData(TypedDict):
    email: Email


class TestTaskResult(TaskResult[None], total=False):
    data: bool
    sent_to: list[str]


class TestTask(TaskExecutor[TestTaskData, TestTaskResult]):
    def retry_schema(self) -> list[str | type[BaseException]]:
        return []

    def validation_schema(self) -> list[Any]:
        return [has_email]

    def exec(self, task: Task[TestTaskData]) -> TestTaskResult:
        assert task.data is not None
        email = task.data["email"]
        return {"processed": True, "data": True, "sent_to": [*email.to, *email.cc]}

    def on_complete(self, task: Task[TestTaskData], result: TestTaskResult, db: Any) -> None:
        """Optional: react to a successful run (nothing to do in the example)."""

    def on_failure(
        self, task: Task[TestTaskData], result: Any, error: BaseException, db: Any
    ) -> None:
        """Optional: clean up after a failed run (nothing to do in the example)."""


def has_email(task: Task[Any]) -> bool:
    """The task's data has an "email" that is an Email."""
    data = task.data
    return data is not None and has_property(data, "email") and isinstance(data["email"], Email)
