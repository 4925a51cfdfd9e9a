"""Queue(db=...) on real SQLite files and a real PostgreSQL: every change persisted,
recovery after a dead controller, exactly-once claims, database faults."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import poll, sql, write_task

from nbqueue import Queue, SerializationError, Status, Task
from nbqueue.errors import CorruptRowError


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database: an SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'queue.db'}"
    else:
        yield request.getfixturevalue("postgres_url")


def append_uid(log: Path) -> object:
    def record(task: Task[object]) -> object:
        with open(log, "a") as f:
            f.write(task.uid + "\n")
        return task.data

    return record


def test_results_and_errors_are_visible_from_a_fresh_controller(
    db_url: str, marker_dir: Path
) -> None:
    log = marker_dir / "runs"

    def fail(task: Task[None]) -> None:
        raise ValueError("stored failure")

    with Queue(db=db_url, max_workers=1) as q:
        q.register(append_uid(log), type="record")
        q.register(fail)
        ok = Task("ok", "record", data={"frozen": frozenset({1, 2})}, priority=2)
        bad = Task("bad", "fail", max_retries=1)
        q.add(ok).add(bad)
        q.wait(60)
    with Queue(db=db_url, max_workers=1) as fresh:
        fresh.register(append_uid(log), type="record")
        fresh.register(fail)
        fresh.wait(60)  # nothing left to run: completed tasks never run again
        again_ok, again_bad = fresh.get_task(ok.uid), fresh.get_task(bad.uid)
        assert again_ok is not None and again_bad is not None
        assert again_ok.status is Status.COMPLETED
        assert again_ok.result() == {"processed": True, "value": {"frozen": frozenset({1, 2})}}
        assert (again_ok.priority, again_ok.name) == (2, "ok")
        assert again_bad.status is Status.FAILED and again_bad.retry_count == 1
        assert [e.message for e in again_bad.errors] == ["stored failure"] * 2
        assert fresh.status_frame()["status"].tolist() == ["completed", "failed"]
    assert log.read_text().split() == [ok.uid]


def test_pending_tasks_resume_after_a_restart(db_url: str, marker_dir: Path) -> None:
    log = marker_dir / "runs"
    q = Queue(db=db_url, max_workers=1).init()
    q.register(append_uid(log), type="record")
    tasks = [Task(f"t{i}", "record", data=i) for i in range(5)]
    for t in tasks:
        q.add(t)  # never processed: no run_tasks / wait
    q.flush()
    q.close()  # stop at once (shutdown() would run them first)
    assert not log.exists()
    with Queue(db=db_url, max_workers=2) as q:
        q.register(append_uid(log), type="record")
        assert [t.status for t in q.tasks] == [Status.PENDING] * 5
        q.wait(60)
        assert [t.result()["value"] for t in q.tasks] == list(range(5))  # type: ignore[index]
    assert sorted(log.read_text().split()) == sorted(t.uid for t in tasks)


CONTROLLER = """
import os, sys, time
from nbqueue import Queue, Task

def record(task):
    with open({log!r}, "a") as f:
        f.write(task.uid + "\\n")
    task.sleep(0.05)
    return task.data

if __name__ == "__main__":
    q = Queue(db={url!r}, max_workers=2, tasks_per_worker=2, lease_seconds=1).init()
    q.register(record)
    {body}
"""


def run_controller(
    tmp_path: Path, name: str, url: str, log: Path, body: str
) -> subprocess.Popen[bytes]:
    script = tmp_path / f"{name}.py"
    script.write_text(
        CONTROLLER.format(
            log=str(log), url=url, body=textwrap.indent(textwrap.dedent(body), "    ").strip()
        )
    )
    return subprocess.Popen([sys.executable, str(script)])


def test_controller_killed_mid_run_and_a_new_one_finishes(
    db_url: str, tmp_path: Path, marker_dir: Path
) -> None:
    log = marker_dir / "runs"
    proc = run_controller(
        tmp_path,
        "doomed",
        db_url,
        log,
        """
        for i in range(40):
            q.add(Task(f"t{i}", "record", data=i))
        q.run_automatically(0.5)
        while q.counts()["completed"] < 10:
            time.sleep(0.01)
        os._exit(1)  # the kernel dies mid-run
        """,
    )
    assert proc.wait(120) == 1
    completed_before = {
        r[0] for r in sql(db_url, "SELECT uid FROM tasks WHERE status = 'completed'")
    }
    assert completed_before  # (rows are written a moment after tasks finish)

    def record(task: Task[int]) -> int:  # the same executor, registered again
        with open(log, "a") as f:
            f.write(task.uid + "\n")
        return task.data  # type: ignore[return-value]

    with Queue(db=db_url, max_workers=2, lease_seconds=1) as q:
        q.register(record)
        assert len(q.tasks) == 40
        q.wait(120)
        assert all(t.status is Status.COMPLETED for t in q.tasks)
        assert sorted(t.result()["value"] for t in q.tasks) == list(range(40))  # type: ignore[index]
    runs = Counter(log.read_text().split())
    assert len(runs) == 40
    # work whose completion was committed never runs again; what was running, or had
    # finished but was not yet written, when the controller died runs once more
    assert all(runs[uid] == 1 for uid in completed_before)


def test_two_controllers_run_every_task_exactly_once(
    postgres_url: str, tmp_path: Path, marker_dir: Path
) -> None:
    log = marker_dir / "runs"
    body = """
        for i in range(60):
            q.add(Task(f"{{name}}-{{i}}", "record", data=i))
        q.run_automatically(0.2)
        while q.counts()["completed"] + q.counts()["failed"] < 120:
            time.sleep(0.02)
        q.shutdown()
    """
    procs = [
        run_controller(tmp_path, name, postgres_url, log, body.replace("{{name}}", name))
        for name in ("a", "b")
    ]
    for proc in procs:
        assert proc.wait(180) == 0
    runs = Counter(log.read_text().split())
    stored = sql(postgres_url, "SELECT uid, status FROM tasks")
    assert len(stored) == 120 and {r[1] for r in stored} == {"completed"}
    assert set(runs) == {r[0] for r in stored}
    assert set(runs.values()) == {1}


def test_save_result_writes_into_a_user_table(db_url: str, task_dir: Path) -> None:
    sql(db_url, "CREATE TABLE scores (task_uid VARCHAR(64) PRIMARY KEY, score INTEGER)")
    write_task(
        task_dir,
        "score",
        """
    def exec(self, task):
        return {"processed": True, "score": task.data * 10}

    def save_result(self, task, result, db):
        from sqlalchemy import text
        with db.begin() as conn:
            conn.execute(text("INSERT INTO scores VALUES (:uid, :score)"),
                         {"uid": task.uid, "score": result["score"]})
""",
    )
    with Queue(task_dir, db=db_url, max_workers=1) as q:
        tasks = [Task(f"s{i}", "score", data=i) for i in range(3)]
        for t in tasks:
            q.add(t)
        q.wait(60)
    stored = dict(sql(db_url, "SELECT task_uid, score FROM scores"))  # type: ignore[arg-type]
    assert stored == {t.uid: i * 10 for i, t in enumerate(tasks)}


def test_a_corrupt_row_fails_only_its_task(db_url: str, marker_dir: Path) -> None:
    log = marker_dir / "runs"
    q = Queue(db=db_url, max_workers=1).init()
    q.register(append_uid(log), type="record")
    tasks = [Task(f"t{i}", "record", data={"i": i}) for i in range(3)]
    for t in tasks:
        q.add(t)
    q.flush()
    q.close()
    sql(  # tampered: the stored pickle of its data no longer unpickles
        db_url,
        "UPDATE tasks SET data = NULL, data_blob = :bad WHERE uid = :uid",
        bad=b"\x80\x05garbage.",
        uid=tasks[1].uid,
    )
    with Queue(db=db_url, max_workers=1) as q:
        q.register(append_uid(log), type="record")
        broken = q.get_task(tasks[1].uid)
        assert broken is not None and broken.status is Status.FAILED
        assert "corrupt" in str(broken.error) and tasks[1].uid in str(broken.error)
        with pytest.raises(CorruptRowError):
            broken.wait()
        q.wait(60)
        assert [t.status for t in q.tasks] == [Status.COMPLETED, Status.FAILED, Status.COMPLETED]
    assert sorted(log.read_text().split()) == sorted([tasks[0].uid, tasks[2].uid])
    assert sql(db_url, "SELECT status FROM tasks WHERE uid = :u", u=tasks[1].uid)[0][0] == "failed"


def test_unpicklable_data_is_refused_at_add(db_url: str) -> None:
    with Queue(db=db_url, max_workers=1) as q:
        q.register(lambda task: None, type="noop")
        with pytest.raises(SerializationError):
            q.add(Task("locked", "noop", data=threading.Lock()))
        assert q.tasks == []


def test_terminated_database_connections_are_survived(postgres_url: str) -> None:
    def slow(task: Task[int]) -> int:
        task.sleep(0.05)
        return task.data  # type: ignore[return-value]

    with Queue(db=postgres_url, max_workers=2) as q:
        q.register(slow)
        tasks = [Task(f"t{i}", "slow", data=i) for i in range(40)]
        for t in tasks:
            q.add(t)
        q.run_automatically(0.2)
        poll(lambda: sum(t.status is Status.COMPLETED for t in tasks) >= 5, timeout=60)
        database = sa.make_url(postgres_url).database
        killed = sql(
            postgres_url.rsplit("/", 1)[0] + "/postgres",
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = :db AND pid <> pg_backend_pid()",
            db=database,
        )
        assert killed
        q.wait(120)
        assert [t.result()["value"] for t in tasks] == list(range(40))  # type: ignore[index]
    stored = sql(postgres_url, "SELECT count(*) FROM tasks WHERE status = 'completed'")
    assert stored[0][0] == 40


def test_a_locked_sqlite_file_is_waited_out(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    url = f"sqlite:///{path}"
    with Queue(db=url, max_workers=1) as q:
        q.register(lambda task: task.data, type="echo")
        blocker = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN EXCLUSIVE")
        tasks = [Task(f"t{i}", "echo", data=i) for i in range(5)]
        for t in tasks:
            q.add(t)
        released = threading.Timer(1.0, lambda: blocker.execute("COMMIT"))
        released.start()  # the lock is held for a second: a fault, not synchronisation
        q.wait(60)
        released.join()
        blocker.close()
        assert [t.result()["value"] for t in tasks] == list(range(5))  # type: ignore[index]
    assert sql(url, "SELECT count(*) FROM tasks WHERE status = 'completed'")[0][0] == 5


def test_set_database_before_init_only(tmp_path: Path) -> None:
    q = Queue(max_workers=1)
    q.set_database(f"sqlite:///{tmp_path / 'late.db'}")
    with q:
        q.register(lambda task: 1, type="one")
        t = Task("t", "one")
        q.add(t)
        assert t.wait(60) == {"processed": True, "value": 1}
        with pytest.raises(Exception, match="before init"):
            q.set_database(None)
    assert os.path.exists(tmp_path / "late.db")


def test_a_client_never_writes_back_what_it_read(tmp_path: Path) -> None:
    """A controller applies other controllers' changes without writing them back: a stale
    copy written later would overwrite the owner's newer state."""
    from nbqueue.store import SQLAlchemyAdapter

    url = f"sqlite:///{tmp_path / 'queue.db'}"
    saved: list[dict[str, object]] = []

    class Recording(SQLAlchemyAdapter):
        def write(self, rows=(), **rest):  # type: ignore[no-untyped-def,override]
            rows = list(rows)
            saved.extend(rows)
            return super().write(rows, **rest)

    def double(task: Task[int]) -> int:
        return task.data * 2  # type: ignore[operator]

    with Queue(db=url, max_workers=1) as host:
        host.register(double)
        host.run_automatically(0.2)
        with Queue(db=Recording(url), max_workers=0) as client:
            client.register(double)
            tasks = [Task(f"t{i}", "double", data=i) for i in range(30)]
            for i, t in enumerate(tasks):
                client.add(t)
                host.add(Task(f"h{i}", "double", data=i))  # new to the client: adopted
            poll(lambda: len(client.tasks) == 60)  # the host's tasks, read by the client
            client.wait(60)
            assert [t.result()["value"] for t in tasks] == [i * 2 for i in range(30)]  # type: ignore[index]
    assert {row["uid"] for row in saved} == {t.uid for t in tasks}
    assert {row["status"] for row in saved} == {"pending"}, [
        r for r in saved if r["status"] != "pending"
    ][:2]  # only what it added


def test_cleared_tasks_stay_gone(db_url: str) -> None:
    """Rows read or claimed just before their delete was committed do not come back."""

    def echo(task: Task[int]) -> int:
        return task.data  # type: ignore[return-value]

    with Queue(db=db_url, max_workers=2, tasks_per_worker=4) as q:
        q.register(echo)
        q.run_automatically(0.2)
        for round_ in range(3):
            for i in range(300):
                q.add(Task(f"r{round_}-{i}", "echo", data=i))
            q.clear()
            q.wait(60)  # nothing left: never hangs on a cleared task
            assert q.tasks == []
        last = Task("last", "echo", data=7)
        q.add(last)
        assert last.wait(60) == {"processed": True, "value": 7}


def _double(x: int) -> int:
    return 2 * x


def test_a_function_submitted_again_is_stored_once(tmp_path: Path) -> None:
    """The executor of a submitted function goes to the database once, not once per call
    (each store is a round trip and a commit)."""
    url = f"sqlite:///{tmp_path / 'q.db'}"
    with Queue(db=url, max_workers=1) as q:
        assert q.submit(_double, 1).result(60) == 2
        q.flush(30)
        [(stored_at,)] = sql(url, "SELECT created_at FROM tasks_executors")
        poll(lambda: sql(url, "SELECT CURRENT_TIMESTAMP")[0][0] > str(stored_at), 10)
        assert list(q.map(_double, range(5), timeout=60)) == [0, 2, 4, 6, 8]
        q.flush(30)
        assert sql(url, "SELECT created_at FROM tasks_executors") == [(stored_at,)]
