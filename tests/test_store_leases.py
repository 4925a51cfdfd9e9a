"""Leases on every backend (store_kit.py): heartbeats, expired leases, lease owners."""

from __future__ import annotations

import datetime as dt
import math
import threading
from typing import Any

import pytest
import store_kit as kit
from store_kit import UTC, Store, by_uid, make_task, retry, save

from nbqueue import rows
from nbqueue.errors import ConfigurationError, RowRejectedError
from nbqueue.store import DatabaseAdapter
from nbqueue.task import Status

store, adapter, no_secret = kit.store, kit.adapter, kit.no_secret


# -- leases -------------------------------------------------------------------------------
def test_heartbeat_extends_the_lease(store: Store, adapter: DatabaseAdapter) -> None:
    mine, theirs = make_task("mine"), make_task("theirs")
    save(adapter, mine, theirs)
    assert adapter.claim([mine.uid], "me", 10) == [mine.uid]
    assert adapter.claim([theirs.uid], "you", 10) == [theirs.uid]
    store.clock.advance(8)
    assert adapter.heartbeat("me", [mine.uid, theirs.uid, "gone"], 10) == [mine.uid]
    store.clock.advance(5)  # past the first lease, within the extended one
    assert adapter.requeue_expired(retry) == [theirs.uid]
    store.clock.advance(10)
    assert adapter.requeue_expired(retry) == [mine.uid]
    assert adapter.heartbeat("me", [mine.uid], 10) == []  # the lease was lost


def test_requeue_expired_counts_the_lost_attempt(store: Store, adapter: DatabaseAdapter) -> None:
    task, unleased, done = make_task("leased"), make_task("no lease"), make_task("done")
    unleased.status = Status.RUNNING  # saved as running without a claim: never requeued
    save(adapter, task, unleased, done)
    assert adapter.claim([task.uid, done.uid], "me", 5) == [task.uid, done.uid]
    task.status, task.progress, task.worker = Status.RUNNING, 30.0, "w-1"
    done.status = Status.COMPLETED
    adapter.save([rows.task_state_row(task), rows.task_state_row(done)])
    seen: list[dict[str, Any]] = []

    def lost(row: dict[str, Any]) -> dict[str, Any]:
        seen.append(row)
        row["name"] = "changed"  # a copy: changing it changes nothing stored
        return retry(row)

    assert adapter.requeue_expired(lost) == [] and seen == []
    store.clock.advance(6)
    before = dt.datetime.fromtimestamp(store.clock(), UTC)
    assert adapter.requeue_expired(lost) == [task.uid]
    assert [row["uid"] for row in seen] == [task.uid]
    assert seen[0]["progress"] == 30.0 and seen[0]["lease_owner"] == "me"  # the full row
    assert seen[0]["data"] == rows.task_to_row(task)["data"]
    assert adapter.requeue_expired(lost) == []
    found = by_uid(adapter)
    row = found[task.uid]
    assert (row["status"], row["retry_count"], row["progress"], row["worker"]) == (
        "pending", 1, 0.0, None,
    )  # fmt: skip
    assert (row["lease_owner"], row["lease_expires_at"], row["name"]) == (None, None, "leased")
    assert row["updated_at"] == before
    assert [r["uid"] for r in adapter.load_changed(before - dt.timedelta(microseconds=1))] == [
        task.uid
    ]
    assert found[done.uid]["status"] == "completed"
    assert found[unleased.uid]["status"] == "running"
    assert adapter.claim([task.uid], "you", 5) == [task.uid]


def test_every_attempt_counts_until_the_task_fails(store: Store, adapter: DatabaseAdapter) -> None:
    task = make_task(max_retries=2)
    save(adapter, task)
    for attempt in range(1, 4):
        assert adapter.claim([task.uid], f"host-{attempt}", 5) == [task.uid]
        store.clock.advance(6)  # the host died with the task: its lease runs out
        assert adapter.requeue_expired(retry) == [task.uid]
        [row] = adapter.load([task.uid])
        assert row["retry_count"] == attempt
    assert row["status"] == "failed" and row["error"] == "WorkerCrashedError: lost"
    assert adapter.claim([task.uid], "host-4", 5) == []


def test_requeue_the_rows_of_dead_owners_at_once(store: Store, adapter: DatabaseAdapter) -> None:
    tasks = [make_task(f"t{i}") for i in range(5)]
    save(adapter, *tasks)
    dead_a, dead_b, alive, expired = tasks[:2], tasks[2:3], tasks[3:4], tasks[4:]
    for owner, owned in (("dead-a", dead_a), ("dead-b", dead_b), ("alive", alive)):
        assert adapter.claim([t.uid for t in owned], owner, 60) == [t.uid for t in owned]
    assert adapter.claim([expired[0].uid], "slow", 1) == [expired[0].uid]
    store.clock.advance(2)  # only the lease of "slow" has run out
    assert adapter.lease_owners() == ["alive", "dead-a", "dead-b", "slow"]
    calls: list[str] = []

    def never(row: dict[str, Any]) -> dict[str, Any]:
        calls.append(row["uid"])
        return retry(row)

    assert adapter.requeue_expired(never, owners=[]) == [] and calls == []
    assert adapter.requeue_expired(never, owners=["nobody"]) == [] and calls == []
    requeued = adapter.requeue_expired(retry, owners=["dead-a", "dead-b", "dead-a"])
    assert sorted(requeued) == sorted(t.uid for t in dead_a + dead_b)  # leases not expired
    found = by_uid(adapter)
    assert {found[t.uid]["lease_owner"] for t in alive + expired} == {"alive", "slow"}
    assert adapter.lease_owners() == ["alive", "slow"]
    assert adapter.requeue_expired(retry) == [expired[0].uid]
    assert adapter.lease_owners() == ["alive"]
    with pytest.raises(ConfigurationError, match="owners"):
        adapter.requeue_expired(retry, owners="dead-a")
    with pytest.raises(ConfigurationError, match="lost"):
        adapter.requeue_expired("retry")  # type: ignore[arg-type]


def test_lease_owners_are_those_of_running_rows(adapter: DatabaseAdapter) -> None:
    assert adapter.lease_owners() == []
    running, finished = make_task("running"), make_task("finished")
    save(adapter, running, finished)
    adapter.claim([running.uid], "host-a", 30)
    adapter.claim([finished.uid], "host-b", 30)
    finished.status = Status.COMPLETED  # a state row leaves the lease columns as they are
    adapter.save([rows.task_state_row(finished)])
    assert adapter.lease_owners() == ["host-a"]


def test_a_failing_lost_function_changes_no_row(store: Store, adapter: DatabaseAdapter) -> None:
    tasks = [make_task(f"t{i}") for i in range(3)]
    save(adapter, *tasks)
    adapter.claim([t.uid for t in tasks], "dead", 5)
    store.clock.advance(6)
    before = by_uid(adapter)

    def broken(row: dict[str, Any]) -> dict[str, Any]:
        if row["uid"] == tasks[1].uid:
            raise RuntimeError("a bug in the controller")
        return retry(row)

    with pytest.raises(RuntimeError, match="a bug"):
        adapter.requeue_expired(broken)
    assert by_uid(adapter) == before
    bad = {tasks[0].uid: {"status": "exploded"}, tasks[2].uid: {"colour": "red"}}

    def refused(row: dict[str, Any]) -> dict[str, Any]:
        return bad.get(row["uid"], retry(row))

    with pytest.raises(RowRejectedError) as caught:
        adapter.requeue_expired(refused)
    assert set(caught.value.rejected) == set(bad)
    assert "'status'" in caught.value.rejected[tasks[0].uid]
    assert "colour" in caught.value.rejected[tasks[2].uid]
    with pytest.raises(RowRejectedError, match="mapping"):
        adapter.requeue_expired(lambda row: None)  # type: ignore[arg-type,return-value]
    assert by_uid(adapter) == before
    assert sorted(adapter.requeue_expired(retry)) == sorted(t.uid for t in tasks)


def test_each_lost_attempt_is_counted_once_under_contention(store: Store) -> None:
    first = store.new_adapter()
    tasks = [make_task(f"t{i}", max_retries=5) for i in range(120)]
    save(first, *tasks)
    assert len(first.claim([t.uid for t in tasks], "dead", 5)) == len(tasks)
    store.clock.advance(6)
    adapters = [store.new_adapter() for _ in range(4)]
    for each in adapters:
        each.open()
    start = threading.Barrier(len(adapters))
    handed: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def requeue(i: int) -> None:
        try:
            start.wait()
            handed[i] = adapters[i].requeue_expired(retry)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=requeue, args=(i,)) for i in range(len(adapters))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    every = [uid for uids in handed.values() for uid in uids]
    assert sorted(every) == sorted(t.uid for t in tasks)  # each by exactly one caller
    assert {row["retry_count"] for row in first.load()} == {1}


def test_lease_seconds_agree_with_every_other_duration(adapter: DatabaseAdapter) -> None:
    task = make_task()
    save(adapter, task)
    for bad in (0, -1, math.inf, math.nan, 2e9, True, "30"):
        with pytest.raises(ConfigurationError, match="lease_seconds"):
            adapter.claim([task.uid], "me", bad)
        with pytest.raises(ConfigurationError, match="lease_seconds"):
            adapter.claim_next("me", 1, bad)
        with pytest.raises(ConfigurationError, match="lease_seconds"):
            adapter.heartbeat("me", [task.uid], bad)
    assert adapter.claim([task.uid], "me", dt.timedelta(minutes=1)) == [task.uid]
    [row] = adapter.load([task.uid])
    assert row["lease_expires_at"] - row["updated_at"] == dt.timedelta(minutes=1)
