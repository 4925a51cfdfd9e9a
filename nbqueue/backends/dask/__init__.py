"""Run a queue's tasks on a Dask cluster (``pip install "nbqueue[dask]"``).

The controller keeps what it always keeps: priorities, validation, retries with back-off,
timeouts, the status table. This backend only turns each attempt into one Dask future and
reports back, like the local worker processes do:

* **dispatch** -- ``client.submit(run_on_dask, ...)`` with a key of its own per attempt
  (``nbqueue-<type>-<uid>-...``), at most as many in flight as the cluster has worker threads,
  so the controller's priority order is the order work starts in. The controller picks the
  worker (the one with the most free threads) and the future may run nowhere else
  (``workers=[address], allow_other_workers=False``). A registered executor's
  cloudpickled payload is published once in a ``distributed.Variable``; each worker process
  fetches it once and keeps the unpickled executor by content hash. A task file is imported
  by path on the worker, which works wherever the path exists (a ``LocalCluster``, a shared
  file system).
* **live reports** -- the task function sends ``started``, ``progress`` (coalesced) and
  ``exit`` with ``Worker.log_event`` on a topic of this backend's own; the controller
  receives them through ``Client.subscribe_topic``. The result, or the error, is the
  future's value.
* **cancellation** -- the controller publishes the attempt's key on a second topic of this
  backend's (``Client.log_event``); each worker process subscribes to it once
  (``Client.subscribe_topic`` on its worker client) and raises the ``threading.Event`` that
  ``task.sleep()`` and ``update_progress()`` check. The controller repeats the message
  until the attempt has ended, so one published before a worker had subscribed is not
  lost. An attempt that has not started yet also has its future cancelled.
* **abort** (a timeout, or a cancelled task that ignored the flag) -- the flag is set and the
  future cancelled; a thread cannot be killed, so when it has not ended after
  ``abort_grace`` seconds its worker is restarted (``Client.restart_workers``; needs a
  nanny). Tasks that shared that worker go back to the queue without counting a retry.
* **worker loss** -- the scheduler's ``remove-worker`` event (topic ``"all"``) names the lost
  worker; attempts sent there are reported lost with ``WorkerCrashedError`` and the
  controller retries them by the task's own rules. Dask itself would re-run such a task;
  to keep the decision with the controller, and each attempt to one run, an attempt runs
  only in the worker process it was sent to: elsewhere Dask may not run it, and at the same
  address (a worker its nanny restarted there) it finds another Dask id than the one it
  carries and returns at once without running anything. This costs no call to the
  scheduler. ``KilledWorker`` and connection errors from a future count as worker loss
  too.

Where the code runs: the controller side is :mod:`~nbqueue.backends.dask.backend` (the
backend), :mod:`~.attempts`, :mod:`~.membership` (the cluster's workers), :mod:`~.cancels`,
:mod:`~.outcome` and :mod:`~.bridge` (threads and the loop); the worker side is
:mod:`~.attempt` (the Dask task) and :mod:`~.process` (what a worker process keeps);
:mod:`~.wire` is what both agree on.
"""

from nbqueue.backends.dask.backend import DaskBackend

__all__ = ["DaskBackend"]
