"""What a task writes -- print, sys.stderr, file descriptors 1 and 2 (subprocesses, C
code), log records, tqdm bars -- is that task's ``output``, with real worker processes, and
none of it reaches the process (the notebook kernel) that runs the queue."""

from __future__ import annotations

import ctypes
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from helpers import poll, sql, text_of, write_task

from nbqueue import Queue, Task
from nbqueue.backends import capture

if TYPE_CHECKING:
    from test_notebooks import Kernel

MARKERS = ("py-out", "py-err", "fd-out", "fd-err", "sub-out", "c-out", "log-warning", "thread-out")


def test_lines_keep_their_last_redraw_and_a_bar_is_read_as_progress() -> None:
    sent: list[str] = []
    progress: list[float] = []
    text = capture.TaskText("uid", sent.append, progress.append)
    for piece in ("dos line\r", "\nover\rwritten\n", "\r 10%|#", "  |", "\r 50%|#####|", "\r"):
        text.write(piece)
    assert sent == ["dos line\nwritten\n"]
    text.write("100%|##########|\nnext: ")
    assert sent[-1] == "100%|##########|\n" and progress == [10.0, 50.0, 100.0]
    text.write("no newline yet")
    assert text.rest() == "next: no newline yet" and len(sent) == 2
    text.own_progress = True
    text.write("\r 20%|##\n")
    assert progress == [10.0, 50.0, 100.0] and sent[-1] == " 20%|##\n"
    text.write("x" * (capture.PARTIAL_LINE_LIMIT + 1))  # a line without end is sent anyway
    assert sent[-1] == "x" * (capture.PARTIAL_LINE_LIMIT + 1) and text.rest() == ""


def noisy(task: Task[None]) -> str:
    print("py-out")
    sys.stderr.write("py-err\n")
    os.write(1, b"fd-out\n")
    os.write(2, b"fd-err\n")
    subprocess.run(["echo", "sub-out"], check=True)
    ctypes.CDLL(None).printf(b"c-out\n")  # buffered by C's stdio, not by Python
    logging.warning("log-warning")
    logging.info("log-info")  # the root logger's level, WARNING, is left as it is
    mine = logging.getLogger("mine")
    mine.setLevel(logging.INFO)
    mine.info("mine-info")
    helper = threading.Thread(target=print, args=("thread-out",))  # a thread of the task's
    helper.start()
    helper.join()
    return "done"


def test_everything_a_task_writes_is_its_output_and_nothing_else(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with Queue(max_workers=1) as q:
        q.register(noisy)
        t = Task("n", "noisy")
        q.add(t)
        assert t.wait(60)["value"] == "done"  # type: ignore[index]
        quiet = q.submit(len, "abc")
        assert quiet.result(60) == 3
    for marker in MARKERS:
        assert marker in t.output, (marker, t.output)
    assert "WARNING:root:log-warning\n" in t.output
    assert "INFO:mine:mine-info\n" in t.output
    assert "log-info" not in t.output
    assert quiet.output == ""
    out, err = capfd.readouterr()
    assert not any(m in out or m in err for m in MARKERS), (out, err)


def test_output_arrives_while_the_task_runs(marker_dir: Path) -> None:
    gate = marker_dir / "seen"

    def halfway(task: Task[None]) -> None:
        print("halfway there")
        while not gate.exists():
            time.sleep(0.01)
        print("arrived")

    with Queue(max_workers=1) as q:
        q.register(halfway)
        t = Task("h", "halfway", timeout=120)
        q.add(t)
        q.run_automatically(3600)
        poll(lambda: "halfway there" in t.output)
        assert "arrived" not in t.output
        gate.touch()
        t.wait(60)
    assert t.output == "halfway there\narrived\n"


def _meet(marker_dir: Path, name: str, stage: str, count: int = 2) -> None:
    """Wait until ``count`` tasks reached ``stage``."""
    (marker_dir / f"{stage}-{name}").touch()
    while len(list(marker_dir.glob(f"{stage}-*"))) < count:
        time.sleep(0.005)


def test_tasks_printing_at_the_same_time_in_two_workers(marker_dir: Path) -> None:
    def chatty(task: Task[None]) -> None:
        _meet(marker_dir, task.name, "start")
        for i in range(50):
            print(f"{task.name} line {i}")
            os.write(1, f"{task.name} fd {i}\n".encode())
            time.sleep(0.001)

    with Queue(max_workers=2) as q:
        q.register(chatty)
        tasks = [Task(name, "chatty", timeout=120) for name in ("A", "B")]
        for t in tasks:
            q.add(t)
        q.wait(60)
    for t in tasks:
        lines = t.output.splitlines()
        assert len(lines) == 100 and all(line.startswith(f"{t.name} ") for line in lines)


def test_tasks_printing_at_the_same_time_in_one_worker(marker_dir: Path) -> None:
    """Python-level writes go to the writing thread's task; fd-level output cannot be told
    apart while both run: each gets it, marked [shared]."""

    def chatty(task: Task[None]) -> None:
        _meet(marker_dir, task.name, "start")
        for i in range(20):
            print(f"{task.name} line {i}")
            logging.warning(f"{task.name} record {i}")
        os.write(1, f"{task.name} fd\n".encode())
        _meet(marker_dir, task.name, "end")

    with Queue(max_workers=1, tasks_per_worker=2) as q:
        q.register(chatty)
        tasks = [Task(name, "chatty", timeout=120) for name in ("A", "B")]
        for t in tasks:
            q.add(t)
        q.wait(60)
    for t in tasks:
        own = [line for line in t.output.splitlines() if not line.startswith("[shared] ")]
        assert own == [
            line
            for i in range(20)
            for line in (f"{t.name} line {i}", f"WARNING:root:{t.name} record {i}")
        ]
        shared = sorted(line for line in t.output.splitlines() if line.startswith("[shared] "))
        assert shared == ["[shared] A fd", "[shared] B fd"], t.output


def test_tqdm_redraws_collapse_and_its_bar_is_the_progress(marker_dir: Path) -> None:
    gate = marker_dir / "half"

    def with_bar(task: Task[None]) -> None:
        from tqdm import tqdm

        for i in tqdm(range(10), mininterval=0, desc="steps"):
            if i == 5:
                while not gate.exists():
                    time.sleep(0.01)

    def reports_itself(task: Task[None]) -> None:
        from tqdm import tqdm

        task.update_progress(7)
        for _ in tqdm(range(10), mininterval=0):
            pass
        while not gate.exists():
            time.sleep(0.01)

    with Queue(max_workers=2) as q:
        q.register(with_bar)
        q.register(reports_itself)
        bar = Task("bar", "with_bar", timeout=120)
        own = Task("own", "reports_itself", timeout=120)
        q.add(bar)
        q.add(own)
        q.run_automatically(3600)
        poll(lambda: bar.progress == 50)
        poll(lambda: "100%|" in own.output)  # its bar has ended, the task still runs
        assert own.progress == 7
        gate.touch()
        q.wait(60)
    assert "\r" not in bar.output
    lines = bar.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("steps: 100%|") and "10/10" in lines[0]


def test_output_of_no_task_is_dropped(marker_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """A thread a task left behind prints after the task ended: that goes nowhere."""
    finished = marker_dir / "finished"

    def leaves_a_thread(task: Task[None]) -> None:
        def keep_printing() -> None:
            for i in range(20):
                print(f"leftover {i}")
                os.write(1, b"leftover fd\n")
                time.sleep(0.005)
            finished.touch()

        threading.Thread(target=keep_printing, daemon=True).start()

    with Queue(max_workers=1) as q:
        q.register(leaves_a_thread)
        t = Task("l", "leaves_a_thread")
        q.add(t)
        t.wait(60)
        poll(finished.exists)
    out, err = capfd.readouterr()
    assert "leftover" not in out + err


def test_a_task_files_import_output_and_the_database_column(tmp_path: Path, task_dir: Path) -> None:
    """What the task file prints when the worker imports it belongs to the task that made
    it import; the output is stored with the task."""
    body = (
        "    def exec(self, task):\n        print('exec ran')\n        return {'processed': True}\n"
    )
    path = write_task(task_dir, "hello", body)
    path.write_text("print('imported')\n" + path.read_text())
    url = f"sqlite:///{tmp_path / 'q.db'}"
    with Queue(db=url, task_directory=str(task_dir), max_workers=1) as q:
        t = Task("t", "hello")
        q.add(t)
        t.wait(60)
    assert t.output == "imported\nexec ran\n"
    rows = sql(url, "SELECT output FROM tasks WHERE uid = :uid", uid=t.uid)
    assert rows[0][0] == "imported\nexec ran\n"


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Kernel]:
    """A kernel that forwards what is written to its file descriptors 1 and 2 to the
    running cell, as in Jupyter (ipykernel does not under pytest: it looks for
    PYTEST_CURRENT_TEST)."""
    from test_notebooks import Kernel  # (not at the top: workers import this module)

    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    k = Kernel(tmp_path)
    with k.client.setup_kernel():
        yield k


@pytest.mark.timeout(300)
def test_a_worker_print_lands_under_no_cell_in_a_jupyter_kernel(kernel: Kernel) -> None:
    kernel.ok(
        """
        import os
        from nbqueue import Queue
        queue = Queue(max_workers=1).init()

        def shout():
            print("WORKER" + "-PRINT")
            os.write(1, b"WORKER" + b"-FD\\n")
            return 1
        """
    )
    assert kernel.ok("task = queue.submit(shout); task.result(60)").strip() == "1"
    assert kernel.ok("print('WORKER-PRINT' in task.output, 'WORKER-FD' in task.output)") == (
        "True True\n"
    )
    # The kernel's own fd-level output travels the pipe a leak would have taken, after it:
    # once this marker shows, a leak would have shown too.
    kernel.poll(
        "os.write(1, b'KERNEL' + b'-FD-MARK\\n')", lambda _: _seen(kernel, "KERNEL-FD-MARK")
    )
    kernel.ok("queue.shutdown()")
    cells = [text_of(cell) for cell in kernel.nb.cells]
    assert not any("WORKER-PRINT" in c or "WORKER-FD" in c for c in cells), cells


def _seen(kernel: Kernel, text: str) -> bool:
    return any(text in text_of(cell) for cell in kernel.nb.cells)
