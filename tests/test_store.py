"""One storage suite for every backend: memory, SQLite (a file in tmp_path) and PostgreSQL
(see store_kit.py). Here: round trips, writes, claims, executors, hosts, wake-ups, corrupt
rows, construction. Leases, the schema, bad rows and database faults have files of their
own (test_store_*.py).

Signing is tested in test_signing.py; here NBQUEUE_SECRET is unset (blobs stored as they are).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import multiprocessing
import pickle
import random
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import store_kit as kit
from helpers import poll
from store_kit import (
    UTC,
    Store,
    by_uid,
    load_task,
    make_task,
    postgres_only,
    save,
    sql_only,
    sqlite_only,
)

from nbqueue import rows, serialization
from nbqueue.errors import (
    ConfigurationError,
    CorruptRowError,
    RowRejectedError,
    SerializationError,
)
from nbqueue.store import (
    DatabaseAdapter,
    MemoryAdapter,
    SQLAlchemyAdapter,
    make_adapter,
)
from nbqueue.task import ErrorRecord, Status, Task

store, adapter, no_secret = kit.store, kit.adapter, kit.no_secret


# -- values that are not JSON (module level, so they pickle by reference) -----------------
@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


SAME = (
    "uid", "name", "type", "description", "status", "priority", "progress", "retry_count",
    "max_retries", "delay", "timeout", "run_at", "user_id", "created_at", "started_at",
    "finished_at", "errors", "worker", "_ready_at",
)  # fmt: skip


def assert_same_task(back: Task[Any], task: Task[Any]) -> None:
    for name in SAME:
        assert getattr(back, name) == getattr(task, name), name
    for moment in ("run_at", "created_at", "started_at", "finished_at"):
        value = getattr(back, moment)
        assert value is None or value.tzinfo == UTC, moment
    assert back.queue is None and back._hooks is None
    unset = [slot for slot in Task.__slots__ if slot != "__weakref__" and not hasattr(back, slot)]
    assert unset == []


# -- round trips --------------------------------------------------------------------------
def test_json_values_round_trip(adapter: DatabaseAdapter) -> None:
    task = make_task(
        "fit",
        type="model",
        description="fit one model",
        priority=3,
        max_retries=5,
        delay=1.5,
        timeout=12,
        run_at=dt.datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
        data={"rows": [1, 2.5, "x", None, True], "nested": {"empty": [], "é": "ü\u0000"}},
        user_id="ada",
        metadata={"owner": "ada", "tags": ["a", "b"]},
    )
    save(adapter, task)
    [row] = adapter.load([task.uid])
    assert row["data_blob"] is None and row["data"] is not None
    back = rows.row_to_task(row)
    assert_same_task(back, task)
    assert back.data == task.data and back.metadata == task.metadata
    assert back._payload is not None
    assert pickle.loads(back._payload) == (task.data, task.metadata, task.user_id)


def test_values_that_are_not_json_round_trip(adapter: DatabaseAdapter) -> None:
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    data = {"ids": {1, 2, 3}, "point": Point(1, 2), "pair": (1, 2), 3: "int key"}
    task = make_task(
        data={**data, "frame": frame, "array": np.arange(4.0)},
        user_id=uuid.UUID(int=7),
        metadata={"when": dt.datetime(2030, 1, 1, tzinfo=UTC)},
    )
    try:
        raise ValueError("bad input")
    except ValueError as exc:
        task.errors.append(ErrorRecord.from_exception(exc))
    task.status, task.progress, task.retry_count = Status.COMPLETED, 100.0, 1
    task.started_at = dt.datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    task.finished_at = dt.datetime(2030, 1, 1, 12, 5, 30, 5, tzinfo=UTC)
    task.worker = "nbqueue-worker-1"
    task._result_bytes = serialization.dumps({"processed": True, "value": Point(3, 4)})
    save(adapter, task)

    [row] = adapter.load([task.uid])
    assert row["data"] is None and row["user_id"] is None and row["data_blob"]
    assert row["result"] is None and row["result_blob"]
    back = rows.row_to_task(row)
    assert_same_task(back, task)
    assert back.data is not None
    assert {k: back.data[k] for k in data} == data
    assert type(back.data["pair"]) is tuple
    assert back.data["frame"].equals(frame)
    assert np.array_equal(back.data["array"], np.arange(4.0))
    assert back.user_id == uuid.UUID(int=7) and back.metadata == task.metadata
    assert back.result() == {"processed": True, "value": Point(3, 4)}
    assert back.errors[0].type == "ValueError" and "bad input" in (back.errors[0].traceback or "")
    assert back.errors[0].classes[0] == "builtins.ValueError"
    assert back._payload is None  # finished: no worker will need it


def test_json_result_and_failure_round_trip(adapter: DatabaseAdapter) -> None:
    done = make_task("done")
    done.status = Status.COMPLETED
    done._result_bytes = serialization.dumps({"processed": True, "value": [1, 2]})
    failed = make_task("failed", metadata={"k": 1})
    failed.status, failed.retry_count = Status.RETRYING, 2
    failed._ready_at += 30
    failed.add_error("first try")
    failed.add_error(RuntimeError("second try"))
    save(adapter, done, failed)

    found = by_uid(adapter)
    assert found[done.uid]["result"] is not None and found[done.uid]["result_blob"] is None
    assert rows.row_to_task(found[done.uid]).result() == {"processed": True, "value": [1, 2]}
    back = rows.row_to_task(found[failed.uid])
    assert_same_task(back, failed)
    assert [str(e) for e in back.errors] == ["Error: first try", "RuntimeError: second try"]
    assert found[failed.uid]["error"] == "RuntimeError: second try"


# -- writing ------------------------------------------------------------------------------
def test_save_upserts(adapter: DatabaseAdapter) -> None:
    task = make_task(priority=1)
    save(adapter, task)
    task.priority, task.status, task.progress = 9, Status.RUNNING, 40.0
    save(adapter, task)
    [row] = adapter.load()
    assert (row["priority"], row["status"], row["progress"]) == (9, "running", 40.0)


def test_state_row_updates_only_what_changes(store: Store, adapter: DatabaseAdapter) -> None:
    task = make_task(data={"big": list(range(10))})
    save(adapter, task)
    task.data = {"changed": True}  # inputs are not part of a state row
    task.status, task.progress, task.worker = Status.RUNNING, 12.5, "w-1"
    task.started_at = dt.datetime.now(dt.timezone.utc)
    ghost = make_task("never saved")
    adapter.save([rows.task_state_row(task), rows.task_state_row(ghost)])
    found = by_uid(adapter)
    assert list(found) == [task.uid]  # a state row never inserts
    back = rows.row_to_task(found[task.uid])
    assert back.data == {"big": list(range(10))}
    assert (back.status, back.progress, back.worker) == (Status.RUNNING, 12.5, "w-1")


def test_apply_state_syncs_another_copy(adapter: DatabaseAdapter) -> None:
    task = make_task(data=[1, 2])
    save(adapter, task)
    copy = load_task(adapter, task.uid)
    task.status, task.progress, task.worker = Status.FAILED, 50.0, "w-2"
    task.add_error(KeyError("missing"))
    adapter.save([rows.task_state_row(task)])
    rows.apply_state(copy, adapter.load([task.uid])[0])
    assert (copy.status, copy.progress, copy.worker) == (Status.FAILED, 50.0, "w-2")
    assert copy.errors == task.errors and copy.data == [1, 2]
    with pytest.raises(CorruptRowError, match=task.uid):
        rows.apply_state(make_task(), rows.task_state_row(task))


def test_delete(adapter: DatabaseAdapter) -> None:
    keep, drop = make_task("keep"), make_task("drop")
    save(adapter, keep, drop)
    assert adapter.delete([drop.uid, "no-such-uid"]) == 1
    assert list(by_uid(adapter)) == [keep.uid]
    assert adapter.delete([]) == 0


def test_bad_arguments_are_refused(adapter: DatabaseAdapter) -> None:
    task = make_task()
    with pytest.raises(RowRejectedError, match="unknown column"):
        adapter.save([{**rows.task_to_row(task), "colour": "red"}])
    with pytest.raises(RowRejectedError, match="uid"):
        adapter.save([{"status": "pending"}])
    with pytest.raises(ConfigurationError, match="owner"):
        adapter.claim([task.uid], "", 10)
    with pytest.raises(ConfigurationError, match="lease_seconds"):
        adapter.claim([task.uid], "me", 0)
    with pytest.raises(ConfigurationError, match="limit"):
        adapter.claim_next("me", 0, 10)
    with pytest.raises(ConfigurationError, match="types"):
        adapter.claim_next("me", 1, 10, types="work")
    with pytest.raises(ConfigurationError, match="since"):
        adapter.load_changed("yesterday")  # type: ignore[arg-type]
    assert adapter.load() == []


# -- claims -------------------------------------------------------------------------------
def test_claim_takes_only_pending_ready_rows(store: Store, adapter: DatabaseAdapter) -> None:
    ready = make_task("ready")
    later = make_task("later", delay=3600)
    scheduled = make_task("scheduled", run_at=dt.datetime.now(UTC) + dt.timedelta(days=1))
    backed_off = make_task("retrying, backed off")
    backed_off.status = Status.RETRYING
    waiting = make_task("retrying, still waiting")
    waiting.status, waiting._ready_at = Status.RETRYING, store.clock() + 100
    others = []
    for status in Status:
        if status not in _CLAIMABLE:
            others.append(make_task(status.value))
            others[-1].status = status
    everyone = [ready, later, scheduled, backed_off, waiting, *others]
    save(adapter, *everyone)

    won = adapter.claim([t.uid for t in everyone], "me", 30)
    assert sorted(won) == sorted([ready.uid, backed_off.uid])
    assert adapter.claim([t.uid for t in everyone], "you", 30) == []
    found = by_uid(adapter)
    for uid in won:
        assert found[uid]["status"] == "running" and found[uid]["lease_owner"] == "me"
        expected = dt.datetime.fromtimestamp(store.clock() + 30, UTC)
        assert found[uid]["lease_expires_at"] == expected
    assert found[later.uid]["status"] == "pending" and found[later.uid]["lease_owner"] is None

    store.clock.advance(200)  # the back-off is over, the delay is not
    assert adapter.claim([waiting.uid, later.uid], "me", 30) == [waiting.uid]


_CLAIMABLE = (Status.PENDING, Status.RETRYING)


def test_claim_next_order_and_types(store: Store, adapter: DatabaseAdapter) -> None:
    start = dt.datetime.now(UTC) - dt.timedelta(minutes=5)
    specs = [("low-old", 0, "a"), ("high-new", 5, "a"), ("high-old", 5, "b"), ("mid", 2, "b"),
             ("low-new", 0, "a"), ("high-c", 9, "c")]  # fmt: skip
    tasks = {}
    for i, (name, priority, kind) in enumerate(specs):
        task = make_task(name, type=kind, priority=priority)
        task.created_at = start + dt.timedelta(seconds=i)
        tasks[name] = task
    tasks["high-new"].created_at = start + dt.timedelta(seconds=30)
    save(adapter, *tasks.values())
    names = {t.uid: t.name for t in tasks.values()}

    first = adapter.claim_next("me", 3, 30, types=["a", "b"])
    assert [names[r["uid"]] for r in first] == ["high-old", "high-new", "mid"]
    assert all(r["status"] == "running" and r["lease_owner"] == "me" for r in first)
    assert rows.row_to_task(first[0]).name == "high-old"
    assert [names[r["uid"]] for r in adapter.claim_next("me", 10, 30, types=["a"])] == [
        "low-old",
        "low-new",
    ]
    assert adapter.claim_next("me", 10, 30, types=[]) == []
    assert [names[r["uid"]] for r in adapter.claim_next("me", 10, 30)] == ["high-c"]
    assert adapter.claim_next("me", 10, 30) == []


def test_claims_are_exactly_once_under_contention(store: Store) -> None:
    first = store.new_adapter()
    first.open()
    tasks = [make_task(f"t{i}", priority=i % 3) for i in range(200)]
    save(first, *tasks)
    uids = [t.uid for t in tasks]
    claimers = [store.new_adapter() for _ in range(4)]
    for claimer in claimers:
        claimer.open()
    start = threading.Barrier(len(claimers))
    won: dict[int, list[str]] = {i: [] for i in range(len(claimers))}
    errors: list[BaseException] = []

    def claim(i: int) -> None:
        try:
            adapter, owner = claimers[i], f"owner-{i}"
            order = uids[:]
            random.Random(i).shuffle(order)
            start.wait()
            if i % 2 == 0:  # by uid, in batches
                for k in range(0, len(order), 25):
                    won[i].extend(adapter.claim(order[k : k + 25], owner, 60))
            else:  # the best ready ones
                while batch := adapter.claim_next(owner, 7, 60):
                    won[i].extend(row["uid"] for row in batch)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(claimers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    every = [uid for claimed in won.values() for uid in claimed]
    assert sorted(every) == sorted(uids)  # every uid won, and by exactly one claimer
    found = by_uid(first)
    for i, claimed in won.items():
        assert all(found[uid]["lease_owner"] == f"owner-{i}" for uid in claimed)


def _claim_in_process(
    url: str, uids: list[str], owner: str, seed: int, start: Any, results: Any
) -> None:
    adapter = SQLAlchemyAdapter(url)
    try:
        adapter.open()
        order = uids[:]
        random.Random(seed).shuffle(order)
        start.wait()
        won = []
        for k in range(0, len(order), 20):
            won.extend(adapter.claim(order[k : k + 20], owner, 60))
            won.extend(row["uid"] for row in adapter.claim_next(owner, 3, 60))
        results.put((owner, won))
    except BaseException as exc:
        results.put((owner, repr(exc)))
    finally:
        adapter.close()


@sql_only
def test_claims_are_exactly_once_across_processes(store: Store, adapter: DatabaseAdapter) -> None:
    tasks = [make_task(f"t{i}") for i in range(200)]
    save(adapter, *tasks)
    uids = [t.uid for t in tasks]
    assert adapter.url is not None
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(2), ctx.Queue()
    processes = [
        ctx.Process(target=_claim_in_process, args=(adapter.url, uids, f"p{i}", i, start, results))
        for i in range(2)
    ]
    for process in processes:
        process.start()
    try:
        won = dict(results.get(timeout=90) for _ in processes)
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    assert all(isinstance(claimed, list) for claimed in won.values()), won
    assert sorted(won["p0"] + won["p1"]) == sorted(uids)
    assert [p.exitcode for p in processes] == [0, 0]


def test_load_changed(store: Store, adapter: DatabaseAdapter) -> None:
    old, new = make_task("old"), make_task("new")
    save(adapter, old)
    mark = dt.datetime.fromtimestamp(store.clock(), UTC)
    store.clock.advance(1)
    save(adapter, new)
    assert [r["uid"] for r in adapter.load_changed(mark)] == [new.uid]
    store.clock.advance(1)
    adapter.claim([old.uid], "me", 10)
    assert sorted(r["uid"] for r in adapter.load_changed(mark)) == sorted([old.uid, new.uid])
    later = dt.datetime.fromtimestamp(store.clock(), UTC)
    assert adapter.load_changed(later) == []
    assert adapter.load_changed(later.astimezone(dt.timezone(dt.timedelta(hours=-5)))) == []


# -- executors ----------------------------------------------------------------------------
EVERY_BYTE = bytes(range(256)) * 3


def test_executors_by_digest_and_newest(store: Store, adapter: DatabaseAdapter) -> None:
    assert adapter.load_executor("fit") is None
    adapter.save_executor("fit", "d1", EVERY_BYTE)
    store.clock.advance(1)
    adapter.save_executor("fit", "d2", b"second")
    store.clock.advance(1)
    adapter.save_executor("plot", "d9", b"other type")
    assert adapter.load_executor("fit") == ("d2", b"second")
    assert adapter.load_executor("fit", "d1") == ("d1", EVERY_BYTE)
    assert adapter.load_executor("fit", "d9") is None  # a digest of another type
    assert adapter.load_executor("plot") == ("d9", b"other type")
    assert adapter.load_executor("nothing") is None
    assert adapter.executor_digests() == {"fit": "d2", "plot": "d9"}
    # Saving a pair again is idempotent, replaces its payload and makes it the newest.
    store.clock.advance(1)
    adapter.save_executor("fit", "d1", bytearray(b"again"))
    adapter.save_executor("fit", "d1", b"again")
    assert adapter.load_executor("fit") == ("d1", b"again")
    assert adapter.load_executor("fit", "d2") == ("d2", b"second")
    assert adapter.executor_digests() == {"fit": "d1", "plot": "d9"}
    # Another adapter on the same storage sees them.
    assert store.new_adapter().load_executor("fit", "d1") == ("d1", b"again")


def test_executor_arguments_are_checked(adapter: DatabaseAdapter) -> None:
    with pytest.raises(ConfigurationError, match="task_type"):
        adapter.save_executor("", "d", b"x")
    with pytest.raises(ConfigurationError, match="digest"):
        adapter.save_executor("t", "d" * 129, b"x")
    with pytest.raises(ConfigurationError, match="payload must be bytes"):
        adapter.save_executor("t", "d", "text")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="digest"):
        adapter.load_executor("t", "")
    assert adapter.load_executor("t") is None


# -- hosts --------------------------------------------------------------------------------
def _moment(store: Store) -> dt.datetime:
    return dt.datetime.fromtimestamp(store.clock(), UTC)


def test_host_heartbeats(store: Store, adapter: DatabaseAdapter) -> None:
    assert adapter.load_hosts() == []
    started = _moment(store)
    adapter.host_heartbeat("w-b", hostname="box-b", pid=42, running=0, capacity=4)
    adapter.host_heartbeat("w-a", hostname="box-a", pid=7, running=1, capacity=2)
    store.clock.advance(5)
    adapter.host_heartbeat("w-b", hostname="box-b", pid=42, running=3, capacity=4)
    hosts = store.new_adapter().load_hosts()
    assert [tuple(row) for row in hosts] == [
        ("name", "hostname", "pid", "started_at", "last_seen", "running", "capacity")
    ] * 2
    assert hosts == [
        {"name": "w-a", "hostname": "box-a", "pid": 7, "started_at": started,
         "last_seen": started, "running": 1, "capacity": 2},
        {"name": "w-b", "hostname": "box-b", "pid": 42, "started_at": started,
         "last_seen": _moment(store), "running": 3, "capacity": 4},
    ]  # fmt: skip
    # Another process taking the name over starts afresh.
    store.clock.advance(5)
    adapter.host_heartbeat("w-b", hostname="box-b", pid=43, running=0, capacity=4)
    [_, again] = adapter.load_hosts()
    assert again["pid"] == 43 and again["started_at"] == again["last_seen"] == _moment(store)
    adapter.remove_host("w-b")
    adapter.remove_host("no such host")
    assert [row["name"] for row in adapter.load_hosts()] == ["w-a"]


def test_host_arguments_are_checked(adapter: DatabaseAdapter) -> None:
    good: dict[str, Any] = {"hostname": "box", "pid": 1, "running": 0, "capacity": 1}
    with pytest.raises(ConfigurationError, match="name"):
        adapter.host_heartbeat("", **good)
    for key, bad in [("pid", -1), ("running", True), ("capacity", 1.5), ("hostname", "")]:
        with pytest.raises(ConfigurationError, match=key):
            adapter.host_heartbeat("h", **{**good, key: bad})
    with pytest.raises(ConfigurationError, match="name"):
        adapter.remove_host("")
    assert adapter.load_hosts() == []


# -- wake-ups -----------------------------------------------------------------------------
class Calls:
    """A listen() callback that counts its calls (from any thread)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self.count += 1


@pytest.mark.parametrize("store", ["memory"], indirect=True)
def test_memory_wakes_listeners_in_process(store: Store, adapter: DatabaseAdapter) -> None:
    calls, failing = Calls(), Calls()

    def broken() -> None:
        failing()
        raise RuntimeError("a listener bug")

    stop = adapter.listen(calls)
    stop_broken = adapter.listen(broken)
    adapter.notify()  # a failing callback neither raises here nor stops the others
    assert (calls.count, failing.count) == (1, 1)
    stop()
    stop()  # idempotent
    adapter.notify()
    assert (calls.count, failing.count) == (1, 2)
    stop_broken()
    assert not adapter.notifies_other_processes
    with pytest.raises(ConfigurationError, match="callable"):
        adapter.listen("not callable")  # type: ignore[arg-type]


@sqlite_only
def test_sqlite_has_no_wake_ups(store: Store, adapter: DatabaseAdapter) -> None:
    calls = Calls()
    threads = threading.active_count()
    stop = adapter.listen(calls)
    assert threading.active_count() == threads  # no thread: listeners poll instead
    adapter.notify()
    store.new_adapter().notify()
    assert calls.count == 0 and not adapter.notifies_other_processes
    stop()


def _listener_pids(store: Store, channel: str) -> set[int]:
    """Backends of this test's database whose last statement LISTENed on ``channel``."""
    assert store.url is not None
    found = store.sql(
        "SELECT pid FROM pg_stat_activity WHERE datname = :db AND query = :listen",
        db=sa.make_url(store.url).database,
        listen=f'LISTEN "{channel}"',
    )
    return {pid for (pid,) in found}


def _listen_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("nbqueue-listen-")]


@postgres_only
def test_postgres_notify_reaches_a_listener_in_another_connection(store: Store) -> None:
    listener, notifier = store.new_adapter(), store.new_adapter()
    assert listener.notifies_other_processes
    calls = Calls()
    stop = listener.listen(calls)  # returns once it is listening
    notifier.notify()
    poll(lambda: calls.count >= 1, timeout=10)
    store.sql("SELECT pg_notify('nbqueue_tasks', 'from plain SQL')")
    poll(lambda: calls.count >= 2, timeout=10)
    started = time.monotonic()
    stop()
    assert time.monotonic() - started < 2 and _listen_threads() == []
    poll(lambda: not _listener_pids(store, "nbqueue_tasks"), timeout=10)  # connection closed


@postgres_only
def test_postgres_channels_are_per_table(store: Store) -> None:
    mixed, other = store.new_adapter(table="MixedCase"), store.new_adapter()
    assert isinstance(mixed, SQLAlchemyAdapter) and mixed.channel == "nbqueue_MixedCase"
    calls = Calls()
    stop = mixed.listen(calls)
    other.notify()  # another table: not for this listener
    store.new_adapter(table="MixedCase").notify()
    poll(lambda: calls.count >= 1, timeout=10)
    # Notifications arrive in commit order, so the first one would have come first.
    assert calls.count == 1
    stop()


@postgres_only
def test_postgres_listener_reconnects_after_its_connection_is_killed(
    store: Store, postgres_server: sa.Engine
) -> None:
    listener, notifier = store.new_adapter(), store.new_adapter()
    calls = Calls()
    stop = listener.listen(calls)
    [first] = _listener_pids(store, "nbqueue_tasks")
    with postgres_server.connect() as conn:
        conn.execute(sa.text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": first})
    # It reconnects, and tells its callback once (a wake-up may have been missed meanwhile).
    poll(lambda: _listener_pids(store, "nbqueue_tasks") - {first}, timeout=20)
    poll(lambda: calls.count == 1, timeout=10)
    notifier.notify()
    poll(lambda: calls.count == 2, timeout=10)
    listener.close()  # close() stops every listener of the adapter
    assert _listen_threads() == []
    stop()  # still safe to call


# -- corrupt rows -------------------------------------------------------------------------
CORRUPTIONS: dict[str, tuple[dict[str, Any], str]] = {
    "errors not a list": ({"errors": '{"not": "a list"}'}, "errors"),
    "malformed error record": ({"errors": '[{"type": 1}]'}, "errors"),
    "metadata not a mapping": ({"metadata": "[1, 2]"}, "metadata"),
    "not a pickle": ({"data_blob": b"garbage"}, "data_blob"),
    "unpicklable blob": ({"data_blob": b"\x80\x05\x95garbage."}, "data_blob"),
    "blob of the wrong shape": ({"data_blob": pickle.dumps([1, 2])}, "data_blob"),
    "garbage result": ({"result_blob": b"junk"}, "result_blob"),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corrupt_row_fails_only_its_task(adapter: DatabaseAdapter, corruption: str) -> None:
    change, column = CORRUPTIONS[corruption]
    good = [make_task(f"good{i}", data={"i": i}) for i in range(3)]
    bad = make_task("bad", data={"x": 1})
    save(adapter, *good, bad)
    adapter.save([{"uid": bad.uid, **change}])
    _assert_only_bad_fails(adapter, good, bad, column)


def _assert_only_bad_fails(
    adapter: DatabaseAdapter, good: list[Task[Any]], bad: Task[Any], column: str
) -> None:
    loaded = by_uid(adapter)  # loading never fails
    assert len(loaded) == len(good) + 1
    for task in good:
        assert rows.row_to_task(loaded[task.uid]).data == task.data
    with pytest.raises(CorruptRowError) as caught:
        rows.row_to_task(loaded[bad.uid])
    assert bad.uid in str(caught.value) and repr(column) in str(caught.value)
    assert caught.value.uid == bad.uid
    assert isinstance(caught.value, SerializationError)
    # The claim path skips nothing it should not: good rows are still claimable.
    assert len(adapter.claim_next("me", 10, 30)) >= len(good)


RAW_CORRUPTIONS: dict[str, dict[str, tuple[str, str]]] = {
    "sqlite": {
        "data": ("UPDATE tasks SET data = '{oops' WHERE uid = :uid", "data"),
        "created_at": ("UPDATE tasks SET created_at = 'yesterday' WHERE uid = :uid", "created_at"),
        "priority": ("UPDATE tasks SET priority = 'high' WHERE uid = :uid", "priority"),
        "status": ("UPDATE tasks SET status = 'exploded' WHERE uid = :uid", "status"),
        "data_blob": ("UPDATE tasks SET data_blob = x'00ff' WHERE uid = :uid", "data_blob"),
    },
    "postgresql": {
        "errors": ("""UPDATE tasks SET errors = '{"x": 1}' WHERE uid = :uid""", "errors"),
        "data_blob": (
            r"UPDATE tasks SET data_blob = '\x00ff'::bytea WHERE uid = :uid",
            "data_blob",
        ),
        "metadata": ("UPDATE tasks SET metadata = '\"text\"' WHERE uid = :uid", "metadata"),
        "type": ("UPDATE tasks SET type = '' WHERE uid = :uid", "type"),
        "status": ("UPDATE tasks SET status = 'exploded' WHERE uid = :uid", "status"),
    },
}


@sql_only
def test_corrupt_row_written_with_raw_sql(store: Store, adapter: DatabaseAdapter) -> None:
    for statement, column in RAW_CORRUPTIONS[store.kind].values():
        good = [make_task(f"good{i}", data={"i": i}) for i in range(2)]
        bad = make_task("bad", data={"x": 1})
        save(adapter, *good, bad)
        store.sql(statement, uid=bad.uid)
        _assert_only_bad_fails(adapter, good, bad, column)
        adapter.delete(row["uid"] for row in adapter.load())


def test_row_missing_a_column_is_corrupt() -> None:
    task = make_task()
    row = rows.task_to_row(task)
    del row["status"]
    with pytest.raises(CorruptRowError, match=f"{task.uid}.*'status' is missing"):
        rows.row_to_task(row)
    with pytest.raises(CorruptRowError, match="uid"):
        rows.row_to_task({"name": "no uid"})


def test_unpicklable_data_is_refused_when_made_into_a_row() -> None:
    task = make_task(data={"lock": threading.Lock()})
    with pytest.raises(SerializationError, match="cannot be pickled"):
        rows.task_to_row(task)


# -- construction -------------------------------------------------------------------------
def test_make_adapter_accepts_what_queue_db_accepts(tmp_path: Path) -> None:
    assert make_adapter(None) is None
    memory = MemoryAdapter()
    assert make_adapter(memory) is memory
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'a.db'}")
    from_engine = make_adapter(engine)
    assert isinstance(from_engine, SQLAlchemyAdapter) and from_engine.engine is engine
    from_url = make_adapter(f"sqlite:///{tmp_path / 'b.db'}", table="jobs")
    assert isinstance(from_url, SQLAlchemyAdapter) and from_url.table == "jobs"
    from_path = make_adapter(tmp_path / "c.db")
    assert isinstance(from_path, SQLAlchemyAdapter)
    for adapter in (from_engine, from_url, from_path):
        adapter.open()
        save(adapter, make_task())
        assert len(adapter.load()) == 1
        adapter.close()
    engine.dispose()
    with pytest.raises(ConfigurationError, match=re.escape("sqlite:///nbqueue.db")):
        make_adapter("nbqueue.db")
    with pytest.raises(ConfigurationError, match="DatabaseAdapter, an SQLAlchemy Engine"):
        make_adapter(42)
    with pytest.raises(ConfigurationError, match="SQLite or PostgreSQL"):
        make_adapter("mysql://u@h/db")
    with pytest.raises(ConfigurationError, match="not a database URL"):
        make_adapter("::://")


def test_url_for_worker_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = SQLAlchemyAdapter("sqlite:///tasks.db")
    assert relative.url == f"sqlite:///{tmp_path / 'tasks.db'}"
    assert SQLAlchemyAdapter("sqlite://").url is None
    assert MemoryAdapter().url is None
    remote = SQLAlchemyAdapter("postgresql+psycopg://me:s3cret@db.example/queue")
    assert remote.url == "postgresql+psycopg://me:s3cret@db.example/queue"
    assert "s3cret" not in repr(remote)


def test_in_memory_sqlite_is_shared_between_threads() -> None:
    adapter = SQLAlchemyAdapter("sqlite://")
    adapter.open()
    task = make_task()
    thread = threading.Thread(target=save, args=(adapter, task))
    thread.start()
    thread.join()
    assert [row["uid"] for row in adapter.load()] == [task.uid]
    adapter.close()
