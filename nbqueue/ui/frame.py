"""The status table (one row per task) and the results table (one row per completed
task, its result in columns), as pandas DataFrames."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from nbqueue.records import Status
from nbqueue.ui import figures

if TYPE_CHECKING:
    import pandas

    from nbqueue.task import Task

COLUMNS = [
    "uid", "name", "type", "status", "priority", "progress", "retry_count", "created_at",
    "started_at", "finished_at", "duration", "worker", "error",
]  # fmt: skip
#: The mark in ``DataFrame.attrs`` by which the notebook extension recognises a status frame.
MARK = ("nbqueue", "status")


def row(snapshot: figures.TaskState, now: dt.datetime) -> tuple[Any, ...]:
    """One task's row of the status table, as a tuple in :data:`COLUMNS` order (``now``:
    when the durations of running tasks are taken)."""
    s = snapshot
    took = figures.elapsed(s, now)
    error = None if s.error is None else figures.shorten(str(s.error), figures.FRAME_ERROR_WIDTH)
    return (
        s.uid, s.name, s.type, s.status.value, s.priority, s.progress, s.retry_count,
        s.created_at, s.started_at, s.finished_at, None if took is None else round(took, 3),
        s.worker, error,
    )  # fmt: skip


def records(snapshots: Sequence[figures.TaskState]) -> list[dict[str, Any]]:
    """The rows of a few tasks as dicts by column (a small table without pandas)."""
    now = dt.datetime.now(dt.timezone.utc)
    return [dict(zip(COLUMNS, row(s, now), strict=True)) for s in snapshots]


def status_frame(snapshots: Sequence[figures.TaskState]) -> pandas.DataFrame:
    """One row per task (snapshots, or the tasks themselves). Columns: uid, name, type,
    status, priority, progress, retry_count, created_at, started_at, finished_at, duration
    (seconds, so far for running tasks), worker, error (the last one, shortened to
    :data:`~nbqueue.ui.figures.FRAME_ERROR_WIDTH`)."""
    import pandas

    now = dt.datetime.now(dt.timezone.utc)
    frame = pandas.DataFrame.from_records([row(s, now) for s in snapshots], columns=COLUMNS)
    for column in ("created_at", "started_at", "finished_at"):
        frame[column] = pandas.to_datetime(frame[column], utc=True)
    frame["duration"] = frame["duration"].astype("float64")
    key, value = MARK
    frame.attrs[key] = value
    return frame


#: The columns every row of the results table starts with.
RESULT_COLUMNS = ["uid", "name", "type", "key"]


def result_fields(result: Any) -> dict[str, Any]:
    """A result as the columns of its row: a TaskExecutor's mapping without ``processed``
    (a function executor's ``{"value": ...}`` unwrapped), a mapping spread into columns,
    anything else in the column ``result``."""
    if isinstance(result, Mapping) and "processed" in result:
        result = {k: v for k, v in result.items() if k != "processed"}
        if list(result) == ["value"]:
            result = result["value"]
    if isinstance(result, Mapping) and all(isinstance(k, str) for k in result):
        return {k if k not in RESULT_COLUMNS else f"result_{k}": v for k, v in result.items()}
    return {"result": result}


def results_frame(tasks: Iterable[Task[Any]]) -> pandas.DataFrame:
    """One row per completed task: uid, name, type, key, then its result (a mapping
    spread into columns, see :func:`result_fields`), in the order the tasks were added."""
    import pandas

    records = []
    for task in tasks:
        if task.status is Status.COMPLETED:
            fields = result_fields(task.result())
            records.append({"uid": task.uid, "name": task.name, "type": task.type,
                            "key": task.key, **fields})  # fmt: skip
    return pandas.DataFrame.from_records(records, columns=_columns(records))


def _columns(records: list[dict[str, Any]]) -> list[str]:
    columns = dict.fromkeys(RESULT_COLUMNS)
    for record in records:
        columns.update(dict.fromkeys(record))
    return list(columns)


def is_status_frame(frame: pandas.DataFrame) -> bool:
    """True for a status frame, or a choice of its columns."""
    key, value = MARK
    return frame.attrs.get(key) == value and set(frame.columns) <= set(COLUMNS)
