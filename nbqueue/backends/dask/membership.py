"""The cluster's workers as the controller side of the Dask backend sees them: which are
there with how many threads, which worker process is at each address (its Dask id and
process id), which are being restarted and how often they were. Kept current by the
scheduler's ``add-worker`` / ``remove-worker`` events and a periodic re-read."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nbqueue.backends.base import WorkerInfo
from nbqueue.backends.dask import wire

if TYPE_CHECKING:
    from nbqueue.backends.dask.bridge import Bridge

log = logging.getLogger("nbqueue")

#: How often the backend re-reads the cluster's workers (events keep it current between).
REFRESH_SECONDS = 5.0
#: Bound on one Client.restart_workers call.
RESTART_TIMEOUT_SECONDS = 60.0
#: How long start() waits for the workers to say who they are (attempts go only to those
#: that did).
IDENTIFY_WAIT_SECONDS = 10.0


class ClusterEvents:
    """One subscription to the scheduler's ``"all"`` topic per client, shared by every
    backend on that client (a client has one handler per topic); a handler that was there
    before is kept and still called."""

    _lock = threading.Lock()
    _by_client: dict[int, ClusterEvents] = {}

    def __init__(self, client: Any) -> None:
        self.client = client
        self.listeners: list[Callable[[Any], None]] = []
        self.previous: Callable[[Any], Any] | None = getattr(client, "_event_handlers", {}).get(
            "all"
        )

    def __call__(self, event: Any) -> Any:
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:
                log.exception("nbqueue: Dask cluster event handler failed")
        if self.previous is not None:
            return self.previous(event)
        return None

    @classmethod
    def add(cls, client: Any, listener: Callable[[Any], None]) -> None:
        with cls._lock:
            fanout = cls._by_client.get(id(client))
            if fanout is None or fanout.client is not client:
                fanout = cls._by_client[id(client)] = cls(client)
                client.subscribe_topic("all", fanout)
            fanout.listeners.append(listener)

    @classmethod
    def remove(cls, client: Any, listener: Callable[[Any], None]) -> None:
        with cls._lock:
            fanout = cls._by_client.get(id(client))
            if fanout is None or fanout.client is not client:
                return
            if listener in fanout.listeners:
                fanout.listeners.remove(listener)
            if fanout.listeners:
                return
            del cls._by_client[id(client)]
            handlers: dict[str, object] = getattr(client, "_event_handlers", {})
            if handlers.get("all") is not fanout:
                return  # someone subscribed after us: theirs stays
            try:
                if fanout.previous is not None:
                    client.subscribe_topic("all", fanout.previous)
                else:
                    client.unsubscribe_topic("all")
            except Exception:  # the client is closing
                pass


class Membership:
    """The worker table of one backend. Its methods run on the controller's loop with the
    lock held; ``on_gone(address, ours)`` is called when a worker has left (``ours``: an
    orderly removal or our own restart, so what ran there counts no retry) and
    ``on_change()`` when the capacity may have changed."""

    def __init__(
        self,
        client: Any,
        bridge: Bridge,
        on_gone: Callable[[str, bool], None],
        on_change: Callable[[], None],
    ) -> None:
        self._client, self._bridge = client, bridge
        self._on_gone, self._on_change = on_gone, on_change
        self.workers: dict[str, tuple[int, str]] = {}  # address -> (nthreads, name)
        #: address -> Dask id of the worker process there; attempts go only to known ones
        self.ids: dict[str, str] = {}
        self.pids: dict[str, int] = {}
        self._asking: set[str] = set()  # addresses whose identity is being fetched
        self.restarting: set[str] = set()
        self._restarted: set[str] = set()  # addresses we restarted: their losses are ours
        self._restarts: dict[str, int] = {}  # by worker name (it survives a restart)
        self._refreshing = False
        self._refresh_again = False
        self._ticker: Any = None

    def start(self) -> None:
        """Subscribe to the cluster's events and read its workers and who they are
        (blocking, once)."""
        ClusterEvents.add(self._client, self._on_cluster_event)
        workers = self._fetch()
        if workers:
            self.workers = workers
            found: dict[str, tuple[int, str]] = {}

            def identify() -> None:
                found.update(self._identify(list(workers)))

            # Bounded: a worker whose event loop is stuck answers later, through _apply.
            pending = self._bridge.slow(identify)
            if pending is not None:
                concurrent.futures.wait([pending], timeout=IDENTIFY_WAIT_SECONDS)
            self._identified(dict(found))
        self._apply(workers)
        self._ticker = self._bridge.runtime.call_later(REFRESH_SECONDS, self._tick)

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        ClusterEvents.remove(self._client, self._on_cluster_event)

    # -- what the backend asks -------------------------------------------------------------
    def usable(self) -> dict[str, int]:
        """Threads by address, of the workers that are up, known by their id and not being
        restarted."""
        return {
            a: n for a, (n, _) in self.workers.items() if a in self.ids and a not in self.restarting
        }

    def capacity(self) -> int:
        return sum(n for n, _ in self.workers.values())

    def ours(self, address: str | None) -> bool:
        """Whether a loss of ``address`` is our own doing (we restarted it)."""
        return address is not None and address in self._restarted

    def info(self, busy: dict[str, int]) -> list[WorkerInfo]:
        return [
            WorkerInfo(address, self.pids.get(address), address not in self.restarting,
                       busy.get(address, 0), nthreads, self._restarts.get(name, 0))
            for address, (nthreads, name) in sorted(self.workers.items())
        ]  # fmt: skip

    def can_restart(self, address: str) -> bool:
        return address in self.workers and address not in self.restarting

    def restart(self, address: str, reason: str) -> None:
        """Restart a worker (``Client.restart_workers``; it needs a nanny), on the slow
        thread; its losses count as ours from now on."""
        self.restarting.add(address)
        self._restarted.add(address)
        name = self.workers.get(address, (0, address))[1]
        self._restarts[name] = self._restarts.get(name, 0) + 1
        log.info("nbqueue: restarting Dask worker %s: %s", address, reason)
        client = self._client

        def restart() -> None:
            try:
                result: Any = client.restart_workers(
                    [address], timeout=RESTART_TIMEOUT_SECONDS, raise_for_error=False
                )
            except Exception as exc:
                result = exc
            self._bridge.post(self._restarted_worker, address, result)

        self._bridge.slow(restart)

    def _restarted_worker(self, address: str, result: Any) -> None:
        self.restarting.discard(address)
        self.forget_identity(address)  # a nanny may restart it at the same address
        if isinstance(result, BaseException) or (
            isinstance(result, dict) and result.get(address) not in ("OK", "removed")
        ):
            log.warning(
                "nbqueue: could not restart Dask worker %s (%s); a task thread that never "
                "yields keeps one of its threads busy. Start workers with a nanny so that "
                "they can be restarted",
                address,
                result,
            )
        self.refresh()

    # -- what the cluster reports ----------------------------------------------------------
    def _on_cluster_event(self, event: Any) -> None:
        """On the client's loop: the scheduler's cluster-wide events."""
        msg = event[1]
        if isinstance(msg, dict) and msg.get("action") in ("add-worker", "remove-worker"):
            self._bridge.post(self._on_membership, msg)

    def _on_membership(self, msg: dict[str, Any]) -> None:
        address = msg.get("worker")
        if msg["action"] == "remove-worker" and isinstance(address, str):
            self.workers.pop(address, None)
            self._gone(address, expected=bool(msg.get("expected")))
            self._on_change()
        self.refresh()

    def _gone(self, address: str, *, expected: bool) -> None:
        self.restarting.discard(address)
        self.ids.pop(address, None)
        self._on_gone(address, expected or address in self._restarted)

    # -- re-reading the table --------------------------------------------------------------
    def _fetch(self) -> dict[str, tuple[int, str]] | None:
        """The cluster's workers: address -> (usable threads, name); a worker that is paused
        or retiring has none to offer. Blocking (one scheduler call)."""
        try:
            try:
                info = self._client.scheduler_info(n_workers=-1)
            except TypeError:  # distributed before n_workers
                info = self._client.scheduler_info()
        except Exception:
            log.warning("nbqueue: could not list the Dask cluster's workers", exc_info=True)
            return None
        return {
            address: (
                int(meta.get("nthreads", 0)) if meta.get("status", "running") == "running" else 0,
                str(meta.get("name", address)),
            )
            for address, meta in dict(info.get("workers", {})).items()
        }

    def _apply(self, workers: dict[str, tuple[int, str]] | None) -> None:
        self._refreshing = False
        if workers is not None:
            # Workers that left without an event reaching us (a missed or overwritten "all"
            # subscription): snapshots are taken in order, so one seen before and missing
            # now has gone.
            vanished = set(self.workers) - set(workers)
            self.workers = workers
            for address in vanished:
                self._gone(address, expected=False)
            for table in (self.ids, self.pids):
                for address in set(table) - set(workers):
                    del table[address]
            self._ask([a for a in workers if a not in self.ids])
            self._on_change()
        if self._refresh_again:
            self._refresh_again = False
            self.refresh()

    def forget_identity(self, address: str) -> None:
        """The process at ``address`` is not the one we knew: find out who is there before
        sending it attempts."""
        if self.ids.pop(address, None) is not None and address in self.workers:
            self._ask([address])

    def _ask(self, addresses: list[str]) -> None:
        """Fetch the identities of these workers (on a slow thread: a worker whose event
        loop is busy answers late)."""
        addresses = [a for a in addresses if a not in self._asking]
        if not addresses:
            return
        self._asking.update(addresses)

        def ask() -> None:
            found = self._identify(addresses)
            self._bridge.post(self._answered, addresses, found)

        self._bridge.slow(ask)

    def _answered(self, asked: list[str], found: dict[str, tuple[int, str]]) -> None:
        self._asking.difference_update(asked)
        if self._identified(found):
            self._on_change()

    def _identify(self, addresses: list[str]) -> dict[str, tuple[int, str]]:
        """address -> (pid, Dask id) of those that answered (blocking)."""
        try:
            answers = self._client.run(wire.worker_identity, workers=addresses, on_error="return")
        except Exception:
            return {}
        return {
            a: (int(v[0]), str(v[1]))
            for a, v in answers.items()
            if isinstance(v, (tuple, list)) and len(v) == 2
        }

    def _identified(self, found: dict[str, tuple[int, str]]) -> bool:
        """Keep the identities of workers still there; whether one was new."""
        new = False
        for address, (pid, worker_id) in found.items():
            if address in self.workers:
                new = new or self.ids.get(address) != worker_id
                self.ids[address], self.pids[address] = worker_id, pid
        return new

    def refresh(self) -> None:
        """Re-read the workers (one call at a time; a change meanwhile asks for another)."""
        if self._refreshing:
            self._refresh_again = True  # the snapshot in flight may predate this change
            return
        self._refreshing = True
        if self._bridge.io(lambda: self._bridge.post(self._apply, self._fetch())) is None:
            self._refreshing = False

    def _tick(self) -> None:
        with self._bridge.runtime.lock:
            if self._bridge.stopped:
                return
            self.refresh()
        self._ticker = self._bridge.runtime.call_later(REFRESH_SECONDS, self._tick)
