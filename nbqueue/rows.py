"""The one place a Task becomes a row of the tasks table, and a row becomes a Task.

Values that are exactly JSON -- dicts with string keys, lists, strings, ints, finite
floats, booleans, None -- are stored as JSON (readable in SQL and by other tools). Anything
else -- a set, a tuple, a datetime, a DataFrame, a numpy array, an instance of your own
class -- is pickled: the task's inputs (data, metadata, user_id) into ``data_blob``, its
result into ``result_blob``.

Pickles go into the database sealed by the database's :class:`~nbqueue.signing.Signer`
(signed, or refused where unsigned ones may not be stored), and reading opens them with it,
checking the signature before anything is unpickled; every function takes that ``signer``
(``signing.PLAIN``, pickles as they are, when none is given). Task objects in memory only
ever hold the unsigned bytes. A result that may not be stored unsigned is not stored: the
row records the task as failed with the UnsignedPayloadError instead.

Reading is defensive: a row with a missing, malformed or tampered value -- including a blob
that is unsigned or mis-signed -- raises :class:`CorruptRowError` naming the task's uid and
the column, so the caller can fail that one task and carry on with the rest.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from nbqueue import retry, rowread, serialization, shared, signing
from nbqueue.errors import (
    CorruptRowError,
    SerializationError,
    UnsignedPayloadError,
    WorkerCrashedError,
)
from nbqueue.records import ErrorRecord, Status, class_names
from nbqueue.task import Task

if TYPE_CHECKING:
    from nbqueue.store import Row

__all__ = [
    "INPUT_COLUMNS",
    "STATE_COLUMNS",
    "CorruptRowError",
    "apply_state",
    "row_to_task",
    "task_or_placeholder",
    "task_state_row",
    "task_to_row",
]

T = TypeVar("T")

#: What a task is given when it is created; pickled into ``data_blob`` unless JSON.
INPUT_COLUMNS = rowread.INPUT_COLUMNS
#: What changes while a task runs (``task_state_row`` writes only these and uid).
STATE_COLUMNS = (
    "status", "progress", "retry_count", "ready_at", "started_at", "finished_at", "worker",
    "error", "errors", "result", "result_blob", "output",
)  # fmt: skip
#: What sync reads of rows other controllers changed: their state, never their inputs.
SYNC_COLUMNS = (*STATE_COLUMNS, "lease_owner")
#: Pickled results up to this size are unpickled to see whether they can be stored as JSON;
#: larger ones are stored as they came from the worker.
JSON_RESULT_MAX_BYTES = 1 << 20
_MAX_DEPTH = 100
#: Compact JSON (one encoder for every call: json.dumps with options makes a new one each).
_to_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


# -- Task -> row --------------------------------------------------------------------------
def task_to_row(task: Task[Any], *, signer: signing.Signer = signing.PLAIN) -> Row:
    """The complete row for ``task`` (every column but ``updated_at`` and the lease, which
    the adapter owns). Raises SerializationError when an input cannot be pickled, and
    UnsignedPayloadError when it is not plain JSON and ``signer`` may not store it
    unsigned."""
    row = task_state_row(task, signer=signer)
    row.update(
        type=task.type,
        name=task.name,
        description=task.description,
        priority=task.priority,
        max_retries=task.max_retries,
        delay=task.delay,
        timeout=task.timeout,
        run_at=task.run_at,
        created_at=task.created_at,
        key=task.key,
        output=task.output or None,
    )
    pickled: dict[str, Any] = {}
    for name in INPUT_COLUMNS:
        value = getattr(task, name)
        text = None if value is None else _json_text(value)
        row[name] = text
        if text is None and value is not None:
            pickled[name] = value
    row["data_blob"] = None
    if pickled:
        with shared.inline():  # queue.put() objects go in with it: other processes read it
            data = serialization.dumps(pickled, f"data of task {task.name!r}")
        what = f"the {' and '.join(pickled)} of task {task.name!r} (not plain JSON)"
        row["data_blob"] = signer.seal(data, what)
    return row


def task_state_row(
    task: Task[Any], *, output: bool = False, signer: signing.Signer = signing.PLAIN
) -> Row:
    """Only what changes while a task runs (STATE_COLUMNS), for saving a state change
    without writing its data again; its captured output only when ``output`` (it changes
    less often and is larger). Saved, it updates the stored row and never inserts. A
    result ``signer`` may not store unsigned makes the row say the task failed."""
    result, result_blob = _result_columns(task)
    last = task.error
    row: Row = {
        "uid": task.uid,
        "status": task.status.value,
        "progress": float(task.progress),
        "retry_count": task.retry_count,
        "ready_at": float(task._ready_at),
        "started_at": task.started_at,
        "finished_at": task.finished_at,
        "worker": task.worker,
        "error": None if last is None else _clean(str(last)),
        "errors": _to_json([_error_dict(e) for e in task.errors]) if task.errors else "[]",
        "result": result,
        "result_blob": None,
    }
    if result_blob is not None:  # from a worker, unsigned: sealed on its way to the database
        try:
            row["result_blob"] = signer.seal(result_blob, f"the result of task {task.name!r}")
        except UnsignedPayloadError as exc:
            # what every other controller must see: the task failed, and why (this process
            # still holds the result in memory)
            record = ErrorRecord.from_exception(exc)
            errors = [_error_dict(e) for e in (*task.errors, record)]
            row.update(
                status=Status.FAILED.value, result=None, error=_clean(str(record)),
                errors=_to_json(errors),
            )  # fmt: skip
    if output:
        row["output"] = _clean(task.output) or None
    return row


def lost_attempt(row: Row) -> Row:
    """The new state of a running row whose lease was lost (its controller or host died, or
    was cut off). Every attempt counts: one that had started is counted as a retry, with a
    WorkerCrashedError in the task's errors, and fails the task once ``max_retries`` is used
    up. A task that was claimed but had not started goes back to pending as it was."""
    moved: Row = {"worker": None, "started_at": None, "progress": 0.0}
    if row.get("started_at") is None:
        return {**moved, "status": Status.PENDING.value}
    owner = row.get("lease_owner") or "its controller"
    error = WorkerCrashedError(
        f"task {row.get('name')!r} was running under {owner}, which went away (killed, "
        "crashed or cut off from the database) before it finished"
    )
    record = ErrorRecord(type(error).__name__, str(error), classes=class_names(WorkerCrashedError))
    try:
        errors = json.loads(row.get("errors") or "[]")
        errors = errors if isinstance(errors, list) else []
    except ValueError:
        errors = []
    errors.append(_error_dict(record))
    moved.update(error=str(record), errors=_to_json(errors))
    retries, limit = row.get("retry_count"), row.get("max_retries")
    if type(retries) is int and type(limit) is int and retries < limit:
        delay = retry.backoff_seconds(retries + 1)
        return {**moved, "status": Status.RETRYING.value, "retry_count": retries + 1,
                "ready_at": time.time() + delay}  # fmt: skip
    finished = dt.datetime.now(dt.timezone.utc)
    return {**moved, "status": Status.FAILED.value, "finished_at": finished}


def _result_columns(task: Task[Any]) -> tuple[str | None, bytes | None]:
    raw, value = task._result_bytes, task._value
    if raw is not None:
        if len(raw) > JSON_RESULT_MAX_BYTES:
            return None, raw
        try:
            value = serialization.loads(raw)
        except SerializationError:  # e.g. a class this process cannot import
            return None, raw
    if value is None:
        return None, None
    text = _json_text(value)
    if text is not None:
        return text, None
    return None, raw if raw is not None else serialization.dumps(
        value, f"result of task {task.name!r}"
    )


def _error_dict(error: ErrorRecord) -> dict[str, Any]:
    return {
        "type": _clean(error.type),
        "message": _clean(error.message),
        "traceback": None if error.traceback is None else _clean(error.traceback),
        "at": error.at.isoformat(),
        "classes": [_clean(c) for c in error.classes],
    }


def _clean(text: str) -> str:
    """Lone surrogates (from odd bytes in an exception message) cannot be stored as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _json_text(value: Any) -> str | None:
    """``value`` as JSON text when it is exactly JSON (it would come back equal and of the
    same types), else None."""
    if not _is_json(value, 0):
        return None
    return _to_json(value)


def _is_json(value: Any, depth: int) -> bool:
    kind = type(value)
    if value is None or kind is bool or kind is int:
        return True
    if kind is float:
        return math.isfinite(value)
    if kind is str:
        return _utf8(value)
    if depth >= _MAX_DEPTH:
        return False
    if kind is list:
        return all(_is_json(item, depth + 1) for item in value)
    if kind is dict:
        return all(
            type(key) is str and _utf8(key) and _is_json(item, depth + 1)
            for key, item in value.items()
        )
    return False


def _utf8(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# -- row -> Task --------------------------------------------------------------------------
def row_to_task(
    row: Mapping[str, Any], *, inputs: bool = True, signer: signing.Signer = signing.PLAIN
) -> Task[Any]:
    """Rebuild a Task (not in any queue) from a complete row. Its ``_payload`` -- the
    pickled inputs a worker needs -- is rebuilt for tasks that may still run (None for
    finished ones). A row claimed but not started yet reads as pending. With
    ``inputs=False`` data, metadata and user_id are not read (they stay None): for looking
    at states where the classes in the data may not be importable. Raises CorruptRowError
    for a bad row (a pickle ``signer`` refuses included)."""
    reader = rowread.Reader(row, signer)
    data, metadata, user_id = reader.inputs() if inputs else (None, {}, None)
    state = reader.state(complete=True)
    task = Task.restore(
        reader.uid,
        reader.get("name", rowread.nonempty_text),
        reader.get("type", rowread.nonempty_text),
        reader.get("created_at", rowread.moment_value),
    )
    task.description = reader.get("description", rowread.text_value, optional=True)
    task.priority = reader.get("priority", rowread.int_value)
    task.max_retries = reader.get("max_retries", rowread.int_value)
    task.delay = reader.get("delay", rowread.number_value)
    task.timeout = reader.get("timeout", rowread.number_value)
    task.run_at = reader.get("run_at", rowread.moment_value, optional=True)
    task.key = reader.get("key", rowread.text_value, optional=True) if "key" in row else None
    task.data, task.metadata, task.user_id = data, metadata, user_id
    _set_state(task, state)
    if inputs and not task.status.finished:
        try:
            task._payload = serialization.dumps(
                (data, metadata, user_id), f"data of task {task.name!r}"
            )
        except SerializationError as exc:
            raise CorruptRowError(reader.uid, str(exc)) from exc
    return task


def task_or_placeholder(
    row: Mapping[str, Any], *, inputs: bool = True, signer: signing.Signer = signing.PLAIN
) -> tuple[Task[Any], CorruptRowError | None]:
    """``row_to_task``, except that a corrupt row gives a failed stand-in task carrying the
    error (and the error), so one bad row never stops a whole load."""
    try:
        return row_to_task(row, inputs=inputs, signer=signer), None
    except CorruptRowError as exc:
        kind = row.get("type")
        task = Task.restore(
            exc.uid, f"corrupt row {exc.uid[:8]}",
            kind if isinstance(kind, str) and kind else "unknown",
            dt.datetime.now(dt.timezone.utc),
        )  # fmt: skip
        task.status, task.finished_at = Status.FAILED, dt.datetime.now(dt.timezone.utc)
        task.errors.append(ErrorRecord.from_exception(exc))
        task._failure = exc
        return task, exc


def apply_state(
    task: Task[Any], row: Mapping[str, Any], *, signer: signing.Signer = signing.PLAIN
) -> None:
    """Update ``task`` from a row (full or state-only) written elsewhere -- another
    controller or a worker host. Raises CorruptRowError, leaving the task unchanged, when
    the row is bad (a pickle ``signer`` refuses included) or belongs to another task."""
    reader = rowread.Reader(row, signer)
    if reader.uid != task.uid:
        raise CorruptRowError(reader.uid, f"it was applied to task {task.uid}")
    _set_state(task, reader.state(complete=False))


def _set_state(task: Task[Any], state: dict[str, Any]) -> None:
    for name, value in state.items():
        setattr(task, name, value)
