"""The round trip of a lone task and the shortcuts it takes: messages framed on the pipe
as ``multiprocessing`` frames them (one read, one write), a start that comes with its
outcome, waits woken once the loop's callback is done, the Future settled only once made,
the worker's cancellation flag asked without being made."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import socket
import threading
import time
import uuid
from typing import Any

import pytest

from nbqueue import Queue, Task, TaskCancelledError, TaskTimeoutError
from nbqueue.backends import frames, worker
from nbqueue.controller import loop as loop_module
from nbqueue.controller.loop import ControllerLoop


def inc(task: Task[int]) -> int:
    return task.data + 1  # type: ignore[operator]


def sleepy(task: Task[None]) -> None:
    time.sleep(60)


# -- the pipe ----------------------------------------------------------------------------
def test_frames_read_what_send_bytes_wrote_and_the_other_way_round() -> None:
    ours, theirs = multiprocessing.Pipe(duplex=True)
    reader = frames.FrameReader(ours.fileno())
    messages = [b"", b"one", os.urandom(frames.JOIN_SIZE + 1), b"x" * 5]
    for message in messages:  # several messages in one read
        theirs.send_bytes(message)
    received: list[bytes] = []
    while len(received) < len(messages):
        received += reader.read()
    assert received == messages
    big = os.urandom(3 * frames.READ_SIZE + 17)  # split over reads, and written by a thread
    writer = threading.Thread(target=theirs.send_bytes, args=(big,))
    writer.start()
    assert reader.receive() == big
    writer.join()
    got: list[bytes] = []
    reader_thread = threading.Thread(
        target=lambda: got.extend(theirs.recv_bytes() for _ in range(5))
    )
    reader_thread.start()
    for message in [*messages, big]:
        frames.send(ours, message)
    reader_thread.join(30)
    assert got == [*messages, big]
    theirs.close()
    with pytest.raises(EOFError):
        reader.read()
    ours.close()
    with pytest.raises(OSError):
        frames.send(ours, b"closed")


# -- a lone task -------------------------------------------------------------------------
def test_a_lone_task_started_and_finished_in_one_message_is_reported_in_full() -> None:
    """Its start comes with its outcome: it is still reported started (event, worker,
    started_at) before it finished; a task that runs on is still stopped at its timeout
    (its start came alone, and its deadline is watched)."""
    seen: list[tuple[str, str]] = []
    with Queue(max_workers=1) as q:
        q.register(inc)
        q.register(sleepy)
        q.events.subscribe(lambda kind, task: seen.append((kind, task.name)))
        tasks = [Task(f"t{i}", "inc", data=i) for i in range(3)]
        for i, t in enumerate(tasks):
            q.add(t)
            assert t.wait(60)["value"] == i + 1  # type: ignore[index]
        slow = Task("slow", "sleepy", timeout=0.5, max_retries=0)
        q.add(slow)
        with pytest.raises(TaskTimeoutError):
            slow.wait(60)
    for t in tasks:
        kinds = [kind for kind, name in seen if name == t.name]
        assert kinds == ["added", "dispatched", "started", "finished"]
        assert t.worker is not None and t.started_at is not None and t.finished_at is not None
        assert t.started_at <= t.finished_at
    assert "started" in [kind for kind, name in seen if name == "slow"]


def test_a_finished_tasks_future_is_settled_when_it_is_first_used() -> None:
    with Queue(max_workers=1) as q:
        q.register(inc)
        t = Task("t", "inc", data=1)
        q.add(t)
        assert t.wait(60)["value"] == 2  # type: ignore[index]
        called: list[Any] = []
        t.add_done_callback(called.append)  # the Future's state is made only now
        assert called == [t]
        assert concurrent.futures.wait([t], timeout=0).done == {t}


def test_new_uids_are_random_uuid4_hex() -> None:
    uids = {Task("t", "inc").uid for _ in range(1000)}
    assert len(uids) == 1000
    for uid in uids:
        assert len(uid) == 32 and uuid.UUID(uid).version == 4 and uuid.UUID(uid).hex == uid


# -- waking waits ------------------------------------------------------------------------
def test_waits_are_woken_from_a_reader_callback_once_it_returns() -> None:
    """A change made in a reader callback wakes the wait once the callback is done (not
    while it runs); one made in another loop callback or another thread wakes it too."""
    loop = ControllerLoop()
    ours, theirs = socket.socketpair()
    state = {"n": 0}
    during: list[bool] = []

    def wait_for(n: int, out: list[bool]) -> threading.Thread:
        def wait() -> None:
            out.append(loop.wait_until(lambda: state["n"] >= n, 30))

        thread = threading.Thread(target=wait)
        thread.start()
        return thread

    def bump() -> None:
        with loop.lock:
            state["n"] += 1
            loop.notify()

    def on_readable() -> None:
        ours.recv(1)
        bump()
        time.sleep(0.2)  # the wait may not return meanwhile: it is woken after this
        during.append(bool(first))

    try:
        first: list[bool] = []
        waiter = wait_for(1, first)
        loop.run(lambda: loop.add_reader(ours.fileno(), on_readable))
        theirs.send(b"x")
        waiter.join(10)
        assert first == [True] and during == [False]
        second: list[bool] = []
        waiter = wait_for(2, second)
        loop.call_soon(bump)  # a loop callback that is no reader's
        waiter.join(10)
        third: list[bool] = []
        waiter = wait_for(3, third)
        bump()  # another thread
        waiter.join(10)
        assert second == [True] and third == [True]
    finally:
        loop.run(lambda: loop.loop.remove_reader(ours.fileno()))
        loop.close()
        ours.close()
        theirs.close()


def _new_gate(inherited: int, out: Any) -> None:
    out.put(loop_module._Waiter(lambda: True)._gate.read != inherited)


def test_a_forked_child_waits_on_a_pipe_of_its_own() -> None:
    """A thread keeps its wake-up pipe for its next waits; a forked child of it (its
    copy of that thread) must not share the parent's, or it could take its wakeups."""
    inherited = loop_module._Waiter(lambda: True)._gate.read
    ctx = multiprocessing.get_context("fork")
    out = ctx.SimpleQueue()
    child = ctx.Process(target=_new_gate, args=(inherited, out))
    child.start()
    child.join(30)
    assert out.get() is True
    assert loop_module._Waiter(lambda: True)._gate.read == inherited  # kept here


# -- the worker's cancellation flag ------------------------------------------------------
def test_a_worker_answers_whether_a_task_is_cancelled_without_making_its_flag() -> None:
    ours, theirs = multiprocessing.Pipe(duplex=True)
    table = multiprocessing.RawArray("q", 1)
    process = worker.WorkerProcess(theirs, 1, None, table)
    task = Task("t", "inc")
    process.known.add(task.uid)
    assert not process.cancelled(task)
    assert process.cancel_events == {}  # asking made no flag
    process._cancel(task.uid)
    assert process.cancelled(task) and process.cancel_event(task).is_set()
    task._hooks = process
    with pytest.raises(TaskCancelledError):
        task._check_cancelled()
    ours.close()
    theirs.close()
