"""The database thread of a queue (nbqueue.controller.persistence): how it batches writes
and claims. A MemoryAdapter that records every transaction, and an InProcessBackend: no
processes, every test runs in milliseconds."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import pytest
from helpers import poll

from nbqueue import Queue, Status, Task
from nbqueue.backends import InProcessBackend
from nbqueue.controller import claims, persistence
from nbqueue.store import ClaimRequest, MemoryAdapter, WriteResult


def work(task: Task[Any]) -> int:
    return 1


class Recording(MemoryAdapter):
    """A MemoryAdapter that keeps what each write transaction was asked to do."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[int, ClaimRequest | None]] = []
        #: While cleared, writes wait (so that what comes meanwhile piles up).
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = threading.Event()

    def write(
        self,
        rows: Iterable[Mapping[str, Any]] = (),
        *,
        delete: Iterable[str] = (),
        claim: ClaimRequest | None = None,
    ) -> WriteResult:
        rows = list(rows)
        if not self.gate.is_set():
            self.waiting.set()
            self.gate.wait(30)
        self.writes.append((len(rows), claim))
        return super().write(rows, delete=delete, claim=claim)


@pytest.fixture
def adapter() -> Recording:
    return Recording()


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(persistence, "MAX_BATCH_ROWS", 5)
    return 5


@pytest.fixture
def q(adapter: Recording) -> Iterator[Queue]:
    queue = Queue(db=adapter, backend=InProcessBackend(slots=1, run=False)).init()
    queue.register(work)
    yield queue
    queue.close()


def stored(adapter: MemoryAdapter) -> set[str]:
    return {row["uid"] for row in adapter.load(columns=())}


def burst(
    q: Queue, adapter: Recording, n: int, hold: Callable[[], object] = lambda: None
) -> list[Task[Any]]:
    """Add ``n`` tasks while the database thread is busy writing the first one (and call
    ``hold()`` then too)."""
    adapter.gate.clear()
    tasks = [Task(f"t{i}", "work") for i in range(n)]
    q.add(tasks[0])
    assert adapter.waiting.wait(30)
    for task in tasks[1:]:
        q.add(task)
    hold()
    adapter.gate.set()
    return tasks


def test_a_burst_of_new_tasks_is_written_in_batches_of_bounded_size(
    q: Queue, adapter: Recording, small_batches: int
) -> None:
    tasks = burst(q, adapter, 23)
    poll(lambda: stored(adapter) == {t.uid for t in tasks})
    assert max(n for n, _ in adapter.writes) == small_batches


def test_flush_commits_every_row_whatever_the_batch_size(
    q: Queue, adapter: Recording, small_batches: int
) -> None:
    tasks = burst(q, adapter, 23)
    q.flush()
    assert stored(adapter) == {t.uid for t in tasks}


def test_closing_writes_every_row_left(adapter: Recording, small_batches: int) -> None:
    queue = Queue(db=adapter, backend=InProcessBackend(slots=1, run=False)).init()
    queue.register(work)
    tasks = burst(queue, adapter, 23)
    queue.close()
    assert stored(adapter) == {t.uid for t in tasks}


def test_a_claim_that_runs_ahead_of_the_new_rows_still_to_write_asks_again(
    adapter: Recording, small_batches: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim answered with fewer tasks than asked, while rows were left for the next
    batch, does not wait for the next poll (here an hour away): those rows may be the
    new tasks it did not find yet."""
    monkeypatch.setenv("NBQUEUE_POLL_SECONDS", "3600")
    queue = Queue(db=adapter, backend=InProcessBackend(slots=2)).init()
    queue.register(work)
    try:
        tasks = burst(queue, adapter, 21, hold=lambda: queue.run_tasks())
        queue.wait(20)
        assert all(t.status is Status.COMPLETED for t in tasks)
    finally:
        queue.close()


class Paced(InProcessBackend):
    """An in-process backend whose workers are said to go at ``pace`` tasks a second."""

    def __init__(self, pace: float) -> None:
        super().__init__(slots=2, run=False)
        self._pace = pace

    def pace(self) -> float | None:
        return self._pace


@pytest.mark.parametrize(
    ("pace", "ahead"),
    [(1e6, claims.RESERVE_MAX), (100.0, 100), (0.5, claims.RESERVE_FACTOR * 2)],
)
def test_claims_hold_about_a_second_of_work_ahead(
    adapter: Recording, pace: float, ahead: int
) -> None:
    """Short tasks are claimed by the thousand (at most RESERVE_MAX), long ones a few per
    slot: never more than a second's work held from other hosts."""
    queue = Queue(db=adapter, backend=Paced(pace)).init()
    queue.register(work)
    try:
        for i in range(5):
            queue.add(Task(f"t{i}", "work"))
        queue.run_automatically(3600)
        poll(lambda: any(claim is not None and claim.limit for _, claim in adapter.writes))
        limits = [claim.limit for _, claim in adapter.writes if claim is not None and claim.limit]
        assert limits[0] == 2 + ahead  # the free slots, and what is held ahead
    finally:
        queue.close()
