"""A writer's cycle in one transaction, and narrow reads, on every backend (store_kit.py):
write() saves, deletes and claims at once; ``columns`` limits what load, load_changed and
claims read back."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest
import store_kit as kit
from sqlalchemy import event
from store_kit import UTC, Store, by_uid, make_task, save, sql_only

from nbqueue import rows
from nbqueue.errors import ConfigurationError, DatabaseError, RowRejectedError
from nbqueue.store import (
    COLUMNS,
    ClaimRequest,
    DatabaseAdapter,
    SQLAlchemyAdapter,
    WriteResult,
)
from nbqueue.task import Status

store, adapter, no_secret = kit.store, kit.adapter, kit.no_secret

STATE = ("status", "progress", "lease_owner")


class Statements:
    """The SQL statements and commits an adapter's engine runs."""

    def __init__(self, adapter: DatabaseAdapter) -> None:
        assert isinstance(adapter, SQLAlchemyAdapter)
        self.sql: list[str] = []
        self.commits = 0
        event.listen(adapter.engine, "before_cursor_execute", self._statement)
        event.listen(adapter.engine, "commit", self._commit)

    def _statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.sql.append(statement)

    def _commit(self, conn: Any) -> None:
        self.commits += 1


def test_write_does_a_writers_whole_cycle(store: Store, adapter: DatabaseAdapter) -> None:
    running, gone, wanted = make_task("running"), make_task("gone"), make_task("wanted")
    save(adapter, running, gone, wanted)
    assert adapter.claim([running.uid], "me", 30) == [running.uid]
    store.clock.advance(1)
    running.status, running.progress = Status.COMPLETED, 100.0
    new = [make_task(f"new{i}", priority=i) for i in range(3)]
    statements = Statements(adapter) if store.kind != "memory" else None
    result = adapter.write(
        [rows.task_state_row(running), *(rows.task_to_row(t) for t in new)],
        delete=[gone.uid, "no-such-uid"],
        claim=ClaimRequest(
            "me", 30, uids=(gone.uid, wanted.uid, running.uid), limit=2, columns=STATE
        ),
    )
    now = dt.datetime.fromtimestamp(store.clock(), UTC)
    assert isinstance(result, WriteResult)
    assert result.updated_at == now and result.deleted == 1
    assert result.won == [wanted.uid]  # gone was deleted first; running is no longer ready
    assert [r["uid"] for r in result.claimed] == [new[2].uid, new[1].uid]  # saved, then claimed
    for row in result.claimed:
        assert row.keys() == {"uid", "updated_at", *STATE}
        assert (row["status"], row["lease_owner"], row["updated_at"]) == ("running", "me", now)
    if statements is not None:
        assert statements.commits == 1  # one transaction
    found = by_uid(adapter)
    assert gone.uid not in found
    assert found[running.uid]["status"] == "completed"
    assert {uid for uid, row in found.items() if row["status"] == "running"} == {
        wanted.uid, new[2].uid, new[1].uid,
    }  # fmt: skip
    assert all(row["updated_at"] == now for uid, row in found.items() if uid != running.uid)
    assert adapter.write() == WriteResult(adapter.write().updated_at)  # nothing to do


def test_new_rows_compete_with_stored_ones_and_are_inserted_claimed(
    store: Store, adapter: DatabaseAdapter
) -> None:
    stored = make_task("stored", priority=1)
    save(adapter, stored)
    store.clock.advance(1)
    best, last, later = (
        make_task("best", priority=5), make_task("last"), make_task("later", delay=60)
    )  # fmt: skip
    result = adapter.write(
        [rows.task_to_row(t) for t in (best, last, later)],
        claim=ClaimRequest("me", 30, limit=2, columns=()),
    )
    assert [r["uid"] for r in result.claimed] == [best.uid, stored.uid]  # best first, in order
    found = by_uid(adapter)
    assert {uid: row["status"] for uid, row in found.items()} == {
        best.uid: "running", stored.uid: "running", last.uid: "pending", later.uid: "pending",
    }  # fmt: skip
    assert found[best.uid]["lease_owner"] == found[stored.uid]["lease_owner"] == "me"
    assert found[last.uid]["lease_owner"] is None


@sql_only
def test_new_rows_claimed_as_they_are_saved_are_written_once(adapter: DatabaseAdapter) -> None:
    statements = Statements(adapter)
    new = [make_task(f"new{i}") for i in range(3)]
    result = adapter.write(
        [rows.task_to_row(t) for t in new], claim=ClaimRequest("me", 30, limit=2, columns=())
    )
    assert [r["uid"] for r in result.claimed] == [new[0].uid, new[1].uid]
    assert not [sql for sql in statements.sql if sql.lstrip().upper().startswith("UPDATE")]
    assert {uid: row["lease_owner"] for uid, row in by_uid(adapter).items()} == {
        new[0].uid: "me", new[1].uid: "me", new[2].uid: None,
    }  # fmt: skip


def test_a_new_row_deleted_in_the_same_write_is_not_claimed(adapter: DatabaseAdapter) -> None:
    gone, kept = make_task("gone", priority=5), make_task("kept")
    result = adapter.write(
        [rows.task_to_row(gone), rows.task_to_row(kept)],
        delete=[gone.uid],
        claim=ClaimRequest("me", 30, limit=2, columns=()),
    )
    assert [r["uid"] for r in result.claimed] == [kept.uid]
    assert set(by_uid(adapter)) == {kept.uid}


def test_nothing_is_written_when_a_part_is_refused(store: Store, adapter: DatabaseAdapter) -> None:
    keep, ready = make_task("keep"), make_task("ready")
    save(adapter, keep, ready)
    before = by_uid(adapter)
    bad = {**rows.task_to_row(make_task()), "progress": float("nan")}
    with pytest.raises(RowRejectedError):
        adapter.write(
            [rows.task_to_row(make_task()), bad],
            delete=[keep.uid],
            claim=ClaimRequest("me", 30, uids=(ready.uid,), limit=5),
        )
    assert by_uid(adapter) == before


POISON = {
    "sqlite": """CREATE TRIGGER no_poison BEFORE INSERT ON tasks WHEN NEW.name = 'poison'
                 BEGIN SELECT RAISE(ABORT, 'poison row'); END""",
    "postgresql": "ALTER TABLE tasks ADD CONSTRAINT no_poison CHECK (name <> 'poison')",
}


@sql_only
def test_a_refused_row_rolls_back_the_whole_cycle(store: Store, adapter: DatabaseAdapter) -> None:
    keep, ready = make_task("keep"), make_task("ready")
    save(adapter, keep, ready)
    before = by_uid(adapter)
    store.sql(POISON[store.kind])
    with pytest.raises(DatabaseError) as caught:
        adapter.write(
            [rows.task_to_row(make_task("fine")), rows.task_to_row(make_task("poison"))],
            delete=[keep.uid],
            claim=ClaimRequest("me", 30, uids=(ready.uid,), limit=5),
        )
    assert caught.value.permanent
    assert by_uid(adapter) == before


def test_claim_requests_are_checked_when_made(adapter: DatabaseAdapter) -> None:
    bad: list[tuple[dict[str, Any], str]] = [
        ({"owner": ""}, "owner"),
        ({"owner": "o" * 256}, "owner"),
        ({"lease_seconds": 0}, "lease_seconds"),
        ({"lease_seconds": float("inf")}, "lease_seconds"),
        ({"uids": "abc"}, "uids"),
        ({"uids": ("",)}, "uids"),
        ({"limit": -1}, "limit"),
        ({"limit": 1.5}, "limit"),
        ({"types": "work"}, "types"),
        ({"columns": ("status", "colour")}, "colour"),
        ({"columns": "status"}, "columns"),
    ]
    for change, word in bad:
        options: dict[str, Any] = {"owner": "me", "lease_seconds": 10, **change}
        with pytest.raises(ConfigurationError, match=word):
            ClaimRequest(**options)
    request = ClaimRequest("me", dt.timedelta(seconds=10), uids=["a", "a", "b"], types=["t"])  # type: ignore[arg-type]
    assert (request.lease_seconds, request.uids, request.types) == (10.0, ("a", "b"), ("t",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.limit = 5  # type: ignore[misc]
    with pytest.raises(ConfigurationError, match="ClaimRequest"):
        adapter.write(claim={"owner": "me"})  # type: ignore[arg-type]
    assert ClaimRequest("me", 5, limit=3, types=()).types == ()
    assert adapter.write(claim=ClaimRequest("me", 5, limit=3, types=())).claimed == []


def test_rows_with_the_same_uid_are_merged_in_order(adapter: DatabaseAdapter) -> None:
    task = make_task()
    full = rows.task_to_row(task)
    adapter.save([full, {"uid": task.uid, "progress": 40.0}, {"uid": task.uid, "worker": "w"}])
    [row] = adapter.load()
    assert (row["progress"], row["worker"], row["name"]) == (40.0, "w", task.name)
    later = make_task()
    adapter.save([{"uid": later.uid, "progress": 10.0}, rows.task_to_row(later)])
    assert adapter.load([later.uid])[0]["progress"] == 0.0  # the complete row came last


# -- narrow reads ---------------------------------------------------------------------------
def test_columns_limit_what_is_read(store: Store, adapter: DatabaseAdapter) -> None:
    tasks = [make_task(f"t{i}", data={"big": "x" * 1000}) for i in range(3)]
    save(adapter, *tasks)
    mark = dt.datetime.fromtimestamp(store.clock(), UTC) - dt.timedelta(seconds=1)
    statements = Statements(adapter) if store.kind != "memory" else None
    narrow = {"uid", "updated_at", "status", "progress"}
    loaded = adapter.load(columns=["status", "progress"])
    assert len(loaded) == 3 and all(row.keys() == narrow for row in loaded)
    [one] = adapter.load([tasks[0].uid], columns=("progress",))
    assert one.keys() == {"uid", "updated_at", "progress"}
    changed = adapter.load_changed(mark, columns=["status", "progress"])
    assert sorted(r["uid"] for r in changed) == sorted(t.uid for t in tasks)
    assert all(row.keys() == narrow for row in changed)
    claimed = adapter.claim_next("me", 2, 30, columns=["status"])
    assert [row.keys() for row in claimed] == [{"uid", "updated_at", "status"}] * 2
    assert all(row["status"] == "running" for row in claimed)
    if statements is not None:  # the blobs and documents never left the database
        assert statements.sql and not any("data" in sql for sql in statements.sql)
    full = adapter.load([tasks[0].uid])[0]
    assert full.keys() >= {"data", "data_blob", "key", "output"}
    for bad, word in ((["colour"], "colour"), ("status", "columns"), ([""], "columns")):
        with pytest.raises(ConfigurationError, match=word):
            adapter.load(columns=bad)
        with pytest.raises(ConfigurationError, match=word):
            adapter.load_changed(mark, columns=bad)
        with pytest.raises(ConfigurationError, match=word):
            adapter.claim_next("me", 1, 30, columns=bad)


def test_load_by_key(adapter: DatabaseAdapter) -> None:
    keyed = {f"k{i}": make_task(f"t{i}") for i in range(3)}
    adapter.save({**rows.task_to_row(task), "key": key} for key, task in keyed.items())
    save(adapter, make_task("no key"))
    found = adapter.load_by_key(["k0", "k2", "missing", "k0"])
    assert sorted((row["key"], row["uid"]) for row in found) == [
        ("k0", keyed["k0"].uid), ("k2", keyed["k2"].uid),
    ]  # fmt: skip
    [narrow] = adapter.load_by_key(["k1"], columns=["status", "key"])
    assert narrow == {
        "uid": keyed["k1"].uid, "updated_at": narrow["updated_at"], "status": "pending",
        "key": "k1",
    }  # fmt: skip
    assert adapter.load_by_key([]) == []
    with pytest.raises(ConfigurationError, match="keys"):
        adapter.load_by_key("k1")


@sql_only
def test_a_key_lookup_uses_the_key_index(store: Store, adapter: DatabaseAdapter) -> None:
    adapter.save({**rows.task_to_row(make_task(f"t{i}")), "key": f"k{i}"} for i in range(200))
    statement = "SELECT uid FROM tasks WHERE key = 'k7'"
    if store.kind == "sqlite":
        plan = " ".join(str(row[-1]) for row in store.sql(f"EXPLAIN QUERY PLAN {statement}"))
    else:
        assert store.raw is not None
        with store.raw.begin() as conn:  # a small table is scanned unless told otherwise
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = " ".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN {statement}"))
    assert "ix_tasks_key" in plan, plan


def test_claims_read_every_column_by_default(adapter: DatabaseAdapter) -> None:
    save(adapter, make_task(data={"x": 1}))
    [row] = adapter.claim_next("me", 1, 30)
    assert tuple(row) == COLUMNS
    assert rows.row_to_task(row).data == {"x": 1}
