"""The worker outbox both kinds of worker share: order kept, progress coalesced per task,
one send per channel and batch."""

from __future__ import annotations

import multiprocessing
import pickle
import threading
from typing import Any

from helpers import poll

from nbqueue import protocol
from nbqueue.backends.outbox import DaskOutbox, PipeOutbox


def test_pipe_outbox_keeps_order_and_updates_waiting_progress_in_place() -> None:
    receiver, sender = multiprocessing.Pipe(duplex=False)
    outbox = PipeOutbox(sender)
    outbox.put((protocol.STARTED, "a", 1.0))
    for i in range(1, 101):  # the sending thread has not started: everything waits
        outbox.progress("a", i)
        outbox.progress("b", i / 2)
    outbox.put((protocol.DONE, "a", b"result", []))
    outbox.start("test-outbox")
    assert receiver.poll(30), "the outbox sent nothing"
    assert pickle.loads(receiver.recv_bytes()) == [
        (protocol.STARTED, "a", 1.0),
        (protocol.PROGRESS, "a", 100),
        (protocol.PROGRESS, "b", 50.0),
        (protocol.DONE, "a", b"result", []),
    ]
    # While it runs: order kept across batches, one report per task in a batch, and the
    # last value arrives.
    for i in range(1, 2001):
        outbox.progress("b", i)
    outbox.put((protocol.DONE, "b", b"result", []))
    received: list[tuple[Any, ...]] = []
    while not received or received[-1][0] != protocol.DONE:
        assert receiver.poll(30), "the outbox sent nothing"
        batch = pickle.loads(receiver.recv_bytes())
        assert sum(m[0] == protocol.PROGRESS for m in batch) <= 1, batch
        received.extend(batch)
    receiver.close()
    values = [m[2] for m in received[:-1]]
    assert values == sorted(values) and values[-1] == 2000


class _Recorder:
    """Stands in for a Dask worker: records what ``log_event`` was given."""

    def __init__(self) -> None:
        self.events: list[tuple[str, list[Any]]] = []
        self.lock = threading.Lock()

    def log_event(self, topic: str, messages: list[Any]) -> None:
        with self.lock:
            self.events.append((topic, list(messages)))


def test_dask_outbox_sends_each_topic_its_own_messages_in_order() -> None:
    worker = _Recorder()
    outbox = DaskOutbox(worker)
    outbox.start("test-dask-outbox")
    for topic in ("t1", "t2"):
        outbox.put(["started", f"{topic}-k"], topic)
        outbox.progress(f"{topic}-k", 10, topic)
        outbox.progress(f"{topic}-k", 20, topic)
        outbox.put(["exit", f"{topic}-k"], topic)

    def by_topic() -> dict[str, list[Any]]:
        with worker.lock:
            found: dict[str, list[Any]] = {}
            for topic, messages in worker.events:
                found.setdefault(topic, []).extend(messages)
            return found

    poll(
        lambda: all(m and m[-1][0] == "exit" for m in by_topic().values()) and len(by_topic()) == 2
    )
    for topic, messages in by_topic().items():
        kinds = [m[0] for m in messages]
        assert kinds[0] == "started" and kinds[-1] == "exit", messages
        progress = [m[2] for m in messages if m[0] == protocol.PROGRESS]
        assert progress[-1] == 20 and all(m[1] == f"{topic}-k" for m in messages)


def test_output_waiting_is_extended_in_place_and_deliver_sends_after_what_waits() -> None:
    receiver, sender = multiprocessing.Pipe(duplex=False)
    outbox = PipeOutbox(sender)  # no sending thread: deliver() and flush() send
    outbox.later((protocol.STARTED, "a", 1.0))
    outbox.output("a", "one\n")
    outbox.progress("a", 10)
    outbox.output("b", "other\n")
    outbox.output("a", "two\n")
    outbox.deliver((protocol.DONE, "a", b"result", []))
    assert pickle.loads(receiver.recv_bytes()) == [
        (protocol.STARTED, "a", 1.0),
        (protocol.OUTPUT, "a", "one\ntwo\n"),
        (protocol.PROGRESS, "a", 10),
        (protocol.OUTPUT, "b", "other\n"),
        (protocol.DONE, "a", b"result", []),
    ]
    outbox.flush()  # nothing waits: nothing is sent
    outbox.output("b", "more\n")
    outbox.flush()
    assert pickle.loads(receiver.recv_bytes()) == [(protocol.OUTPUT, "b", "more\n")]
    assert not receiver.poll(0)
    receiver.close()


def test_deliver_from_many_threads_sends_each_message_once_in_queue_order() -> None:
    receiver, sender = multiprocessing.Pipe(duplex=False)
    outbox = PipeOutbox(sender)
    outbox.start("test-outbox")  # competes with the delivering threads

    def deliver(n: int) -> None:
        for i in range(200):
            outbox.deliver((protocol.DONE, f"{n}-{i}", b"", []))

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    received: list[str] = []
    while len(received) < 800:
        assert receiver.poll(30), "the outbox sent nothing"
        received.extend(m[1] for m in pickle.loads(receiver.recv_bytes()))
    for t in threads:
        t.join()
    assert not receiver.poll(0)
    receiver.close()
    assert sorted(received) == sorted(f"{n}-{i}" for n in range(4) for i in range(200))
    for n in range(4):
        assert [u for u in received if u.startswith(f"{n}-")] == [f"{n}-{i}" for i in range(200)]


def test_output_waiting_keeps_its_last_characters_past_the_limit() -> None:
    from nbqueue import config

    receiver, sender = multiprocessing.Pipe(duplex=False)
    outbox = PipeOutbox(sender)
    for i in range(20000):  # 12 characters each: 240,000 in all
        outbox.output("a", f"line {i:06d}\n")
    flushing = threading.Thread(target=outbox.flush)  # (the message fills the pipe)
    flushing.start()
    [message] = pickle.loads(receiver.recv_bytes())
    flushing.join()
    receiver.close()
    text = message[2]
    assert len(text) == config.OUTPUT_LIMIT + 1 and text.endswith("line 019999\n")
