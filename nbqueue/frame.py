"""The status table: one row per task, as a pandas DataFrame."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from nbqueue.task import Task

if TYPE_CHECKING:
    import pandas

COLUMNS = [
    "uid", "name", "type", "status", "priority", "progress", "retry_count", "created_at",
    "started_at", "finished_at", "duration", "worker", "error",
]  # fmt: skip

#: Error text longer than this is shortened in the table (the full text is in task.errors).
ERROR_WIDTH = 200


def _short(text: str | None) -> str | None:
    if text is None or len(text) <= ERROR_WIDTH:
        return text
    return text[: ERROR_WIDTH - 1] + "…"


def status_frame(tasks: list[Task[Any]]) -> pandas.DataFrame:
    """Columns: uid, name, type, status, priority, progress, retry_count, created_at,
    started_at, finished_at, duration (seconds, so far for running tasks), worker, error."""
    import pandas

    now = dt.datetime.now(dt.timezone.utc)
    columns: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    for t in tasks:
        last = t.errors[-1] if t.errors else None
        end = t.finished_at or (now if t.started_at is not None else None)
        columns["uid"].append(t.uid)
        columns["name"].append(t.name)
        columns["type"].append(t.type)
        columns["status"].append(t.status.value)
        columns["priority"].append(t.priority)
        columns["progress"].append(t.progress)
        columns["retry_count"].append(t.retry_count)
        columns["created_at"].append(t.created_at)
        columns["started_at"].append(t.started_at)
        columns["finished_at"].append(t.finished_at)
        columns["duration"].append(
            None if t.started_at is None or end is None
            else round((end - t.started_at).total_seconds(), 3)
        )  # fmt: skip
        columns["worker"].append(t.worker)
        columns["error"].append(_short(None if last is None else str(last)))
    frame = pandas.DataFrame(columns, columns=COLUMNS)
    for column in ("created_at", "started_at", "finished_at"):
        frame[column] = pandas.to_datetime(frame[column], utc=True)
    frame["duration"] = frame["duration"].astype("float64")
    frame.attrs["nbqueue"] = "status"  # how the notebook extension recognises it
    return frame
