"""Reading one stored row back, defensively: checked access to each column (every problem
raises :class:`~nbqueue.errors.CorruptRowError` naming the task's uid and the column), the
JSON documents parsed, the pickles' signatures checked before anything is unpickled."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from nbqueue import serialization
from nbqueue.errors import CorruptRowError, SerializationError, SignatureError
from nbqueue.records import ErrorRecord, Status

if TYPE_CHECKING:
    from nbqueue.signing import Signer

T = TypeVar("T")
#: The columns of a row that hold a task's inputs (JSON, or pickled into ``data_blob``).
INPUT_COLUMNS = ("data", "metadata", "user_id")

MISSING: Any = object()


class Reader:
    """Checked access to one row's columns; every problem names the uid and column. The
    pickles are opened (their signatures checked) by ``signer``."""

    def __init__(self, row: Mapping[str, Any], signer: Signer) -> None:
        if not isinstance(row, Mapping):
            raise CorruptRowError("<unknown>", f"a row must be a mapping, got {type(row).__name__}")
        uid = row.get("uid")
        if not isinstance(uid, str) or not uid:
            raise CorruptRowError(repr(uid), "column 'uid' must be a non-empty string")
        self.uid = uid
        self.row = row
        self.signer = signer

    def fail(self, column: str, problem: str) -> CorruptRowError:
        return CorruptRowError(self.uid, f"column {column!r} {problem}")

    def get(self, column: str, check: Callable[[Any], T], *, optional: bool = False) -> T:
        value = self.row.get(column, MISSING)
        if value is MISSING:
            raise self.fail(column, "is missing")
        if value is None:
            if optional:
                return None  # type: ignore[return-value]
            raise self.fail(column, "is empty (NULL)")
        try:
            return check(value)
        except (TypeError, ValueError) as exc:
            raise self.fail(column, f"holds {show(value)}: {exc}") from None

    def json(self, column: str) -> Any:
        """The parsed document, or MISSING for NULL."""
        text = self.get(column, text_value, optional=True)
        if text is None:
            return MISSING
        try:
            return json.loads(text)
        except ValueError as exc:
            raise self.fail(column, f"is not valid JSON ({exc}): {show(text)}") from None

    def blob(self, column: str) -> bytes | None:
        """The unsigned pickle in a blob column, once its signature has been checked."""
        blob = self.get(column, bytes_value, optional=True)
        if blob is None:
            return None
        try:
            what = f"the pickle in column {column!r} of task {self.uid}"
            data = self.signer.open(blob, what)
        except SignatureError as exc:
            raise CorruptRowError(self.uid, str(exc)) from exc
        try:
            return pickle_bytes(data)
        except ValueError as exc:
            raise self.fail(column, f"holds {show(blob)}: {exc}") from None

    def inputs(self) -> tuple[Any, dict[str, Any], Any]:
        values = {name: self.json(name) for name in INPUT_COLUMNS}
        blob = self.blob("data_blob")
        if blob is not None:
            try:
                pickled = serialization.loads(blob, f"data of task {self.uid}")
            except SerializationError as exc:
                raise self.fail("data_blob", f"cannot be unpickled: {exc}") from exc
            if not isinstance(pickled, dict) or not pickled.keys() <= set(INPUT_COLUMNS):
                raise self.fail("data_blob", f"does not hold task inputs: {show(pickled)}")
            values.update(pickled)
        data, metadata, user_id = (values[name] for name in INPUT_COLUMNS)
        if metadata is MISSING:
            metadata = {}
        if not isinstance(metadata, dict):
            raise self.fail("metadata", f"must be a mapping, got {show(metadata)}")
        return (
            None if data is MISSING else data,
            metadata,
            None if user_id is MISSING else user_id,
        )

    def state(self, *, complete: bool) -> dict[str, Any]:
        """The STATE_COLUMNS of the row as Task slot values: all of them when ``complete``
        (a missing one is an error), else those the row has."""
        readers: dict[str, Callable[[], Any]] = {
            "status": lambda: self.get("status", Status),
            "progress": lambda: self.get("progress", progress_value),
            "retry_count": lambda: self.get("retry_count", int_value),
            "ready_at": lambda: self.get("ready_at", number_value),
            "started_at": lambda: self.get("started_at", moment_value, optional=True),
            "finished_at": lambda: self.get("finished_at", moment_value, optional=True),
            "worker": lambda: self.get("worker", text_value, optional=True),
            "output": lambda: self.get("output", text_value, optional=True) or "",
            "errors": self.errors,
        }
        slots = {"ready_at": "_ready_at"}
        state = {
            slots.get(column, column): read()
            for column, read in readers.items()
            if column in self.row or (complete and column != "output")
        }
        if complete or "result" in self.row or "result_blob" in self.row:
            state["_value"], state["_result_bytes"] = self.result(complete=complete)
        if state.get("status") is Status.RUNNING and state.get("started_at", True) is None:
            state["status"] = Status.PENDING  # claimed, not started: waiting in a worker
        return state

    def errors(self) -> list[ErrorRecord]:
        document = self.json("errors")
        if document is MISSING:
            return []
        if not isinstance(document, list):
            raise self.fail("errors", f"must be a JSON list, got {show(document)}")
        try:
            return [error_record(item) for item in document]
        except (TypeError, ValueError, KeyError) as exc:
            raise self.fail("errors", f"holds a malformed error record ({exc!r})") from None

    def result(self, *, complete: bool) -> tuple[Any, bytes | None]:
        """(value, None) for a JSON result, (None, pickled bytes) for a pickled one -- left
        pickled until the result is read."""
        if complete or "result_blob" in self.row:
            blob = self.blob("result_blob")
            if blob is not None:
                return None, blob
        value = self.json("result") if complete or "result" in self.row else MISSING
        return (None if value is MISSING else value), None


def error_record(item: Any) -> ErrorRecord:
    if not isinstance(item, dict):
        raise TypeError(f"expected an object, got {type(item).__name__}")
    texts = [item["type"], item["message"]]
    traceback, classes = item.get("traceback"), item.get("classes", [])
    if not all(isinstance(t, str) for t in texts) or not isinstance(traceback, (str, type(None))):
        raise TypeError("type, message and traceback must be strings")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise TypeError("classes must be a list of strings")
    at = moment_value(dt.datetime.fromisoformat(item["at"]))
    return ErrorRecord(texts[0], texts[1], traceback, at=at, classes=tuple(classes))


# Checks: return the value as the Task wants it, or raise TypeError/ValueError.
def text_value(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected text")
    return value


def nonempty_text(value: Any) -> str:
    if not text_value(value):
        raise ValueError("expected non-empty text")
    return str(value)


def int_value(value: Any) -> int:
    if type(value) is not int:
        raise TypeError("expected an integer")
    return value


def number_value(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("expected a number")
    if not math.isfinite(value) or value < 0:
        raise ValueError("expected a finite number >= 0")
    return float(value)


def progress_value(value: Any) -> float:
    percent = number_value(value)
    if percent > 100:
        raise ValueError("expected 0..100")
    return percent


def moment_value(value: Any) -> dt.datetime:
    if not isinstance(value, dt.datetime):
        raise TypeError("expected a timestamp")
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def bytes_value(value: Any) -> bytes:
    if isinstance(value, (bytearray, memoryview)):
        value = bytes(value)
    if not isinstance(value, bytes):
        raise TypeError("expected bytes")
    return value


def pickle_bytes(value: bytes) -> bytes:
    # Pickles of protocol 2 and later start with PROTO (0x80) and end with STOP (".").
    if len(value) < 3 or value[0] != 0x80 or value[-1:] != b".":
        raise ValueError("not a pickle made by nbqueue")
    return value


def show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
