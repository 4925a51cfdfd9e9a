"""The one place a Task becomes a row of the tasks table, and a row becomes a Task.

Values that are exactly JSON -- dicts with string keys, lists, strings, ints, finite
floats, booleans, None -- are stored as JSON (readable in SQL and by other tools). Anything
else -- a set, a tuple, a datetime, a DataFrame, a numpy array, an instance of your own
class -- is pickled: the task's inputs (data, metadata, user_id) into ``data_blob``, its
result into ``result_blob``.

Pickles go into the database signed when NBQUEUE_SECRET is set (``serialization.sign``);
reading checks the signature before anything is unpickled. Task objects in memory only ever
hold the unsigned bytes.

Reading is defensive: a row with a missing, malformed or tampered value -- including a blob
that is unsigned or mis-signed -- raises :class:`CorruptRowError` naming the task's uid and
the column, so the caller can fail that one task and carry on with the rest.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from nbqueue import config, serialization
from nbqueue.errors import CorruptRowError, SerializationError, SignatureError
from nbqueue.store.base import Row
from nbqueue.task import ErrorRecord, Status, Task

__all__ = [
    "INPUT_COLUMNS",
    "STATE_COLUMNS",
    "CorruptRowError",
    "Row",
    "apply_state",
    "row_to_task",
    "task_or_placeholder",
    "task_state_row",
    "task_to_row",
]

T = TypeVar("T")

#: What a task is given when it is created; pickled into ``data_blob`` unless JSON.
INPUT_COLUMNS = ("data", "metadata", "user_id")
#: What changes while a task runs (``task_state_row`` writes only these and uid).
STATE_COLUMNS = (
    "status", "progress", "retry_count", "ready_at", "started_at", "finished_at", "worker",
    "error", "errors", "result", "result_blob",
)  # fmt: skip
#: Pickled results up to this size are unpickled to see whether they can be stored as JSON;
#: larger ones are stored as they came from the worker.
JSON_RESULT_MAX_BYTES = 1 << 20
_INT64 = (-(1 << 63), (1 << 63) - 1)
_MAX_DEPTH = 100


# -- Task -> row --------------------------------------------------------------------------
def task_to_row(task: Task[Any]) -> Row:
    """The complete row for ``task`` (every column but ``updated_at`` and the lease, which
    the adapter owns). Raises SerializationError when an input cannot be pickled."""
    for name in ("priority", "max_retries", "retry_count"):
        value = getattr(task, name)
        if not _INT64[0] <= value <= _INT64[1]:
            raise SerializationError(
                f"task {task.name!r} ({task.uid}): {name} {value} does not fit in 64 bits"
            )
    row = task_state_row(task)
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
    )
    pickled: dict[str, Any] = {}
    for name in INPUT_COLUMNS:
        value = getattr(task, name)
        text = None if value is None else _json_text(value)
        row[name] = text
        if text is None and value is not None:
            pickled[name] = value
    row["data_blob"] = (
        serialization.sign_for_storage(serialization.dumps(pickled, f"data of task {task.name!r}"))
        if pickled
        else None
    )
    return row


def task_state_row(task: Task[Any]) -> Row:
    """Only what changes while a task runs (STATE_COLUMNS), for saving a state change
    without writing its data again. Saved, it updates the stored row and never inserts."""
    result, result_blob = _result_columns(task)
    last = task.error
    return {
        "uid": task.uid,
        "status": task.status.value,
        "progress": float(task.progress),
        "retry_count": task.retry_count,
        "ready_at": float(task._ready_at),
        "started_at": task.started_at,
        "finished_at": task.finished_at,
        "worker": task.worker,
        "error": None if last is None else _clean(str(last)),
        "errors": json.dumps([_error_dict(e) for e in task.errors], separators=(",", ":")),
        "result": result,
        # Results come from workers as unsigned pickles: signed on their way to the database.
        "result_blob": None if result_blob is None else serialization.sign_for_storage(result_blob),
    }


def _result_columns(task: Task[Any]) -> tuple[str | None, bytes | None]:
    raw, value = task._result_bytes, task._result
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
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


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
def row_to_task(row: Mapping[str, Any], *, inputs: bool = True) -> Task[Any]:
    """Rebuild a Task (not in any queue) from a complete row. Its ``_payload`` -- the
    pickled ``(data, metadata)`` a worker needs -- is rebuilt for tasks that may still run
    (None for finished ones). With ``inputs=False`` data, metadata and user_id are not read
    (they stay None): for looking at states where the classes in the data may not be
    importable. Raises CorruptRowError for a bad row."""
    reader = _Reader(row)
    data, metadata, user_id = reader.inputs() if inputs else (None, {}, None)
    state = reader.state(complete=True)
    task: Task[Any] = Task.__new__(Task)
    task.uid = reader.uid
    task.name = reader.get("name", _nonempty_str)
    task.type = reader.get("type", _nonempty_str)
    task.description = reader.get("description", _str, optional=True)
    task.priority = reader.get("priority", _int)
    task.max_retries = reader.get("max_retries", _int)
    task.delay = reader.get("delay", _number)
    task.timeout = reader.get("timeout", _number)
    task.run_at = reader.get("run_at", _moment, optional=True)
    task.created_at = reader.get("created_at", _moment)
    task.data, task.metadata, task.user_id = data, metadata, user_id
    task._queue = task._runtime = task._exception = None
    task._seq = 0
    _set_state(task, state)
    task._payload = None
    if inputs and not task.status.finished:
        try:
            task._payload = serialization.dumps((data, metadata), f"data of task {task.name!r}")
        except SerializationError as exc:
            raise CorruptRowError(reader.uid, str(exc)) from exc
    return task


def task_or_placeholder(
    row: Mapping[str, Any], *, inputs: bool = True
) -> tuple[Task[Any], CorruptRowError | None]:
    """``row_to_task``, except that a corrupt row gives a failed stand-in task carrying the
    error (and the error), so one bad row never stops a whole load."""
    try:
        return row_to_task(row, inputs=inputs), None
    except CorruptRowError as exc:
        kind = row.get("type")
        task: Task[Any] = Task(
            f"corrupt row {exc.uid[:8]}", kind if isinstance(kind, str) and kind else "unknown",
            uid=exc.uid,
        )  # fmt: skip
        task.status, task.finished_at = Status.FAILED, dt.datetime.now(dt.timezone.utc)
        task.errors.append(ErrorRecord.from_exception(exc))
        task._exception = exc
        return task, exc


def apply_state(task: Task[Any], row: Mapping[str, Any]) -> None:
    """Update ``task`` from a row (full or state-only) written elsewhere -- another
    controller or a worker host. Raises CorruptRowError, leaving the task unchanged, when
    the row is bad or belongs to another task."""
    reader = _Reader(row)
    if reader.uid != task.uid:
        raise CorruptRowError(reader.uid, f"it was applied to task {task.uid}")
    _set_state(task, reader.state(complete=False))


def _set_state(task: Task[Any], state: dict[str, Any]) -> None:
    for name, value in state.items():
        setattr(task, name, value)


_MISSING: Any = object()


class _Reader:
    """Checked access to one row's columns; every problem names the uid and column."""

    def __init__(self, row: Mapping[str, Any]) -> None:
        if not isinstance(row, Mapping):
            raise CorruptRowError("<unknown>", f"a row must be a mapping, got {type(row).__name__}")
        uid = row.get("uid")
        if not isinstance(uid, str) or not uid:
            raise CorruptRowError(repr(uid), "column 'uid' must be a non-empty string")
        self.uid = uid
        self.row = row
        self.secret = config.secret()  # one key for the whole row

    def fail(self, column: str, problem: str) -> CorruptRowError:
        return CorruptRowError(self.uid, f"column {column!r} {problem}")

    def get(self, column: str, check: Callable[[Any], T], *, optional: bool = False) -> T:
        value = self.row.get(column, _MISSING)
        if value is _MISSING:
            raise self.fail(column, "is missing")
        if value is None:
            if optional:
                return None  # type: ignore[return-value]
            raise self.fail(column, "is empty (NULL)")
        try:
            return check(value)
        except (TypeError, ValueError) as exc:
            raise self.fail(column, f"holds {_show(value)}: {exc}") from None

    def json(self, column: str) -> Any:
        """The parsed document, or _MISSING for NULL."""
        text = self.get(column, _str, optional=True)
        if text is None:
            return _MISSING
        try:
            return json.loads(text)
        except ValueError as exc:
            raise self.fail(column, f"is not valid JSON ({exc}): {_show(text)}") from None

    def blob(self, column: str) -> bytes | None:
        """The unsigned pickle in a blob column, once its signature has been checked."""
        blob = self.get(column, _bytes, optional=True)
        if blob is None:
            return None
        try:
            what = f"the pickle in column {column!r} of task {self.uid}"
            data = serialization.verify(blob, self.secret, what)
        except SignatureError as exc:
            raise CorruptRowError(self.uid, str(exc)) from exc
        try:
            return _pickle_bytes(data)
        except ValueError as exc:
            raise self.fail(column, f"holds {_show(blob)}: {exc}") from None

    def inputs(self) -> tuple[Any, dict[str, Any], Any]:
        values = {name: self.json(name) for name in INPUT_COLUMNS}
        blob = self.blob("data_blob")
        if blob is not None:
            try:
                pickled = serialization.loads(blob, f"data of task {self.uid}")
            except SerializationError as exc:
                raise self.fail("data_blob", f"cannot be unpickled: {exc}") from exc
            if not isinstance(pickled, dict) or not pickled.keys() <= set(INPUT_COLUMNS):
                raise self.fail("data_blob", f"does not hold task inputs: {_show(pickled)}")
            values.update(pickled)
        data, metadata, user_id = (values[name] for name in INPUT_COLUMNS)
        if metadata is _MISSING:
            metadata = {}
        if not isinstance(metadata, dict):
            raise self.fail("metadata", f"must be a mapping, got {_show(metadata)}")
        return (
            None if data is _MISSING else data,
            metadata,
            None if user_id is _MISSING else user_id,
        )

    def state(self, *, complete: bool) -> dict[str, Any]:
        """The STATE_COLUMNS of the row as Task slot values: all of them when ``complete``
        (a missing one is an error), else those the row has."""
        readers: dict[str, Callable[[], Any]] = {
            "status": lambda: self.get("status", Status),
            "progress": lambda: self.get("progress", _progress),
            "retry_count": lambda: self.get("retry_count", _int),
            "ready_at": lambda: self.get("ready_at", _number),
            "started_at": lambda: self.get("started_at", _moment, optional=True),
            "finished_at": lambda: self.get("finished_at", _moment, optional=True),
            "worker": lambda: self.get("worker", _str, optional=True),
            "errors": self.errors,
        }
        slots = {"ready_at": "_ready_at"}
        state = {
            slots.get(column, column): read()
            for column, read in readers.items()
            if complete or column in self.row
        }
        if complete or "result" in self.row or "result_blob" in self.row:
            state["_result"], state["_result_bytes"] = self.result(complete=complete)
        return state

    def errors(self) -> list[ErrorRecord]:
        document = self.json("errors")
        if document is _MISSING:
            return []
        if not isinstance(document, list):
            raise self.fail("errors", f"must be a JSON list, got {_show(document)}")
        try:
            return [_error_record(item) for item in document]
        except (TypeError, ValueError, KeyError) as exc:
            raise self.fail("errors", f"holds a malformed error record ({exc!r})") from None

    def result(self, *, complete: bool) -> tuple[Any, bytes | None]:
        """(value, None) for a JSON result, (None, pickled bytes) for a pickled one -- left
        pickled until ``task.result`` is read."""
        if complete or "result_blob" in self.row:
            blob = self.blob("result_blob")
            if blob is not None:
                return None, blob
        value = self.json("result") if complete or "result" in self.row else _MISSING
        return (None if value is _MISSING else value), None


def _error_record(item: Any) -> ErrorRecord:
    if not isinstance(item, dict):
        raise TypeError(f"expected an object, got {type(item).__name__}")
    texts = [item["type"], item["message"]]
    traceback, classes = item.get("traceback"), item.get("classes", [])
    if not all(isinstance(t, str) for t in texts) or not isinstance(traceback, (str, type(None))):
        raise TypeError("type, message and traceback must be strings")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise TypeError("classes must be a list of strings")
    at = _moment(dt.datetime.fromisoformat(item["at"]))
    return ErrorRecord(texts[0], texts[1], traceback, at=at, classes=tuple(classes))


# Checks: return the value as the Task wants it, or raise TypeError/ValueError.
def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected text")
    return value


def _nonempty_str(value: Any) -> str:
    if not _str(value):
        raise ValueError("expected non-empty text")
    return str(value)


def _int(value: Any) -> int:
    if type(value) is not int:
        raise TypeError("expected an integer")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("expected a number")
    if not math.isfinite(value) or value < 0:
        raise ValueError("expected a finite number >= 0")
    return float(value)


def _progress(value: Any) -> float:
    number = _number(value)
    if number > 100:
        raise ValueError("expected 0..100")
    return number


def _moment(value: Any) -> dt.datetime:
    if not isinstance(value, dt.datetime):
        raise TypeError("expected a timestamp")
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def _bytes(value: Any) -> bytes:
    if isinstance(value, (bytearray, memoryview)):
        value = bytes(value)
    if not isinstance(value, bytes):
        raise TypeError("expected bytes")
    return value


def _pickle_bytes(value: bytes) -> bytes:
    # Pickles of protocol 2 and later start with PROTO (0x80) and end with STOP (".").
    if len(value) < 3 or value[0] != 0x80 or value[-1:] != b".":
        raise ValueError("not a pickle made by nbqueue")
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
