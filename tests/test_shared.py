"""queue.put(): a big object sent to each worker once, tasks receiving the object itself."""

from __future__ import annotations

import gc
import os
from typing import Any

import pytest
from helpers import poll

from nbqueue import ConfigurationError, Queue, Shared, Task, shared
from nbqueue.backends import InProcessBackend


def describe(obj: Any, tag: int) -> tuple[int, int, int, int]:
    """What the task got: the object's size, its identity in this worker, and the pid."""
    return len(obj), id(obj), os.getpid(), tag


def test_workers_get_the_object_once_and_tasks_get_the_object() -> None:
    big = bytearray(5_000_000)
    with Queue(max_workers=2) as q:
        handle = q.put(big)
        assert isinstance(handle, Shared) and handle.size > 5_000_000
        seen = list(q.map(describe, [handle] * 8, range(8)))
        in_data = Task("in data", "describe", data=None)
        q.register(lambda task: len(task.data["blob"]), type="describe")
        in_data.data = {"blob": handle}
        q.add(in_data)
        assert in_data.result(60) == {"processed": True, "value": 5_000_000}
    assert [s[0] for s in seen] == [5_000_000] * 8 and [s[3] for s in seen] == list(range(8))
    per_worker = {}
    for _, ident, pid, _ in seen:
        per_worker.setdefault(pid, set()).add(ident)
    assert all(len(idents) == 1 for idents in per_worker.values())  # one copy per worker


def test_a_handle_belongs_to_its_queue() -> None:
    with Queue(backend=InProcessBackend()) as one, Queue(backend=InProcessBackend()) as two:
        handle = one.put([1, 2, 3])
        assert one.submit(len, handle).result(10) == 3
        with pytest.raises(ConfigurationError, match="not put into this queue"):
            two.submit(len, handle)


def test_the_object_is_let_go_with_the_handle_and_the_tasks_using_it() -> None:
    with Queue(backend=InProcessBackend()) as q:
        handle = q.put(bytearray(1000))
        digest = handle.digest
        assert q.submit(len, handle).result(10) == 1000
        assert shared.has(digest)
        q.clear()  # the task held the handle in its data
        del handle
        # the in-process worker thread may hold the finished call's frame a moment longer
        poll(lambda: gc.collect() >= 0 and not shared.has(digest), timeout=10)


def test_with_a_database_the_row_holds_the_object_for_a_restarted_queue(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    first = Queue(db=url, max_workers=1).init()
    try:
        first.register(lambda task: sum(task.data["numbers"]), type="total")
        first.add(Task("later", "total", data={"numbers": first.put(list(range(100)))}))
        first.flush(30)
    finally:
        first.close()  # the kernel restarts before it ran
    with Queue(db=url, max_workers=1) as again:  # no put() here: the row carries it
        again.register(lambda task: sum(task.data["numbers"]), type="total")
        again.wait(60)
        [task] = again.tasks
        assert task.result(1) == {"processed": True, "value": 4950}
