"""The Dask backend against a real LocalCluster with process workers (one cluster for the
module): priorities, retries, timeouts, cancellation, live progress, worker loss, and
executors from a task directory and from the notebook."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import _children
from helpers import poll, write_task

from nbqueue import (
    ConfigurationError,
    Queue,
    Status,
    Task,
    TaskCancelledError,
    TaskTimeoutError,
    TaskValidationError,
    WorkerCrashedError,
)
from nbqueue.backends import DaskBackend

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

N_WORKERS = 2
THREADS_PER_WORKER = 2
SLOTS = N_WORKERS * THREADS_PER_WORKER

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    # A LocalCluster closes the nanny of a worker that is not back lost-worker-timeout
    # (15 s) after a removal; a test that kills the worker just when a removal of an earlier
    # test (a restart) falls due would leave the cluster a worker short for good.
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "1h"}):
        cluster = distributed.LocalCluster(
            n_workers=N_WORKERS,
            threads_per_worker=THREADS_PER_WORKER,
            processes=True,
            dashboard_address=None,
        )
        client = distributed.Client(cluster)
        try:
            yield client
        finally:
            client.close()
            cluster.close()
    poll(lambda: not _cluster_processes(), timeout=30)


def _cluster_processes() -> list[psutil.Process]:
    """Child processes that are Dask workers (spawned by the cluster's nannies)."""
    found = []
    for child in _children():
        try:
            if "multiprocessing" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def _cluster_ready(client: Any) -> bool:
    """Every worker is up (after a restart or a kill) and none is running anything."""
    nthreads = client.nthreads()
    processing = client.processing()
    return len(nthreads) == N_WORKERS and not any(processing.values())


@pytest.fixture(autouse=True)
def no_leftover_children(client: Any) -> Iterator[None]:
    """Overrides conftest's check: the module's cluster may replace a worker process (a
    timeout restarts one, a test kills one); its current workers are allowed, nothing else
    is. Each test starts on a whole, idle cluster."""
    poll(lambda: _cluster_ready(client), timeout=60)
    before = {p.pid for p in _children()}
    yield
    poll(lambda: _cluster_ready(client), timeout=60)
    workers = set(client.run(os.getpid).values())
    left: list[psutil.Process] = []

    def nothing_left() -> bool:
        left[:] = [p for p in _children() if p.pid not in before and p.pid not in workers]
        return not left

    try:
        poll(nothing_left, timeout=10)
    except AssertionError:
        pytest.fail(f"child processes left behind: {[p.cmdline() for p in left]}")


def queue_on(client: Any, task_directory: Path | None = None, **backend: Any) -> Queue:
    return Queue(task_directory, backend=DaskBackend(client, **backend))


# -- executors (module level: pickled by reference, imported by the workers) ---------------
def fail_once(task: Task[str]) -> str:
    if task.retry_count == 0:
        raise ValueError("first attempt fails")
    return f"{task.data} after {task.retry_count} retry"


def gated(task: Task[str]) -> str:
    """Reports 50% and holds until the gate file exists (sleeping: a cancellation point)."""
    assert task.data is not None
    task.update_progress(50)
    while not os.path.exists(task.data):
        task.sleep(0.02)
    return "opened"


# -- tests -------------------------------------------------------------------------------
def test_priority_order_with_at_most_one_task_per_worker_thread(
    client: Any, marker_dir: Path
) -> None:
    gate = marker_dir / "gate"
    priorities = [1, 7, 3, 0, 6, 2, 5, 4]
    with queue_on(client) as q:
        q.register(gated)
        assert q._backend.free_slots() == SLOTS
        assert sum(w.capacity for w in q.workers()) == SLOTS
        log: list[tuple[str, int]] = []
        q.events.subscribe(
            lambda kind, task: (
                log.append((kind, task.priority))
                if task is not None and kind in ("dispatched", "finished")
                else None
            )
        )
        tasks = [Task(f"p{p}", "gated", priority=p, data=str(gate)) for p in priorities]
        for t in tasks:
            q.add(t)
        q.run_automatically(3600)
        # The best SLOTS tasks run; the others wait in the controller, not on the cluster.
        poll(lambda: sum(t.progress == 50 for t in tasks) == SLOTS)
        running = sorted((t.priority for t in tasks if t.status is Status.RUNNING), reverse=True)
        assert running == [7, 6, 5, 4]
        assert q._backend.free_slots() == 0
        assert sum(w.running for w in q.workers()) == SLOTS
        gate.touch()
        q.wait(120)
    assert [t.result() for t in tasks] == [{"processed": True, "value": "opened"}] * len(tasks)
    dispatched = [p for kind, p in log if kind == "dispatched"]
    assert dispatched == sorted(priorities, reverse=True)
    in_flight = peak = 0
    for kind, _ in log:
        in_flight += 1 if kind == "dispatched" else -1
        peak = max(peak, in_flight)
    assert peak == SLOTS
    assert {t.worker for t in tasks} == set(client.nthreads())


def test_retry_after_a_raised_error_with_a_client_of_its_own(client: Any) -> None:
    # A scheduler address: the backend connects a client at init() and closes it at
    # shutdown.
    backend = DaskBackend(client.scheduler.address)
    with Queue(backend=backend) as q:
        q.register(fail_once)
        t = Task("flaky", "fail_once", data="ok", max_retries=2)
        q.add(t)
        assert t.wait(60) == {"processed": True, "value": "ok after 1 retry"}
        assert backend.client is not None and backend.client is not client
        never = Task("never", "fail_once", data="x", max_retries=0)
        q.add(never)
        with pytest.raises(ValueError, match="first attempt fails"):
            never.wait(60)
    assert t.status is Status.COMPLETED and t.retry_count == 1
    assert [e.type for e in t.errors] == ["ValueError"]
    assert never.status is Status.FAILED and never.retry_count == 0
    assert backend.client.status == "closed"


def test_file_and_notebook_executors_validation_and_async(client: Any, task_dir: Path) -> None:
    write_task(
        task_dir,
        "square",
        textwrap.indent(
            textwrap.dedent(
                """
                def validation_schema(self):
                    return [lambda task: has_property(task.data, "n")]

                def exec(self, task):
                    return {"processed": True, "square": task.data["n"] ** 2,
                            "pid": os.getpid()}
                """
            ),
            "    ",
        ),
    )
    offset = 1000  # captured by value in the closure below

    async def shifted(task: Task[int]) -> int:
        await task.sleep(0.01)
        assert task.data is not None
        return task.data + offset

    with queue_on(client, task_dir) as q:
        q.register(shifted)
        good = Task("good", "square", data={"n": 12})
        bad = Task("bad", "square", data={"m": 1}, max_retries=3)
        notebook = Task("notebook", "shifted", data=5)
        for t in (good, bad, notebook):
            q.add(t)
        q.wait(60)
    result = good.result()
    assert result is not None and result["square"] == 144  # type: ignore[typeddict-item]
    assert result["pid"] in client.run(os.getpid).values()  # type: ignore[typeddict-item]
    assert bad.status is Status.FAILED and bad.retry_count == 0
    assert bad.errors[-1].type == TaskValidationError.__name__
    assert notebook.result() == {"processed": True, "value": 1005}


def test_progress_reaches_the_controller_while_the_task_runs(client: Any, marker_dir: Path) -> None:
    gate = marker_dir / "gate"
    with queue_on(client) as q:
        q.register(gated)
        seen: list[float] = []
        q.events.subscribe(
            lambda kind, task: seen.append(task.progress) if kind == "progress" and task else None
        )
        t = Task("slow", "gated", data=str(gate))
        q.add(t)
        q.run_automatically(3600)
        poll(lambda: t.progress == 50)
        assert t.status is Status.RUNNING and t.worker in client.nthreads()
        row = q.status_frame().iloc[0]
        assert row["progress"] == 50 and row["status"] == "running"
        gate.touch()
        assert t.wait(60) == {"processed": True, "value": "opened"}
    assert 50 in seen and t.progress == 100


def test_cancel_a_running_task_stops_it_at_its_next_cancellation_point(
    client: Any, marker_dir: Path
) -> None:
    def looping(task: Task[None]) -> None:
        while True:
            task.update_progress(10)
            task.sleep(0.01)

    with queue_on(client) as q:
        q.register(looping)
        q.register(fail_once)
        t = Task("loop", "looping", max_retries=3)
        q.add(t)
        q.run_automatically(3600)
        poll(lambda: t.progress == 10)
        assert q.cancel(t.uid)
        with pytest.raises(TaskCancelledError):
            t.wait(60)
        assert t.status is Status.CANCELLED and t.retry_count == 0
        # It stopped by itself: no worker was restarted, and the cluster keeps working.
        assert all(w.restarts == 0 for w in q.workers())
        after = Task("after", "fail_once", data="fine", max_retries=1)
        q.add(after)
        assert after.wait(60)["value"] == "fine after 1 retry"  # type: ignore[index]


def test_timeout_of_a_task_that_never_yields_restarts_its_worker(
    client: Any, marker_dir: Path
) -> None:
    gate = marker_dir / "gate"
    runs = marker_dir / "runs"
    runs.mkdir()

    def stuck(task: Task[None]) -> None:
        import time

        while True:
            time.sleep(0.05)  # never a cancellation point

    def companion(task: Task[str]) -> str:
        assert task.data is not None
        (runs / f"{task.name}-{os.getpid()}-{task.uid}-{os.urandom(4).hex()}").touch()
        while not os.path.exists(task.data):
            task.sleep(0.02)
        return "done"

    with queue_on(client) as q:
        q.register(stuck)
        q.register(companion)
        companions = [
            Task(f"c{i}", "companion", data=str(gate), timeout=120, max_retries=0)
            for i in range(SLOTS - 1)
        ]
        for c in companions:
            q.add(c)
        q.run_automatically(3600)
        poll(lambda: len(list(runs.iterdir())) == len(companions))
        s = Task("stuck", "stuck", timeout=1, max_retries=0)
        q.add(s)
        with pytest.raises(TaskTimeoutError, match=r"timed out after 1 s"):
            s.wait(60)
        assert s.status is Status.FAILED
        poll(lambda: sum(w.restarts for w in q.workers()) == 1)
        gate.touch()
        q.wait(120)
    # A companion that shared the restarted worker went back to the queue without counting
    # a retry, and ran again.
    for c in companions:
        assert c.status is Status.COMPLETED and c.retry_count == 0 and not c.errors
    assert len(list(runs.iterdir())) in (len(companions), len(companions) + 1)


def test_a_killed_dask_worker_is_survived_by_the_task_retry_rules(
    client: Any, marker_dir: Path
) -> None:
    def wait_to_be_killed(task: Task[str]) -> str:
        assert task.data is not None
        if task.retry_count == 0:
            Path(task.data).write_text(str(os.getpid()))
            while True:
                task.sleep(0.02)
        return "second attempt"

    def kill_worker_of(pidfile: Path) -> None:
        poll(lambda: pidfile.exists() and pidfile.read_text())
        os.kill(int(pidfile.read_text()), signal.SIGKILL)

    with queue_on(client) as q:
        q.register(wait_to_be_killed)
        q.run_automatically(3600)
        retried = Task("retried", "wait_to_be_killed", data=str(marker_dir / "a"), max_retries=1)
        q.add(retried)
        kill_worker_of(marker_dir / "a")
        assert retried.wait(60) == {"processed": True, "value": "second attempt"}
        # With no retries left the loss is final: Dask does not quietly re-run it.
        poll(lambda: _cluster_ready(client), timeout=60)
        final = Task("final", "wait_to_be_killed", data=str(marker_dir / "b"), max_retries=0)
        q.add(final)
        kill_worker_of(marker_dir / "b")
        with pytest.raises(WorkerCrashedError, match="was lost while running task 'final'"):
            final.wait(60)
    assert retried.retry_count == 1
    assert [e.type for e in retried.errors] == ["WorkerCrashedError"]
    assert final.status is Status.FAILED and final.retry_count == 0


def test_bad_arguments() -> None:
    with pytest.raises(ConfigurationError, match="scheduler address"):
        DaskBackend(42)
    with pytest.raises(ConfigurationError, match="abort_grace"):
        DaskBackend("tcp://127.0.0.1:1", abort_grace=-1)


def test_missing_dask_is_a_clear_error_and_nbqueue_does_not_import_it() -> None:
    code = textwrap.dedent(
        """
        import sys
        import nbqueue, nbqueue.backends
        assert "distributed" not in sys.modules and "dask" not in sys.modules
        sys.modules["distributed"] = None  # as if dask[distributed] were not installed
        from nbqueue.backends import DaskBackend
        try:
            DaskBackend("tcp://127.0.0.1:8786")
        except nbqueue.ConfigurationError as exc:
            print(exc)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert 'pip install "nbqueue[dask]"' in done.stdout


def test_worker_loss_is_detected_when_the_user_takes_over_cluster_events(
    client: Any, marker_dir: Path
) -> None:
    # A client has one handler per topic: a user subscribing to "all" after the queue
    # started replaces the backend's. Loss is still detected (the worker is missing from the
    # list the backend re-reads every few seconds), and the user's handler is left in place.
    seen: list[str] = []

    def wait_to_be_killed(task: Task[str]) -> str:
        assert task.data is not None
        if task.retry_count == 0:
            Path(task.data).write_text(str(os.getpid()))
            while True:
                task.sleep(0.02)
        return "second attempt"

    pidfile = marker_dir / "pid"
    try:
        with queue_on(client) as q:
            q.register(wait_to_be_killed)
            client.subscribe_topic("all", lambda event: seen.append(event[1].get("action")))
            t = Task("t", "wait_to_be_killed", data=str(pidfile), max_retries=1)
            q.add(t)
            q.run_automatically(3600)
            poll(lambda: pidfile.exists() and pidfile.read_text())
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
            assert t.wait(60) == {"processed": True, "value": "second attempt"}
        assert t.retry_count == 1 and [e.type for e in t.errors] == ["WorkerCrashedError"]
        assert "remove-worker" in seen
        poll(lambda: "add-worker" in seen)  # still subscribed after the queue shut down
    finally:
        client.unsubscribe_topic("all")


def test_shutdown_stops_running_tasks_and_leaves_the_cluster_idle(
    client: Any, marker_dir: Path
) -> None:
    gate = marker_dir / "never-opened"
    stopped = marker_dir / "stopped"

    def held(task: Task[str]) -> None:
        try:
            gated(task)
        finally:
            stopped.write_text(type(sys.exc_info()[1]).__name__)

    backend = DaskBackend(client)
    q = Queue(backend=backend)
    q.register(held)
    t = Task("held", "held", data=str(gate))
    q.add(t)
    q.run_automatically(3600)
    poll(lambda: t.progress == 50)
    q.close()
    assert t.status is Status.PENDING
    poll(lambda: stopped.exists())  # its flag was raised: it stopped at task.sleep()
    assert stopped.read_text() == "TaskCancelledError"
    assert client.status == "running"  # a client passed in stays open
    again = Queue(backend=backend)
    try:
        with pytest.raises(ConfigurationError, match="already serves a queue"):
            again.init()
    finally:
        again.shutdown()


def test_unreachable_scheduler_is_a_configuration_error() -> None:
    q = Queue(backend=DaskBackend("tcp://127.0.0.1:9", connect_timeout=0.5))
    with pytest.raises(ConfigurationError, match="cannot connect to the Dask scheduler"):
        q.init()
    q.shutdown()


def test_persistence_with_a_database_and_hooks_that_use_it_on_the_workers(
    client: Any, task_dir: Path, tmp_path: Path
) -> None:
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'queue.db'}"
    with sa.create_engine(url).begin() as conn:
        conn.execute(sa.text("CREATE TABLE squares (n INTEGER, square INTEGER, pid INTEGER)"))
    write_task(
        task_dir,
        "square",
        textwrap.indent(
            textwrap.dedent(
                """
                def exec(self, task):
                    return {"processed": True, "square": task.data ** 2}

                def save_result(self, task, result, db):
                    import sqlalchemy as sa
                    with db.begin() as conn:  # the queue's database, from the Dask worker
                        conn.execute(sa.text("INSERT INTO squares VALUES (:n, :s, :p)"),
                                     {"n": task.data, "s": result["square"], "p": os.getpid()})
                """
            ),
            "    ",
        ),
    )
    with Queue(task_dir, db=url, backend=DaskBackend(client)) as q:
        tasks = [Task(f"sq{n}", "square", data=n, priority=n) for n in range(4)]
        for t in tasks:
            q.add(t)
        q.wait(60)
    with Queue(task_dir, db=url, max_workers=1) as fresh:  # sees what ran on Dask
        again = [fresh.get_task(t.uid) for t in tasks]
        assert [a.result()["square"] for a in again if a is not None] == [0, 1, 4, 9]  # type: ignore[index]
        assert {a.worker for a in again if a is not None} <= set(client.nthreads())
    with sa.create_engine(url).begin() as conn:
        rows = conn.execute(sa.text("SELECT n, square, pid FROM squares ORDER BY n")).all()
    assert [(n, s) for n, s, _ in rows] == [(0, 0), (1, 1), (2, 4), (3, 9)]
    assert {pid for *_, pid in rows} <= set(client.run(os.getpid).values())


def test_a_rerun_in_a_new_process_at_the_same_address_runs_nothing(marker_dir: Path) -> None:
    # Exactly once: an attempt runs only on the worker process it was sent to. Its worker
    # dies; the nanny restarts it at the same address (a fixed port), where Dask runs the
    # lost attempt again. The user's "all" handler hides the removal from the queue, so
    # nothing but that check keeps the re-run from running the task a second time.
    runs = marker_dir / "runs"
    runs.mkdir()
    pidfile = marker_dir / "pid"

    def killed_once(task: Task[None]) -> str:
        (runs / f"{task.retry_count}-{os.getpid()}-{os.urandom(4).hex()}").touch()
        if task.retry_count == 0:
            pidfile.write_text(str(os.getpid()))
            while True:
                task.sleep(0.02)
        return "second attempt"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cluster = distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        worker_port=port,
        dashboard_address=":0",  # the module's cluster has the default port
    )
    own = distributed.Client(cluster)
    try:
        address = next(iter(own.nthreads()))
        with queue_on(own) as q:
            own.subscribe_topic("all", lambda event: None)  # after the queue's own
            q.register(killed_once)
            t = Task("once", "killed_once", max_retries=1)
            q.add(t)
            q.run_automatically(3600)
            poll(lambda: pidfile.exists() and pidfile.read_text())
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
            assert t.wait(60) == {"processed": True, "value": "second attempt"}
            assert set(own.nthreads()) == {address}  # the same address, a new process
        assert t.retry_count == 1 and [e.type for e in t.errors] == ["WorkerCrashedError"]
        assert sorted(p.name.split("-")[0] for p in runs.iterdir()) == ["0", "1"]
    finally:
        own.close()
        cluster.close()
