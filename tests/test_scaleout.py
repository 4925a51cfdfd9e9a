"""Several `nbqueue worker` hosts sharing one PostgreSQL queue, driven from a client queue."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from helpers import poll, sql, write_task
from hosts import WorkerHost

from nbqueue import Queue, Status, Task


class Host(WorkerHost):
    """A host with two task threads and a 2 s lease, ``env`` added to this environment."""

    def __init__(self, url: str, tasks: Path, name: str, log: Path, **env: str) -> None:
        super().__init__(url, tasks, log, "--concurrency", "2", "--lease", "2", name=name,
                         env={**os.environ, **env})  # fmt: skip


@pytest.fixture
def shared_tasks(task_dir: Path, marker_dir: Path) -> Path:
    write_task(
        task_dir,
        "record",
        f"""
    def exec(self, task):
        with open({str(marker_dir / "runs")!r}, "a") as f:
            f.write(task.uid + " " + str(os.getpid()) + "\\n")
        held = {str(marker_dir / "held")!r}
        if task.data.get("hold") and not os.path.exists(held):
            open(held, "w").write(str(os.getpid()))
            while True:  # until this host is killed
                task.sleep(0.05)
        return {{"processed": True, "value": task.data["i"]}}
""",
    )
    return task_dir


def runs(marker_dir: Path) -> Counter[str]:
    path = marker_dir / "runs"
    return (
        Counter(line.split()[0] for line in path.read_text().splitlines())
        if path.exists()
        else Counter()
    )


def test_two_hosts_share_the_work_exactly_once(
    postgres_url: str, shared_tasks: Path, marker_dir: Path, tmp_path: Path, hosts: list[Host]
) -> None:
    hosts += [
        Host(postgres_url, shared_tasks, f"host{i}", tmp_path / f"host{i}.log") for i in (1, 2)
    ]
    for host in hosts:
        poll(host.serving, timeout=60)  # both serving before the work arrives
    with Queue(shared_tasks, db=postgres_url, max_workers=0) as client:
        tasks = [Task(f"t{i}", "record", data={"i": i}) for i in range(200)]
        for t in tasks:
            client.add(t)
        client.wait(180)
        assert [t.result()["value"] for t in tasks] == list(range(200))  # type: ignore[index]
        workers = Counter(t.worker.split("-")[0] for t in tasks if t.worker)
    assert set(runs(marker_dir).values()) == {1} and len(runs(marker_dir)) == 200
    assert set(workers) == {"host1", "host2"}, workers
    for host in hosts:
        assert host.stop() == 0
        assert "drained" in host.log.read_text()
    assert sql(postgres_url, "SELECT count(*) FROM tasks WHERE status = 'completed'")[0][0] == 200


def test_a_killed_host_s_task_is_finished_by_another(
    postgres_url: str, shared_tasks: Path, marker_dir: Path, tmp_path: Path, hosts: list[Host]
) -> None:
    first = Host(postgres_url, shared_tasks, "doomed", tmp_path / "doomed.log")
    hosts.append(first)
    with Queue(shared_tasks, db=postgres_url, max_workers=0) as client:
        long = Task("long", "record", data={"i": 7, "hold": True}, max_retries=1)
        client.add(long)
        poll(lambda: (marker_dir / "held").exists(), timeout=60)
        first.kill()  # SIGKILL of the host's whole process group
        second = Host(postgres_url, shared_tasks, "rescuer", tmp_path / "rescuer.log")
        hosts.append(second)
        assert long.wait(120) == {"processed": True, "value": 7}
        assert long.worker is not None and long.worker.startswith("rescuer")
        assert long.status is Status.COMPLETED
        # the lost attempt counted: one retry, and why
        assert long.retry_count == 1 and [e.type for e in long.errors] == ["WorkerCrashedError"]
    assert runs(marker_dir)[long.uid] == 2  # once on the dead host, once to completion


def test_a_task_added_to_an_idle_host_starts_without_a_poll(
    postgres_url: str, shared_tasks: Path, marker_dir: Path, tmp_path: Path, hosts: list[Host]
) -> None:
    # the host polls once an hour: only a notification can wake it
    host = Host(
        postgres_url, shared_tasks, "idle", tmp_path / "idle.log", NBQUEUE_POLL_SECONDS="3600"
    )
    hosts.append(host)
    poll(host.serving, timeout=60)
    with Queue(shared_tasks, db=postgres_url, max_workers=0) as client:
        t = Task("wake", "record", data={"i": 1})
        client.add(t)
        assert t.wait(60) == {"processed": True, "value": 1}
        assert t.worker is not None and t.worker.startswith("idle")


def test_a_closure_travels_through_the_database_to_a_host(
    postgres_url: str,
    task_dir: Path,
    tmp_path: Path,
    hosts: list[Host],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NBQUEUE_SECRET", "s3cret")
    factor = 7

    def times(task: Task[int]) -> int:
        return task.data * factor  # type: ignore[operator]

    with Queue(db=postgres_url, max_workers=0) as client:
        client.register(times)
        hosts.append(Host(postgres_url, task_dir, "h", tmp_path / "h.log", NBQUEUE_SECRET="s3cret"))
        tasks = [Task(f"t{i}", "times", data=i) for i in range(5)]
        for t in tasks:
            client.add(t)
        client.wait(120)
        assert [t.result()["value"] for t in tasks] == [i * 7 for i in range(5)]  # type: ignore[index]
        assert all(t.worker and t.worker.startswith("h-") for t in tasks)
    status = subprocess.run(
        [sys.executable, "-m", "nbqueue.cli", "status", "--db", postgres_url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "1 worker host(s)" in status.stdout and " h " in status.stdout


def test_a_tampered_executor_is_refused_and_the_host_keeps_running(
    postgres_url: str,
    task_dir: Path,
    tmp_path: Path,
    hosts: list[Host],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NBQUEUE_SECRET", "s3cret")

    def evil(task: Task[None]) -> str:
        return "ran"

    def good(task: Task[None]) -> str:
        return "fine"

    with Queue(db=postgres_url, max_workers=0) as client:
        client.register(evil)
        client.register(good)
        bad_task, good_task = Task("bad", "evil"), Task("ok", "good")
        client.add(bad_task).add(good_task)

        poll(lambda: sql(postgres_url, "SELECT count(*) FROM tasks_executors")[0][0] == 2)
        sql(  # flip the last byte of the signed pickle
            postgres_url,
            "UPDATE tasks_executors SET payload = overlay(payload placing "
            "decode(lpad(to_hex(get_byte(payload, length(payload) - 1) # 1), 2, '0'), "
            "'hex') from length(payload)) WHERE type = 'evil'",
        )
        hosts.append(Host(postgres_url, task_dir, "h", tmp_path / "h.log", NBQUEUE_SECRET="s3cret"))
        assert good_task.wait(120) == {"processed": True, "value": "fine"}
        with pytest.raises(Exception, match=r"mis-signed|refused"):
            bad_task.wait(120)
        assert bad_task.status is Status.FAILED
    assert hosts[0].proc.poll() is None  # still serving


def test_a_stalled_host_that_lost_its_lease_stops_and_writes_nothing(
    postgres_url: str, shared_tasks: Path, marker_dir: Path, tmp_path: Path, hosts: list[Host]
) -> None:
    stalled = Host(postgres_url, shared_tasks, "stalled", tmp_path / "stalled.log")
    hosts.append(stalled)
    with Queue(shared_tasks, db=postgres_url, max_workers=0) as client:
        long = Task("long", "record", data={"i": 3, "hold": True}, max_retries=1)
        client.add(long)
        poll(lambda: (marker_dir / "held").exists(), timeout=60)
        os.killpg(stalled.proc.pid, signal.SIGSTOP)  # the whole host freezes past its lease
        try:
            rescuer = Host(postgres_url, shared_tasks, "rescuer", tmp_path / "rescuer.log")
            hosts.append(rescuer)
            assert long.wait(120) == {"processed": True, "value": 3}
        finally:
            os.killpg(stalled.proc.pid, signal.SIGCONT)
        poll(lambda: "lost the lease" in stalled.log.read_text(), timeout=60)
    [row] = sql(postgres_url, "SELECT status, worker, retry_count FROM tasks")
    assert row[0] == "completed" and row[1].startswith("rescuer")
    assert row[2] == 1  # the stalled host's attempt counted
    assert stalled.stop() == 0


def test_options_from_the_environment_and_ctrl_c_twice_stops_at_once(
    postgres_url: str, shared_tasks: Path, marker_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "envhost.log"
    env = {
        **os.environ,
        "NBQUEUE_DB": postgres_url,
        "NBQUEUE_TASKS": str(shared_tasks),
        "NBQUEUE_WORKER_NAME": "fromenv",
        "NBQUEUE_PROCESSES": "1",
        "NBQUEUE_CONCURRENCY": "1",
        "NBQUEUE_GENERATE_TYPES": "false",
    }
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nbqueue.cli", "worker"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env,
        )  # fmt: skip
    try:
        with contextlib.closing(Queue(shared_tasks, db=postgres_url, max_workers=0)) as client:
            client.init()
            held = Task("held", "record", data={"i": 1, "hold": True}, max_retries=0)
            client.add(held)
            poll(lambda: (marker_dir / "held").exists(), timeout=60)
            assert "fromenv: serving" in log.read_text() and "1 process(es) x 1" in log.read_text()
            proc.send_signal(signal.SIGINT)  # first Ctrl-C: drain, the held task keeps running
            poll(lambda: "draining" in log.read_text())
            assert proc.poll() is None
            proc.send_signal(signal.SIGINT)  # second: stop at once
            assert proc.wait(60) == 0
            assert "stopping now" in log.read_text()
            # the running task went back to the queue, for another host to run
            poll(lambda: client.get_task(held.uid).status is Status.PENDING)  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
