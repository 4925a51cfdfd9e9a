"""What a Dask worker process keeps for nbqueue from one attempt to the next: the outbox
its tasks report through, the capture of what they write, the cancellation flags the
controller raises, the executors it has loaded and the database engines its hooks use. One
of each per process, made on first use (attempts run on the worker's task threads, hence
the locks)."""

from __future__ import annotations

import collections
import threading
from typing import TYPE_CHECKING, Any

from nbqueue.backends import capture
from nbqueue.backends.dask import wire
from nbqueue.backends.outbox import DaskOutbox
from nbqueue.registry import ExecutorCache

if TYPE_CHECKING:
    from nbqueue.registry import ExecutorRef

#: Cancellations a worker keeps for attempts that have not started there (yet).
EARLY_CANCELS_KEPT = 4096


class SharedExecutorCache(ExecutorCache):
    """ExecutorCache for a Dask worker, whose task threads load executors concurrently."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def add_payload(self, digest: str, payload: bytes) -> None:
        with self._lock:
            super().add_payload(digest, payload)

    def get(self, task_type: str, ref: ExecutorRef) -> Any:
        with self._lock:
            return super().get(task_type, ref)


class CancelFlags:
    """The cancellation flags of one backend's attempts in one worker process, raised by the
    keys the controller publishes on the backend's cancel topic (the handler runs on the
    worker client's event loop)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flags: dict[str, threading.Event] = {}
        self._early: collections.OrderedDict[str, None] = collections.OrderedDict()

    def __call__(self, event: Any) -> None:
        with self._lock:
            for key in event[1]:
                flag = self._flags.get(key)
                if flag is not None:
                    flag.set()
                else:  # not started here (yet): remember, in case it does
                    self._early[key] = None
                    if len(self._early) > EARLY_CANCELS_KEPT:
                        self._early.popitem(last=False)

    def flag(self, key: str) -> threading.Event:
        with self._lock:
            flag = self._flags[key] = threading.Event()
            if self._early.pop(key, 0) is None:
                flag.set()
            return flag

    def release(self, key: str) -> None:
        with self._lock:
            self._flags.pop(key, None)


_lock = threading.Lock()
_outbox: DaskOutbox | None = None
_capture: capture.Capture | None = None
_executors: SharedExecutorCache | None = None
_engines: dict[str, Any] = {}
_cancel_flags: dict[tuple[int, str], CancelFlags] = {}


def outbox(worker: Any) -> DaskOutbox:
    """This process's outbox (a new one if the Dask worker in it was replaced)."""
    global _outbox
    with _lock:
        if _outbox is None or _outbox.worker is not worker:
            _outbox = DaskOutbox(worker)
            _outbox.start("nbqueue-dask-outbox")
        return _outbox


def output_capture() -> capture.Capture:
    """This process's capture of what attempts write, installed on first use. Only
    ``sys.stdout``, ``sys.stderr`` and log records are captured, by the thread (an
    attempt's Dask task thread) or coroutine that writes: file descriptors 1 and 2 stay as
    they are, since the Dask worker runs other work in threads besides ours and writes its
    own logs there. What no attempt writes goes where it went before."""
    global _capture
    with _lock:
        if _capture is None:
            _capture = capture.Capture(strays=False)
            capture.install(_capture, keep_other_output=True)
        return _capture


def executors() -> SharedExecutorCache:
    """This process's executors, by task file path or content hash."""
    global _executors
    with _lock:
        if _executors is None:
            _executors = SharedExecutorCache()
        return _executors


def engine(db_url: str | None) -> Any:
    """The SQLAlchemy engine hooks get as ``db`` (one per URL and process), or None."""
    if db_url is None:
        return None
    with _lock:
        if db_url not in _engines:
            import sqlalchemy

            _engines[db_url] = sqlalchemy.create_engine(db_url)
        return _engines[db_url]


def cancel_flags(client: Any, topic: str) -> CancelFlags:
    """This process's flags for a backend, subscribed to its cancel topic on first use."""
    with _lock:
        flags = _cancel_flags.get((id(client), topic))
        if flags is None:
            flags = _cancel_flags[(id(client), topic)] = CancelFlags()
            client.subscribe_topic(wire.cancel_topic(topic), flags)
        return flags
