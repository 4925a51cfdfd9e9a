"""Between Dask's threads and the controller's loop: blocking cluster calls go to helper
threads, and what Dask's threads learn is posted back onto the loop, run with the
controller's lock held."""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbqueue.backends.base import Runtime

log = logging.getLogger("nbqueue")

#: Threads for slow cluster calls: a restart that takes its time (up to a minute) leaves
#: others for asking new workers who they are, which dispatch to them waits for.
SLOW_THREADS = 4


class Bridge:
    """One per backend. ``io`` runs quick cluster calls on one thread, in order; ``slow``
    runs calls that may take long (restarting a worker, asking workers who they are) on a
    few others, in no particular order, so they never hold up the quick ones."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.stopped = False
        self._io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="nbqueue-dask")
        self._slow = concurrent.futures.ThreadPoolExecutor(
            SLOW_THREADS, thread_name_prefix="nbqueue-dask-slow"
        )

    def io(self, fn: Callable[[], None]) -> concurrent.futures.Future[None] | None:
        """Run a blocking cluster call on the helper thread, after those asked for before;
        None once shut down."""
        return self._submit(self._io, fn)

    def slow(self, fn: Callable[[], None]) -> concurrent.futures.Future[None] | None:
        """Run a call that may block for long on one of the slow threads; None once shut
        down."""
        return self._submit(self._slow, fn)

    def _submit(
        self, pool: concurrent.futures.ThreadPoolExecutor, fn: Callable[[], None]
    ) -> concurrent.futures.Future[None] | None:
        def run() -> None:
            try:
                fn()
            except Exception:
                if not self.stopped:
                    log.warning("nbqueue: a Dask call failed", exc_info=True)

        try:
            return pool.submit(run)
        except RuntimeError:  # shut down
            return None

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        """From any thread: run ``fn(*args)`` on the controller's loop with its lock held."""
        if self.stopped:
            return
        try:
            self.runtime.call_soon(self.locked, fn, *args)
        except RuntimeError:  # the loop has closed
            pass

    def later(self, delay: float, fn: Callable[..., None], *args: Any) -> Any:
        """Run ``fn(*args)`` on the loop after ``delay`` seconds, with the lock held."""
        return self.runtime.call_later(delay, lambda: self.locked(fn, *args))

    def locked(self, fn: Callable[..., None], *args: Any) -> None:
        """``fn(*args)`` with the controller's lock held, unless the backend has stopped."""
        with self.runtime.lock:
            if not self.stopped:
                fn(*args)

    def shutdown(self) -> None:
        """Stop taking calls; those not started yet are dropped."""
        self.stopped = True
        for pool in (self._io, self._slow):
            pool.shutdown(wait=False, cancel_futures=True)
