"""The controller's own logic, without worker processes: an InProcessBackend that runs
nothing by itself, so each test says what the workers did (started, completed, failed,
lost) and looks at what the controller did about it. Every test runs in milliseconds."""

from __future__ import annotations

import concurrent.futures
import gc
import logging
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import poll

from nbqueue import (
    ConfigurationError,
    NbqueueError,
    Queue,
    SerializationError,
    Status,
    Task,
    TaskCancelledError,
    TaskExecutor,
    TaskTimeoutError,
    WorkerCrashedError,
    config,
)
from nbqueue.backends import InProcessBackend
from nbqueue.controller.heaps import ReadyHeap, TimedHeap
from nbqueue.controller.loop import ControllerLoop
from nbqueue.errors import QueueShutDownError, RemoteTraceback


def work(task: Task[Any]) -> None:
    """The executor of every task here: it never runs (the backend runs nothing)."""


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short back-offs and grace periods, so retries and cancels take milliseconds."""
    monkeypatch.setattr(config, "RETRY_BACKOFF_BASE", 0.01)
    monkeypatch.setattr(config, "CANCEL_GRACE_SECONDS", 0.05)


@pytest.fixture
def backend() -> InProcessBackend:
    return InProcessBackend(slots=1, run=False)


@pytest.fixture
def q(backend: InProcessBackend) -> Iterator[Queue]:
    queue = Queue(backend=backend).init()
    queue.register(work)
    yield queue
    queue.close()


def sent(backend: InProcessBackend, task: Task[Any]) -> bool:
    poll(lambda: task.uid in backend.sent, timeout=5)
    return True


def run_to_completion(backend: InProcessBackend, task: Task[Any], value: Any = None) -> None:
    sent(backend, task)
    backend.started(task.uid)
    backend.completed(task.uid, value)
    task.result(5)


# -- scheduling ------------------------------------------------------------------------------
def test_tasks_wait_until_processing_is_asked_for(q: Queue, backend: InProcessBackend) -> None:
    task = Task("t", "work")
    q.add(task)
    time.sleep(0.05)  # nothing to wait for: the point is that nothing happens
    assert backend.sent == {} and task.status is Status.PENDING
    q.run_tasks()
    assert sent(backend, task) and task.status is Status.PENDING  # sent, not started
    backend.started(task.uid)
    poll(lambda: task.status is Status.RUNNING)


def test_priority_then_creation_order(q: Queue, backend: InProcessBackend) -> None:
    tasks = [Task(n, "work", priority=p) for n, p in [("a", 0), ("b", 5), ("c", 2), ("d", 5)]]
    for t in tasks:
        q.add(t)
    q.run_automatically(3600)
    order = []
    for _ in tasks:
        poll(lambda: len(backend.sent) == 1)
        [uid] = backend.sent
        order.append(q.get_task(uid).name)  # type: ignore[union-attr]
        backend.completed(uid)
    assert order == ["b", "d", "c", "a"]


def test_submit_starts_at_once_and_returns_the_value(q: Queue, backend: InProcessBackend) -> None:
    def double(x: int) -> int:
        return 2 * x

    task = q.submit(double, 21, task_options={"priority": 3, "name": "dbl"})
    assert sent(backend, task) and (task.name, task.priority) == ("dbl", 3)
    assert task.data == {"args": [21], "kwargs": {}}
    backend.completed(task.uid, 42)
    assert task.result(5) == 42 and task.done()
    with pytest.raises(ConfigurationError, match="unknown option"):
        q.submit(double, 1, task_options={"colour": "red"})


# -- retries, timeouts, cancellation ---------------------------------------------------------
def test_retry_after_back_off_then_fail_with_the_worker_side_traceback(
    q: Queue, backend: InProcessBackend
) -> None:
    task = Task("t", "work", max_retries=1)
    q.add(task)
    q.run_tasks([task])
    for attempt in range(2):
        poll(lambda: task.uid in backend.sent)
        backend.started(task.uid)
        backend.failed(task.uid, ValueError(f"bad {attempt}"))
        if attempt == 0:
            poll(lambda: task.retry_count == 1)
    with pytest.raises(ValueError, match="bad 1"):
        task.result(5)
    assert task.status is Status.FAILED and [e.message for e in task.errors] == ["bad 0", "bad 1"]
    assert isinstance(task.exception(), ValueError)


def test_a_broken_retry_schema_fails_its_task_only(q: Queue, backend: InProcessBackend) -> None:
    class Broken(TaskExecutor[None, Any]):
        def retry_schema(self) -> Any:
            return ["(unclosed"]

    q.register(Broken, type="broken")
    bad, innocent = Task("bad", "broken"), Task("innocent", "work", max_retries=1)
    backend.slots = 2
    for t in (bad, innocent):
        q.add(t)
    q.run_automatically(3600)
    poll(lambda: len(backend.sent) == 2)
    backend.failed(innocent.uid, OSError("flaky"))  # goes into back-off
    backend.failed(bad.uid, OSError("flaky"))
    with pytest.raises(ConfigurationError, match="not a valid regex"):
        bad.result(5)
    poll(lambda: innocent.uid in backend.sent)  # the timer still fires for the other one
    backend.completed(innocent.uid, "ok")
    assert innocent.result(5) == "ok"


def test_a_task_past_its_timeout_is_stopped_and_retried(
    q: Queue, backend: InProcessBackend
) -> None:
    task = Task("slow", "work", timeout=0.05, max_retries=1)
    q.add(task)
    q.run_tasks([task])
    sent(backend, task)
    backend.started(task.uid)
    poll(lambda: task.uid in backend.aborted)
    poll(lambda: task.uid in backend.sent)  # the retry
    assert task.retry_count == 1 and task.errors[0].type == "TaskTimeoutError"
    backend.started(task.uid)
    with pytest.raises(TaskTimeoutError):
        task.result(5)


def test_cancel_pending_and_running(q: Queue, backend: InProcessBackend) -> None:
    pending, running, stuck = Task("p", "work"), Task("r", "work"), Task("s", "work")
    backend.slots = 2
    for t in (running, stuck, pending):
        q.add(t)
    q.run_tasks([running, stuck])
    poll(lambda: len(backend.sent) == 2)
    assert pending.cancel() and pending.cancelled()
    with pytest.raises(concurrent.futures.CancelledError):
        pending.result(1)
    assert q.cancel(running.uid) and running.uid in backend.cancelled
    backend.failed(running.uid, TaskCancelledError("stopped at task.sleep"))
    assert stuck.cancel()
    poll(lambda: stuck.uid in backend.aborted)  # it never reached a cancellation point
    for t in (running, stuck):
        with pytest.raises(TaskCancelledError):
            t.result(5)
    assert not pending.cancel() and not q.cancel(pending.uid)


def test_a_lost_attempt_counts_only_when_the_worker_crashed(
    q: Queue, backend: InProcessBackend
) -> None:
    task = Task("t", "work", max_retries=1)
    q.add(task)
    q.run_tasks([task])
    sent(backend, task)
    backend.lost(task.uid)  # waited in a worker that was stopped: no penalty
    poll(lambda: task.uid in backend.sent)
    assert task.retry_count == 0 and task.status is Status.PENDING
    backend.started(task.uid)
    backend.lost(task.uid, WorkerCrashedError("worker died"))
    poll(lambda: task.uid in backend.sent)
    assert task.retry_count == 1
    backend.lost(task.uid, WorkerCrashedError("worker died again"))
    with pytest.raises(WorkerCrashedError):
        task.result(5)


# -- keys ------------------------------------------------------------------------------------
def test_a_key_reuses_the_task_unless_it_failed(q: Queue, backend: InProcessBackend) -> None:
    def fit(alpha: float) -> float:
        return alpha

    first = q.submit(fit, 0.1, key="fit-0.1")
    assert q.submit(fit, 0.1, key="fit-0.1") is first  # pending: the same task
    run_to_completion(backend, first, 0.5)
    assert q.submit(fit, 0.1, key="fit-0.1") is first  # completed: its result
    again = Task("fit again", first.type, data={"args": [0.1], "kwargs": {}}, key="fit-0.1")
    q.add(again)  # follows the task that has the key
    assert again.uid == first.uid and again.result(1) == 0.5 and len(q.tasks) == 1
    failing = q.submit(fit, 0.2, key="fit-0.2", task_options={"max_retries": 0})
    sent(backend, failing)
    backend.failed(failing.uid, RuntimeError("diverged"))
    with pytest.raises(RuntimeError):
        failing.result(5)
    retried = q.submit(fit, 0.2, key="fit-0.2")  # a failed task does not hold its key
    assert retried is not failing


def test_a_follower_added_while_its_task_runs_sees_it_finish(
    q: Queue, backend: InProcessBackend
) -> None:
    task = Task("t", "work", key="k")
    q.add(task)
    q.run_tasks([task])
    sent(backend, task)
    follower = Task("t", "work", key="k")
    q.add(follower)
    backend.started(task.uid)
    poll(lambda: follower.status is Status.RUNNING)
    backend.completed(task.uid, {"processed": True})
    assert follower.result(5) == {"processed": True}
    assert concurrent.futures.wait([follower], timeout=5).done == {follower}


# -- the Future ------------------------------------------------------------------------------
def test_futures_wait_as_completed_callbacks_and_await(q: Queue, backend: InProcessBackend) -> None:
    backend.slots = 3
    tasks = [Task(f"t{i}", "work") for i in range(3)]
    called: list[tuple[str, bool]] = []
    for t in tasks:
        q.add(t)
        t.add_done_callback(lambda f: called.append((f.name, threading.current_thread().name)))
    q.run_tasks()
    poll(lambda: len(backend.sent) == 3)
    for t in reversed(tasks):
        backend.completed(t.uid, t.name)
    finished = [f.result() for f in concurrent.futures.as_completed(tasks, timeout=5)]
    assert sorted(finished) == ["t0", "t1", "t2"]
    assert concurrent.futures.wait(tasks, timeout=5).not_done == set()
    poll(lambda: len(called) == 3)
    assert all(name == "nbqueue-controller" for _, name in called)  # on the controller

    async def awaited() -> Any:
        return await tasks[0]

    import asyncio

    assert asyncio.run(awaited()) == "t0"


def test_waiting_on_the_controller_thread_is_refused(q: Queue, backend: InProcessBackend) -> None:
    first, second = Task("first", "work"), Task("second", "work")
    errors: list[BaseException] = []

    def wait_inside(_: Any) -> None:
        try:
            second.result(1)
        except BaseException as exc:
            errors.append(exc)

    q.add(first).add(second)
    q.run_tasks([first])
    first.add_done_callback(wait_inside)
    run_to_completion(backend, first)
    poll(lambda: bool(errors))
    assert isinstance(errors[0], NbqueueError) and "controller thread" in str(errors[0])


def test_a_wait_is_woken_only_once_its_condition_holds() -> None:
    """A wait for the last of 100 changes checks its condition twice on its own thread
    (when it starts and when it is woken), not once per change; closing the loop ends
    a wait with QueueShutDownError."""
    loop = ControllerLoop()
    done = 0
    checks: list[int] = []
    outcome: list[object] = []

    def all_done() -> bool:
        if threading.current_thread() is waiter:
            checks.append(done)
        return done == 100

    def wait(predicate: Any) -> None:
        try:
            outcome.append(loop.wait_until(predicate, 30))
        except QueueShutDownError as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait, args=(all_done,))
    waiter.start()
    poll(lambda: checks == [0])
    for _ in range(100):
        with loop.lock:
            done += 1
            loop.notify()
    waiter.join(10)
    assert outcome == [True] and checks == [0, 100]

    asked = threading.Event()
    waiter = threading.Thread(target=wait, args=(lambda: asked.set() or False,))
    waiter.start()
    poll(asked.is_set)  # (it checks and starts waiting under the lock close() takes)
    loop.close()
    waiter.join(10)
    assert isinstance(outcome[-1], QueueShutDownError)


def test_wait_returns_a_summary_and_logs_failures(
    q: Queue, backend: InProcessBackend, caplog: pytest.LogCaptureFixture
) -> None:
    ok, bad = Task("ok", "work"), Task("bad", "work", max_retries=0)
    q.add(ok).add(bad)
    waiter = threading.Thread(target=lambda: summary.append(q.wait(5)))
    summary: list[Any] = []
    waiter.start()
    for t, outcome in ((ok, None), (bad, KeyError("missing"))):
        sent(backend, t)
        if outcome is None:
            backend.completed(t.uid)
        else:
            backend.failed(t.uid, outcome)
    waiter.join(5)
    [result] = summary
    assert (result.completed, result.failed, bool(result)) == (1, 1, False)
    assert "bad (KeyError: 'missing')" in result.line()
    with caplog.at_level(logging.WARNING, logger="nbqueue"):
        q.wait(1)
    assert "1 completed, 1 failed: bad" in caplog.text


# -- removing, memory, shutting down ---------------------------------------------------------
def test_remove_and_clear(q: Queue, backend: InProcessBackend) -> None:
    running, pending = Task("r", "work"), Task("p", "work")
    q.add(running).add(pending)
    q.run_tasks([running])
    sent(backend, running)
    assert q.remove(running.uid) and running.uid in backend.cancelled
    assert q.get_task(running.uid) is None and running.queue is None
    q.clear()
    assert q.tasks == [] and q.counts()["pending"] == 0
    assert not q.remove(pending.uid)


def test_finished_and_removed_tasks_are_let_go(q: Queue, backend: InProcessBackend) -> None:
    task = Task("t", "work", data=bytearray(1000))
    q.add(task)
    assert task._payload is not None
    q.run_tasks([task])
    run_to_completion(backend, task)
    assert task._payload is None  # its inputs are not needed any more
    later = Task("later", "work", delay=3600)
    q.add(later)
    ref = weakref.ref(later)
    q.remove(later.uid)
    del later
    gc.collect()
    assert ref() is None  # not kept by the heap of tasks waiting for their time


def test_heaps_forget_discarded_tasks() -> None:
    ready, timed = ReadyHeap(), TimedHeap()
    a, b = Task("a", "t", priority=1), Task("b", "t")
    ready.push(b)
    ready.push(a)
    timed.push(5.0, a)
    ready.discard(a)
    timed.discard(a)
    assert ready.pop() is b and ready.pop() is None and timed.next_time() is None


def test_unpicklable_inputs_are_refused_at_add(q: Queue, backend: InProcessBackend) -> None:
    good = Task("good", "work")
    q.add(good)
    with pytest.raises(SerializationError):
        q.add(Task("bad", "work", user_id=threading.Lock()))
    q.run_tasks()
    run_to_completion(backend, good)
    assert [t.name for t in q.tasks] == ["good"]


def test_shutdown_without_wait_finishes_in_the_background(backend: InProcessBackend) -> None:
    q = Queue(backend=backend).init()
    q.register(work)
    task = Task("t", "work")
    q.add(task)
    q.shutdown(wait=False)
    with pytest.raises(QueueShutDownError):
        q.add(Task("late", "work"))
    run_to_completion(backend, task)
    poll(lambda: q.state == "shut down")


def test_the_real_function_runs_in_threads_of_this_process() -> None:
    def square(x: int) -> int:
        return x * x

    def boom() -> None:
        raise LookupError("nothing here")

    with Queue(backend=InProcessBackend(slots=2)) as q:
        assert list(q.map(square, range(6))) == [0, 1, 4, 9, 16, 25]
        failed = q.submit(boom, task_options={"max_retries": 0})
        with pytest.raises(LookupError) as caught:
            failed.result(5)
    assert isinstance(caught.value.__cause__, RemoteTraceback)
    assert "raise LookupError" in str(caught.value.__cause__)
