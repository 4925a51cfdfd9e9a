"""Bad rows on every backend (store_kit.py): a value a database cannot store is refused
before anything is written, naming every bad row; values at the limits are stored as they
are."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest
import store_kit as kit
from store_kit import UTC, by_uid, make_task

from nbqueue import rows
from nbqueue.errors import NbqueueError, RowRejectedError
from nbqueue.store import DatabaseAdapter

store, adapter, no_secret = kit.store, kit.adapter, kit.no_secret

INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)

#: column -> (a value no backend can store, a word of the problem reported)
BAD_VALUES: dict[str, tuple[Any, str]] = {
    "name with NUL": ("name", "a\x00b", "NUL"),
    "description with a lone surrogate": ("description", "bad \udc80 text", "surrogate"),
    "type too long": ("type", "t" * 256, "at most 255"),
    "worker too long": ("worker", "w" * 256, "at most 255"),
    "lease_owner too long": ("lease_owner", "o" * 256, "at most 255"),
    "empty type": ("type", "", "non-empty"),
    "priority beyond 64 bits": ("priority", INT64_MAX + 1, "64 bits"),
    "retry_count beyond 64 bits": ("retry_count", INT64_MIN - 1, "64 bits"),
    "priority a bool": ("priority", True, "int"),
    "progress NaN": ("progress", math.nan, "finite"),
    "timeout infinite": ("timeout", math.inf, "finite"),
    "ready_at a string": ("ready_at", "soon", "finite number"),
    "naive created_at": ("created_at", dt.datetime(2030, 1, 1), "timezone-aware"),
    "run_at out of range": ("run_at", dt.datetime(1, 1, 1, tzinfo=UTC), "between the years"),
    "text in a blob": ("data_blob", "not bytes", "bytes"),
    "bytearray in a blob": ("result_blob", bytearray(b"x"), "bytes"),
    "unknown status": ("status", "exploded", "one of"),
    "NULL name": ("name", None, "must not be None"),
    "errors not text": ("errors", [1, 2], "string"),
    "JSON with NUL": ("data", '"\x00"', "NUL"),
    "key too long": ("key", "k" * 1001, "at most 1000"),
    "empty key": ("key", "", "non-empty"),
    "output with NUL": ("output", "printed\x00", "NUL"),
}


def _row(**changes: Any) -> dict[str, Any]:
    return {**rows.task_to_row(make_task()), **changes}


def test_every_bad_row_of_a_batch_is_named_and_nothing_is_written(
    adapter: DatabaseAdapter,
) -> None:
    good = _row()
    bad: dict[str, dict[str, Any]] = {}
    for case, (column, value, _) in BAD_VALUES.items():
        row = _row(**{column: value})
        bad[row["uid"]] = {"case": case, "column": column, "row": row}
    state = rows.task_state_row(make_task())  # a partial row is checked the same way
    state["progress"] = math.inf
    batch = [good, *(b["row"] for b in bad.values()), state]
    with pytest.raises(RowRejectedError) as caught:
        adapter.save(batch)
    error = caught.value
    assert isinstance(error, NbqueueError) and isinstance(error, ValueError)
    assert set(error.rejected) == set(bad) | {state["uid"]}
    for uid, info in bad.items():
        _, _, word = BAD_VALUES[info["case"]]
        assert repr(info["column"]) in error.rejected[uid], info["case"]
        assert word in error.rejected[uid], (info["case"], error.rejected[uid])
    assert "'progress'" in error.rejected[state["uid"]]
    assert f"{len(bad) + 1} row(s) refused" in str(error)
    assert adapter.load() == []  # not even the good row
    adapter.save([good])
    assert list(by_uid(adapter)) == [good["uid"]]


def test_rows_without_a_usable_uid_are_named_by_position(adapter: DatabaseAdapter) -> None:
    good = _row()
    with pytest.raises(RowRejectedError) as caught:
        adapter.save([good, {"status": "pending"}, "not a row", _row(uid="u" * 65)])
    rejected = caught.value.rejected
    assert set(rejected) == {"row 1", "row 2", "row 3"}
    assert "'uid'" in rejected["row 1"] and "mapping" in rejected["row 2"]
    assert "at most 64" in rejected["row 3"]
    assert adapter.load() == []


def test_unknown_columns_are_refused(adapter: DatabaseAdapter) -> None:
    row = _row(colour="red")
    with pytest.raises(RowRejectedError, match="unknown column") as caught:
        adapter.save([row])
    assert "colour" in caught.value.rejected[row["uid"]]


def test_values_at_the_limits_are_stored_as_they_are(adapter: DatabaseAdapter) -> None:
    edge = {
        "uid": "u" * 64,
        "type": "é" * 255,  # characters, not bytes: 510 bytes of UTF-8
        "worker": "\U0001f600" * 255,
        "lease_owner": "o" * 255,
        "name": "",
        "description": "x" * 100_000,
        "priority": INT64_MAX,
        "retry_count": INT64_MIN,
        "max_retries": 0,
        "progress": -1.5,
        "delay": 0,
        "timeout": 1e300,
        "run_at": dt.datetime(9998, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        "started_at": dt.datetime(1970, 1, 1, tzinfo=UTC),
        "finished_at": dt.datetime(2030, 6, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=5))),
        "data_blob": bytes(range(256)),
        "result_blob": b"",
        "key": "\U0010fffd" * 1000,  # 4,000 bytes of UTF-8: more than a B-tree entry holds
        "output": "line ü\n" * 20_000,
    }
    row = _row(**edge)
    adapter.save([row])
    [back] = adapter.load([edge["uid"]])
    for column, value in edge.items():
        assert back[column] == value, column
    assert back["finished_at"].tzinfo == UTC
