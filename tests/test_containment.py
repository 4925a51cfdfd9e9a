"""Containment: one bad task, row, value or callback never stalls, wedges or loses any other.
One test per defect found (the project's issue "Containment"), with real worker processes,
controller processes, SQLite files and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from helpers import poll, sql, write_task

from nbqueue import (
    DatabaseError,
    DatabaseLostError,
    Queue,
    Status,
    Task,
    WorkerCrashedError,
)
from nbqueue.store import SQLAlchemyAdapter


def echo(task: Task[Any]) -> Any:
    return task.data


# -- 1. a row the database refuses ------------------------------------------------------------
class Refusing(SQLAlchemyAdapter):
    """SQLite that refuses (permanently) every batch holding a task named "poison", as a
    database refuses a value it cannot store."""

    @staticmethod
    def _check(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        rows = list(rows)
        if any(row.get("name") == "poison" for row in rows):
            raise DatabaseError("value refused by the database", permanent=True)
        return rows

    def write(self, rows: Iterable[Mapping[str, Any]] = (), **rest: Any) -> Any:
        return super().write(self._check(rows), **rest)

    def save(self, rows: Iterable[Mapping[str, Any]]) -> Any:
        return super().save(self._check(rows))


def test_a_row_the_database_refuses_fails_only_its_task(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    with Queue(db=Refusing(url), max_workers=1) as q:
        q.register(echo)
        poison = Task("poison", "echo", data=0)
        good = [Task(f"ok{i}", "echo", data=i) for i in range(5)]
        q.add(poison)
        for t in good:
            q.add(t)
        q.flush(30)  # returns: the refused row does not hold the others back
        q.wait(60)
        assert [t.status for t in good] == [Status.COMPLETED] * 5
        assert poison.status is Status.FAILED and "refused" in str(poison.error)
    with Queue(db=url, max_workers=1) as again:  # the others were stored
        again.register(echo)
        assert sorted(t.name for t in again.tasks) == [f"ok{i}" for i in range(5)]
        assert all(t.status is Status.COMPLETED for t in again.tasks)


def test_flush_commits_everything_added(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    q = Queue(db=url, max_workers=1).init()
    try:
        q.register(echo)
        for i in range(100):
            q.add(Task(f"t{i}", "echo", data=i))
        q.flush(30)
        assert sql(url, "SELECT count(*) FROM tasks")[0][0] == 100
    finally:
        q.close()


# -- 2. a task that kills what runs it ----------------------------------------------------------
CONTROLLER = """
import os, signal, sys
from nbqueue import Queue, Task

def killer(task):
    task.sleep(0.3)  # long enough for its start to be written
    os.kill(os.getppid(), signal.SIGKILL)  # the worker's parent: its controller

def echo(task):
    return task.data

if __name__ == "__main__":
    q = Queue(db={url!r}, max_workers=1, lease_seconds=3600).init()
    q.register(killer)
    q.register(echo)
    if len(sys.argv) > 1:
        q.add(Task("killer", "killer", max_retries=2, priority=1))
        for i in range(20):
            q.add(Task(f"t{{i}}", "echo", data=i))
        q.flush()
    q.wait(120)
    print("all done")
"""


def test_a_task_that_kills_its_controller_stops_after_max_retries(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    script = tmp_path / "controller.py"
    script.write_text(CONTROLLER.format(url=url))
    # restarted like a service, each time it dies; the killer goes first (priority)
    deaths = 0
    for start in range(6):
        args = [sys.executable, str(script)] + (["add"] if start == 0 else [])
        done = subprocess.run(args, capture_output=True, text=True, timeout=180)
        if "all done" in done.stdout:
            break
        assert done.returncode == -signal.SIGKILL, done.stderr
        deaths += 1
    assert deaths == 3  # the first attempt and two retries, each counted
    rows = dict(sql(url, "SELECT name, status FROM tasks"))  # type: ignore[arg-type]
    assert rows.pop("killer") == "failed"
    assert set(rows.values()) == {"completed"} and len(rows) == 20
    [(count, error)] = sql(url, "SELECT retry_count, error FROM tasks WHERE name = 'killer'")
    assert count == 2 and "WorkerCrashedError" in error


def test_a_task_that_kills_its_host_stops_after_max_retries(
    postgres_url: str, task_dir: Path, tmp_path: Path
) -> None:
    write_task(
        task_dir,
        "hostkiller",
        """
    def exec(self, task):
        task.sleep(0.3)  # long enough for its start to be written
        os.killpg(os.getpgid(0), 9)  # the host's whole process group
""",
    )
    write_task(task_dir, "fine", "    def exec(self, task):\n        return {'processed': True}\n")
    with Queue(task_dir, db=postgres_url, max_workers=0) as client:
        killer = Task("killer", "hostkiller", max_retries=2, priority=1)
        others = [Task(f"t{i}", "fine") for i in range(5)]
        for t in [killer, *others]:
            client.add(t)
        client.flush(30)
        everything = [killer, *others]
        deaths = 0
        for start in range(6):  # a service manager restarts the host each time it dies
            host = subprocess.Popen(
                [sys.executable, "-m", "nbqueue.cli", "worker", "--db", postgres_url,
                 "--tasks", str(task_dir), "--processes", "1", "--name", f"h{start}"],
                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env={**os.environ, "NBQUEUE_GENERATE_TYPES": "false"},
            )  # fmt: skip
            try:
                poll(lambda h=host: h.poll() is not None or all(t.done() for t in everything),
                     timeout=120)  # fmt: skip
            finally:
                if host.poll() is None:
                    os.killpg(host.pid, signal.SIGTERM)
                    host.wait(60)
                else:
                    deaths += 1
            if killer.done() and all(t.done() for t in others):
                break
        with pytest.raises(WorkerCrashedError):
            killer.result(5)
        assert deaths == 3 and killer.retry_count == 2  # every death counted an attempt
        assert [t.status for t in others] == [Status.COMPLETED] * 5


# -- 5. a payload a controller refuses fails the task for everyone -----------------------------
def test_a_tampered_payload_fails_the_task_in_the_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    client = Queue(db=url, max_workers=0).init()
    try:
        client.register(echo)
        task = Task("tampered", "echo", data={1, 2})  # a set: pickled into data_blob
        client.add(task)
        client.flush(30)
        sql(url, "UPDATE tasks SET data_blob = :b WHERE uid = :u", b=b"\x80\x05junk.", u=task.uid)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Queue(db=url, max_workers=1) as runner:  # claims it, cannot read it
                runner.register(echo)
                runner.run_automatically(0.2)
                poll(lambda: task.status is Status.FAILED, timeout=60)  # seen by the client
    finally:
        client.close()
    assert "corrupt" in str(task.error)
    assert sql(url, "SELECT status FROM tasks")[0][0] == "failed"


# -- 6. a dead owner on this machine is recognised at once --------------------------------------
def test_the_tasks_of_a_dead_controller_on_this_machine_are_taken_back_at_once(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    script = tmp_path / "doomed.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, time
            from nbqueue import Queue, Task

            def slow(task):
                task.sleep(0.2)
                return task.data

            if __name__ == "__main__":
                q = Queue(db={url!r}, max_workers=1, lease_seconds=3600).init()
                q.register(slow)
                for i in range(12):
                    q.add(Task(f"t{{i}}", "slow", data=i))
                q.run_automatically(0.2)
                while q.counts()["completed"] < 2:
                    time.sleep(0.01)
                os.kill(os.getpid(), 9)
            """
        )
    )
    assert subprocess.run([sys.executable, str(script)], timeout=120).returncode == -9

    def slow(task: Task[int]) -> int:
        return task.data  # type: ignore[return-value]

    # with a lease of an hour, only recognising the dead owner lets this finish
    with Queue(db=url, max_workers=2, lease_seconds=3600) as q:
        q.register(slow)
        q.wait(120)
        assert all(t.status is Status.COMPLETED for t in q.tasks) and len(q.tasks) == 12


# -- 7. a database that disappears or is damaged is loud ----------------------------------------
def test_a_deleted_sqlite_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    q = Queue(db=f"sqlite:///{path}", max_workers=1).init()
    try:
        q.register(echo)
        q.add(Task("before", "echo", data=1))
        q.wait(60)
        # the database thread may notice at its next sync, before the next write: both count
        with pytest.warns(RuntimeWarning, match="database"), pytest.raises(DatabaseLostError):
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            for i in range(50):  # the writer finds out at its next write
                q.add(Task(f"after{i}", "echo", data=i))
                q.flush(30)
        assert q.state == "database failed"
        with pytest.raises(DatabaseLostError):
            q.wait(5)
    finally:
        q.close()


def test_a_damaged_sqlite_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    q = Queue(db=f"sqlite:///{path}", max_workers=1).init()
    try:
        q.register(echo)
        for i in range(200):
            q.add(Task(f"t{i}", "echo", data="x" * 200))
        q.wait(60)
        q.flush(30)
        sql(f"sqlite:///{path}", "PRAGMA wal_checkpoint(TRUNCATE)")  # all in the main file
        size = path.stat().st_size
        with open(path, "r+b") as f:  # garbage over every page but the first
            f.seek(4096)
            f.write(os.urandom(max(0, size - 4096)))
        with pytest.warns(RuntimeWarning), pytest.raises(DatabaseError) as caught:
            for i in range(50):
                q.add(Task(f"late{i}", "echo", data=i))
                q.flush(30)
        assert caught.value.permanent and q.state == "database failed"
    finally:
        q.close()


# -- 8. memory: inputs are read back once, not at every sync ------------------------------------
class Counting(SQLAlchemyAdapter):
    """Counts the rows read back with their pickled inputs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.blobs = 0

    def _count(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.blobs += sum(1 for row in rows if row.get("data_blob"))
        return rows

    def load(self, *args: Any, **kwargs: Any) -> Any:
        return self._count(super().load(*args, **kwargs))

    def load_changed(self, *args: Any, **kwargs: Any) -> Any:
        return self._count(super().load_changed(*args, **kwargs))

    def write(self, *args: Any, **kwargs: Any) -> Any:
        result = super().write(*args, **kwargs)
        self._count(result.claimed)
        return result


def test_big_inputs_are_read_back_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    client_db, runner_db = Counting(url), Counting(url)

    def size(task: Task[bytes]) -> int:
        return len(task.data)  # type: ignore[arg-type]

    blob = bytearray(5_000_000)  # not JSON: pickled into data_blob
    with Queue(db=client_db, max_workers=0) as client, Queue(db=runner_db, max_workers=1) as runner:
        client.register(size)
        runner.register(size)
        runner.run_automatically(0.1)
        task = Task("big", "size", data=blob)
        client.add(task)
        assert task.result(60) == {"processed": True, "value": 5_000_000}
        for _ in range(3):  # several syncs more
            client.wait(1)
            runner.wait(1)
    assert client_db.blobs == 0  # it added the task: it never needs the inputs back
    assert runner_db.blobs == 1  # it runs the task: read once
