"""Checks on what the storage interface is given: rows, uids, owners, leases.

Every row of a batch is checked before the database is touched, against what every backend
can store (``nbqueue.checks``): text without NUL (PostgreSQL refuses it) or lone surrogates
(UTF-8 cannot encode them) and within its column's length, ints within 64 bits, finite
floats, timezone-aware datetimes in range, bytes in blob columns, a known status. A batch
with bad rows raises one RowRejectedError naming every bad row, and nothing is written.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from nbqueue import checks
from nbqueue.errors import ConfigurationError, RowRejectedError
from nbqueue.store import columns
from nbqueue.store.columns import Row

#: A column's check: ``check(value, column)`` gives the value as stored, or raises
#: ConfigurationError naming the column. Each has a fast path for the common case (a batch
#: of thousands of rows is checked on every write) and asks ``nbqueue.checks`` otherwise.
Check = Callable[[Any, str], Any]
_FIRST = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_END = dt.datetime(9999, 1, 1, tzinfo=dt.timezone.utc)


def _what(column: str) -> str:
    return f"column {column!r}"


def _text(limit: int | None = None, *, empty: bool = True) -> Check:
    def check(value: Any, column: str) -> Any:
        if (
            type(value) is str
            and value.isascii()
            and "\x00" not in value
            and (empty or value)
            and (limit is None or len(value) <= limit)
        ):
            return value
        return checks.text(value, _what(column), max_length=limit, allow_empty=empty)

    return check


def _status(value: Any, column: str) -> Any:
    if type(value) is not str or value not in columns.STATUSES:
        raise checks.fail(_what(column), f"one of {sorted(columns.STATUSES)}", value)
    return value


def _integer(value: Any, column: str) -> Any:
    if type(value) is int and checks.INT64_MIN <= value <= checks.INT64_MAX:
        return value
    return checks.integer(value, _what(column))


def _real(value: Any, column: str) -> Any:
    if type(value) is float and math.isfinite(value):
        return value
    return checks.number(value, _what(column), minimum=None)


def _moment(value: Any, column: str) -> Any:
    if type(value) is dt.datetime and value.tzinfo is dt.timezone.utc and _FIRST <= value < _END:
        return value
    return checks.moment(value, _what(column), allow_naive=False)


def _blob(value: Any, column: str) -> Any:
    if type(value) is not bytes:
        raise checks.fail(_what(column), "bytes", value)
    return value


_JSON = _text()  # JSON documents as their text
#: Column -> its check. Columns in columns.NOT_NULL also refuse None.
CHECKS: dict[str, Check] = {
    "uid": _text(columns.MAX_UID_LENGTH, empty=False),
    "type": _text(columns.MAX_TYPE_LENGTH, empty=False),
    "name": _text(),
    "description": _text(),
    "status": _status,
    "data": _JSON,
    "error": _text(),
    "started_at": _moment,
    "finished_at": _moment,
    "priority": _integer,
    "progress": _real,
    "retry_count": _integer,
    "max_retries": _integer,
    "delay": _real,
    "timeout": _real,
    "run_at": _moment,
    "ready_at": _real,
    "user_id": _JSON,
    "metadata": _JSON,
    "result": _JSON,
    "errors": _JSON,
    "created_at": _moment,
    "updated_at": _moment,
    "worker": _text(columns.MAX_WORKER_LENGTH),
    "lease_owner": _text(columns.MAX_WORKER_LENGTH),
    "lease_expires_at": _moment,
    "data_blob": _blob,
    "result_blob": _blob,
    "key": _text(columns.MAX_KEY_LENGTH, empty=False),
    "output": _text(),
}
assert CHECKS.keys() == columns.KNOWN


def checked_rows(rows: Iterable[Mapping[str, Any]]) -> list[Row]:
    """Checked copies of ``rows``, in the form every backend gives back (datetimes in UTC,
    floats as floats); RowRejectedError (nothing written) when any row is bad."""
    out: list[Row] = []
    rejected: dict[str, str] = {}
    for index, row in enumerate(rows):
        uid, checked, problem = _checked(row)
        if problem is None:
            out.append(checked)
        else:
            rejected[uid if uid is not None else f"row {index}"] = problem
    if rejected:
        raise RowRejectedError(rejected)
    return out


def _checked(row: Any) -> tuple[str | None, Row, str | None]:
    """(the row's uid if it has a usable one, its checked copy, what is wrong or None)."""
    if type(row) is not dict and not isinstance(row, Mapping):
        return None, {}, f"a row must be a mapping of column to value, got {type(row).__name__}"
    uid = row.get("uid")
    try:
        CHECKS["uid"](uid, "uid")
    except ConfigurationError as exc:
        return None, {}, str(exc)
    if not columns.KNOWN.issuperset(row):
        unknown = sorted(set(row) - columns.KNOWN)
        return uid, {}, f"unknown column(s) {unknown}; the columns are {list(columns.COLUMNS)}"
    checked: Row = {}
    problems = []
    for name, value in row.items():
        if value is None:
            if name in columns.NOT_NULL:
                problems.append(f"column {name!r} must not be None")
            checked[name] = None
            continue
        try:
            checked[name] = CHECKS[name](value, name)
        except ConfigurationError as exc:
            problems.append(str(exc))
    return uid, checked, "; ".join(problems) or None


def read_columns(names: Iterable[str] | None) -> tuple[str, ...] | None:
    """The columns to read: these, with ``uid`` and ``updated_at``, in table order; None
    (every column) for None."""
    if names is None:
        return None
    wanted = set(strings(names, "columns")) | {"uid", "updated_at"}
    unknown = wanted - columns.KNOWN
    if unknown:
        raise ConfigurationError(
            f"columns has unknown name(s) {sorted(unknown)}; the columns are "
            f"{list(columns.COLUMNS)}"
        )
    return tuple(name for name in columns.COLUMNS if name in wanted)


def lost_updates(
    found: list[Row], lost: Callable[[Row], Mapping[str, Any]], now: dt.datetime
) -> list[Row]:
    """The updates for rows whose attempt was lost (requeue_expired): what ``lost``
    decides for each, checked (RowRejectedError naming every bad one), with the lease
    cleared and ``updated_at`` stamped."""
    decided: list[Row] = []
    refused: dict[str, str] = {}
    for row in found:
        uid = row["uid"]
        values = lost(dict(row))
        if not isinstance(values, Mapping) or values.get("uid", uid) != uid:
            refused[uid] = f"lost() must return a mapping of the columns to change, got {values!r}"
            continue
        decided.append({**values, "uid": uid})
    try:
        checked = checked_rows(decided)
    except RowRejectedError as exc:
        refused.update(exc.rejected)
    if refused:
        raise RowRejectedError(refused)
    cleared = {"lease_owner": None, "lease_expires_at": None, "updated_at": now}
    return [row | cleared for row in checked]


def check_text(value: str, what: str, limit: int) -> None:
    checks.text(value, what, max_length=limit)


def strings(values: Iterable[str], what: str) -> list[str]:
    if isinstance(values, str):
        raise ConfigurationError(f"{what} must be an iterable of strings, not one string")
    out = list(dict.fromkeys(values))
    for value in out:
        if not isinstance(value, str) or not value:
            raise ConfigurationError(f"{what} must be non-empty strings, got {value!r}")
    return out


def uids(values: Iterable[str]) -> list[str]:
    return strings(values, "uids")


def check_owner(owner: str) -> None:
    checks.text(owner, "owner", max_length=columns.MAX_WORKER_LENGTH)


def lease(seconds: float) -> float:
    return checks.seconds(seconds, "lease_seconds", allow_zero=False)
