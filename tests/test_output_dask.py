"""On Dask workers, what an attempt prints and logs is its task's ``output``, also when
several attempts run in threads of one worker process at once (a LocalCluster of its own,
with process workers)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nbqueue import Queue, Task
from nbqueue.backends import DaskBackend

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def client() -> Iterator[Any]:
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None
    )
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def chatty(task: Task[str]) -> str:
    """Prints and logs while the other attempt does, in the same worker process."""
    assert task.data is not None
    meeting = Path(task.data)
    (meeting / task.name).touch()
    while len(list(meeting.iterdir())) < 2:
        time.sleep(0.005)
    for i in range(20):
        print(f"{task.name} line {i}")
        sys.stderr.write(f"{task.name} err {i}\n")
        logging.warning("%s record %d", task.name, i)
        time.sleep(0.001)
    return task.name


def test_attempts_in_threads_of_one_dask_worker_each_keep_their_output(
    client: Any, marker_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with Queue(backend=DaskBackend(client)) as q:
        q.register(chatty)
        tasks = [Task(name, "chatty", data=str(marker_dir), timeout=120) for name in "AB"]
        for t in tasks:
            q.add(t)
        assert [t.wait(60)["value"] for t in tasks] == ["A", "B"]  # type: ignore[index]
    for t in tasks:
        assert t.output.splitlines() == [
            line
            for i in range(20)
            for line in (
                f"{t.name} line {i}",
                f"{t.name} err {i}",
                f"WARNING:root:{t.name} record {i}",
            )
        ], t.output
    out, err = capfd.readouterr()
    assert "line 1" not in out + err and "record 1" not in out + err
