"""The notebook experience in real Jupyter kernels (ipykernel, driven by nbclient): the example
notebooks run top to bottom, the kernel stays free while tasks run, waiting cells keep the
event loop (and the widgets) moving, and the %nbqueue magics work. The same code also runs
as a plain script and under asyncio.run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from helpers import html_of, mimetypes_of, poll, text_of
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
CELL_TIMEOUT = 120

pytestmark = pytest.mark.timeout(300)


class RecordingClient(NotebookClient):
    """An nbclient that also keeps every widget message it sees, with the cell it belongs
    to, and the execute replies (where IPython puts pager output such as ``%magic?``)."""

    def __init__(self, nb: Any, **kwargs: Any) -> None:
        super().__init__(nb, **kwargs)
        self.comm_log: list[tuple[int, str, dict[str, Any]]] = []
        self.replies: dict[int, dict[str, Any]] = {}
        self.on_cell_executed = self._keep_reply

    def _keep_reply(self, cell: Any, cell_index: int, execute_reply: dict[str, Any]) -> None:
        self.replies[cell_index] = execute_reply

    def handle_comm_msg(self, outs: Any, msg: dict[str, Any], cell_index: int) -> None:
        data = msg["content"].get("data", {})
        if "state" in data:
            self.comm_log.append((cell_index, msg["content"]["comm_id"], dict(data["state"])))
        super().handle_comm_msg(outs, msg, cell_index)

    def models_with_class(self, dom_class: str) -> set[str]:
        return {
            comm_id
            for _, comm_id, state in self.comm_log
            if dom_class in state.get("_dom_classes", ())
        }

    def values(self, comm_ids: set[str], cell_index: int | None = None) -> list[Any]:
        return [
            state["value"]
            for index, comm_id, state in self.comm_log
            if comm_id in comm_ids and "value" in state and cell_index in (None, index)
        ]


def errors_of(nb: Any) -> list[str]:
    return [
        f"cell {i}: {out.ename}: {out.evalue}"
        for i, cell in enumerate(nb.cells)
        for out in cell.get("outputs", [])
        if out.output_type == "error"
    ]


def find_cell(nb: Any, needle: str, *, exact: bool = False) -> tuple[int, Any]:
    """The first code cell containing ``needle`` (or, ``exact``, whose source it is)."""
    for i, cell in enumerate(nb.cells):
        source = cell.source.strip() if cell.cell_type == "code" else None
        if source is not None and (source == needle if exact else needle in source):
            return i, cell
    raise AssertionError(f"no code cell contains {needle!r}")


def run_notebook(name: str) -> tuple[Any, RecordingClient]:
    """Run notebooks/<name> top to bottom in a fresh kernel (started in notebooks/, as
    Jupyter would) and return it with its outputs."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = RecordingClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()
    assert not errors_of(nb), errors_of(nb)
    return nb, client


class Kernel:
    """One live kernel for running cells one at a time (``run``) and looking at them."""

    def __init__(self, cwd: Path) -> None:
        self.nb = new_notebook()
        self.client = RecordingClient(
            self.nb,
            timeout=CELL_TIMEOUT,
            kernel_name="python3",
            allow_errors=True,
            resources={"metadata": {"path": str(cwd)}},
        )

    def run(self, code: str) -> Any:
        cell = new_code_cell(textwrap.dedent(code))
        self.nb.cells.append(cell)
        self.client.execute_cell(cell, len(self.nb.cells) - 1)
        return cell

    def ok(self, code: str) -> str:
        """Run a cell that must not fail; its text output."""
        cell = self.run(code)
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, "\n".join(errors[0].traceback) if errors else ""
        return text_of(cell)

    def poll(self, code: str, predicate: Any, timeout: float = 60) -> str:
        """Run ``code`` as its own cell again and again, the kernel idle in between, until
        its output satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.ok(code)
            if predicate(out):
                return out
            if time.monotonic() > deadline:
                raise AssertionError(f"still {out!r} after {timeout} s")
            time.sleep(0.05)  # the kernel is idle meanwhile: that is what is being tested


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    k = Kernel(tmp_path)
    with k.client.setup_kernel():
        yield k
    # Leaving the block shuts the kernel down; its queues shut down at exit (and workers of
    # a killed kernel exit by themselves): the autouse fixture checks none is left.


# -- the example notebooks ---------------------------------------------------------------
def test_quickstart_notebook() -> None:
    nb, client = run_notebook("quickstart.ipynb")

    _, init = find_cell(nb, "queue.init()")
    assert "text/html" in mimetypes_of(init)  # the Queue's rich summary
    _, added = find_cell(nb, "queue.add(image)")
    assert "5 tasks" in html_of(added) and "pending 5" in html_of(added)

    _, dash = find_cell(nb, "queue.dashboard()")
    assert WIDGET_VIEW in mimetypes_of(dash)
    _, task_cell = find_cell(nb, "images[0]", exact=True)
    assert WIDGET_VIEW in mimetypes_of(task_cell)  # a task shows as its own live bar
    assert "compress beach" in text_of(task_cell)

    # While the waiting cell blocked, the overall bar kept moving (the loop kept turning).
    wait_index, _ = find_cell(nb, "queue.wait(")
    overall = client.models_with_class("nbqueue-overall")
    assert len(overall) == 1
    during_wait = client.values(overall, wait_index)
    assert any(0 < v < 100 for v in during_wait), during_wait

    _, email = find_cell(nb, "email.result()")
    assert "'sent_to': ['ada@example.com', 'bob@example.com']" in text_of(email)
    _, files = find_cell(nb, "['files']")
    assert "beach-1600x1200.jpg" in text_of(files) and "beach-400x300.jpg" in text_of(files)

    _, frame = find_cell(nb, "queue.status_frame()", exact=True)
    table = html_of(frame)
    assert "nbqueue-status" in table  # the extension's look for status frames
    assert table.count(">completed<") == 5 and "compress desert" in table
    assert "compress desert" in text_of(frame)  # pandas' text form is unchanged
    _, by_type = find_cell(nb, 'groupby("type")')
    assert "compress-image" in text_of(by_type) and "test-task" in text_of(by_type)

    _, status = find_cell(nb, "%nbqueue status")
    assert "completed 5: 5 / 5 finished (100%)" in text_of(status)
    assert "Send welcome email" in html_of(status) and "nbqueue-status" in html_of(status)


def test_notebook_defined_executors_notebook() -> None:
    nb, _ = run_notebook("notebook-executors.ipynb")

    _, counted = find_cell(nb, "def word_count")
    assert "'queue': 2" in text_of(counted) and "'the': 4" in text_of(counted)
    _, scaled = find_cell(nb, "make_scaler")
    assert "[3.142, 6.283, 9.425]" in text_of(scaled)
    _, fits = find_cell(nb, "class Fit")
    assert WIDGET_VIEW in mimetypes_of(fits)
    _, results = find_cell(nb, "queue.wait(timeout=120)")
    assert "'fit 1000': (21.066, 7.465)" in text_of(results)
    _, fetched = find_cell(nb, "fetched.result()")
    assert "fetched https://example.com/a" in text_of(fetched)
    _, bad = find_cell(nb, "fit nothing")
    assert "TaskValidationError" in text_of(bad) and "failed 0" in text_of(bad)
    _, status = find_cell(nb, "%nbqueue status")
    assert "completed 6, failed 1" in text_of(status)


def test_dashboard_notebook() -> None:
    nb, client = run_notebook("dashboard.ipynb")

    _, dash = find_cell(nb, "queue.dashboard()")
    assert WIDGET_VIEW in mimetypes_of(dash)
    assert "nbqueue.Queue (running): 1,000 tasks" in text_of(dash)
    _, waited = find_cell(nb, "%nbqueue wait")
    assert "nothing pending or running (completed 989, failed 11)" in text_of(waited)
    _, counts = find_cell(nb, 'groupby("status")')
    assert "completed    989" in text_of(counts) and "failed        11" in text_of(counts)
    _, failures = find_cell(nb, 'frame.status == "failed"')
    assert "ValueError: sample 13 is corrupt" in text_of(failures)
    _, total = find_cell(nb, "total = sum(")
    expected = sum(i * i for i in range(1000) if i % 97 != 13)
    assert text_of(total).strip() == str(expected)

    # A thousand tasks (several thousand events) cost the front end a bounded number of
    # updates: every bar is redrawn at most once per flush, far fewer times than events.
    overall = client.models_with_class("nbqueue-overall")
    updates = client.values(overall)
    assert 1 <= len(updates) < 1000


# -- the kernel stays free ---------------------------------------------------------------
SETUP = """
import asyncio, os, time
from pathlib import Path
from nbqueue import Queue, Task

queue = Queue(max_workers=2, tasks_per_worker=2)

@queue.register
def gated(task):
    task.update_progress(50)
    while not os.path.exists(task.data):  # held until the test (or a cell) opens the gate
        task.sleep(0.02)
    return "done"

queue.init()
print("ready")
"""


def test_cells_return_at_once_and_work_goes_on_while_the_kernel_is_idle(
    kernel: Kernel, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    assert "ready" in kernel.ok(SETUP)
    out = kernel.ok(
        f"""
        tasks = [Task(f"t{{i}}", "gated", data={str(gate)!r}) for i in range(6)]
        for t in tasks:
            queue.add(t)
        queue.run_automatically()
        # A helper thread may block on a task too (the controller notifies it).
        import threading
        from_thread = []
        waiter = threading.Thread(target=lambda: from_thread.append(tasks[0].wait(60)))
        waiter.start()
        print(queue.counts()["completed"])
        """
    )
    # The gate is closed, so nothing can have completed: the cell returned at once.
    assert out.strip() == "0"
    # Dispatch and progress arrive while the kernel sits idle between cells.
    kernel.poll(
        "print(sorted(t.progress for t in tasks if t.status == 'running'))",
        lambda out: out.strip() == "[50.0, 50.0, 50.0, 50.0]",
    )
    gate.touch()
    kernel.poll("print(queue.counts()['completed'])", lambda out: out.strip() == "6")
    assert kernel.ok("print({t.result()['value'] for t in tasks})").strip() == "{'done'}"
    kernel.poll("print(from_thread)", lambda out: "'value': 'done'" in out)
    kernel.ok("queue.shutdown()")


def test_dispatch_goes_on_while_a_cell_computes(kernel: Kernel) -> None:
    """The controller runs on a thread of its own: a cell that computes for 5 s in pure
    Python (holding the kernel's main thread) does not leave the workers idle."""
    kernel.ok(
        """
        from nbqueue import Queue
        import time

        def nap(seconds):
            time.sleep(seconds)

        queue = Queue(max_workers=2).init()
        tasks = [queue.submit(nap, 0.1) for _ in range(200)]
        time.sleep(0.5)  # the first ones are running
        """
    )
    busy = kernel.ok(
        """
        before = sum(t.done() for t in tasks)
        end = time.monotonic() + 5
        n = 0
        while time.monotonic() < end:  # pure Python: the main thread never lets go
            n += 1
        during = sum(t.done() for t in tasks) - before
        print(during)
        """
    )
    # 2 workers x 5 s / 0.1 s is 100 at best; each worker holds at most 1 + 5 tasks of
    # 0.1 s (PREFETCH_SECONDS of work), so more than 12 means dispatch went on
    assert int(busy) >= 20, busy
    kernel.ok("queue.shutdown(cancel_futures=True)")


def test_widgets_keep_updating_while_a_cell_waits(kernel: Kernel, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    kernel.ok(SETUP)
    kernel.ok("%load_ext nbqueue")
    # A thread opens the gate once the dashboard has redrawn twice while the cell below
    # waits: if waiting stopped the redraws, the tasks would never finish and the wait would
    # time out.
    kernel.ok(
        f"""
        import threading
        waiting = threading.Event()

        def opener():
            waiting.wait()
            while len(dash.flush_times) < redraws + 2:
                time.sleep(0.01)
            Path({str(gate)!r}).touch()

        tasks = [Task(f"t{{i}}", "gated", data={str(gate)!r}) for i in range(3)]
        for t in tasks:
            queue.add(t)
        dash = queue.dashboard()
        threading.Thread(target=opener, daemon=True).start()
        dash
        """
    )
    wait_cell = kernel.run(
        "redraws = len(dash.flush_times)\nwaiting.set()\nqueue.wait(timeout=60)\n"
        "print(queue.counts())"
    )
    assert "'completed': 3" in text_of(wait_cell), text_of(wait_cell)
    # task.wait() too, and the widgets were redrawn while the cell waited.
    out = kernel.ok(
        f"t = Task('late', 'gated', data={str(gate)!r}); queue.add(t); print(t.wait(30))"
    )
    assert "'value': 'done'" in out
    wait_index = kernel.nb.cells.index(wait_cell)
    updates = [state for index, _, state in kernel.client.comm_log if index == wait_index]
    assert updates, "no widget update reached the front end while the cell waited"
    kernel.ok("queue.shutdown()")


def test_interrupting_a_waiting_cell_leaves_the_kernel_usable(
    kernel: Kernel, tmp_path: Path
) -> None:
    gate, waiting = tmp_path / "gate", tmp_path / "waiting"
    kernel.ok(SETUP)
    pid = int(kernel.ok("print(os.getpid())"))
    kernel.ok(f"t = Task('held', 'gated', data={str(gate)!r}); queue.add(t)")

    def interrupt_when_waiting() -> None:
        deadline = time.monotonic() + 60
        while not waiting.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(pid, signal.SIGINT)  # what Jupyter's "interrupt kernel" does

    interrupter = threading.Thread(target=interrupt_when_waiting)
    interrupter.start()
    # "waiting" appears once the kernel's main thread is blocked inside the wait (a signal
    # that came between the two statements would interrupt the cell, not the wait)
    cell = kernel.run(
        f"""
        import sys, threading, traceback
        def mark_when_waiting(main=threading.main_thread().ident):
            while not any(f.name == "wait_until"
                          for f in traceback.extract_stack(sys._current_frames()[main])):
                time.sleep(0.01)
            Path({str(waiting)!r}).touch()
        threading.Thread(target=mark_when_waiting, daemon=True).start()
        queue.wait()
        """
    )
    interrupter.join()
    assert "KeyboardInterrupt" in text_of(cell)
    assert "wait interrupted; the queue keeps running in the background" in text_of(cell)
    # The queue went on without anyone waiting: the task finishes while the kernel idles.
    gate.touch()
    poll(lambda: kernel.ok("print(t.status)").strip() == "completed", timeout=30)
    assert "'value': 'done'" in kernel.ok("print(t.wait(30))")
    kernel.ok("queue.shutdown()")


# -- %load_ext nbqueue -------------------------------------------------------------------
def test_magics(kernel: Kernel, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    kernel.ok("%load_ext nbqueue")
    no_queue = kernel.run("%nbqueue status")
    assert "UsageError" in text_of(no_queue) and "no queue yet" in text_of(no_queue)

    kernel.ok(SETUP)
    kernel.ok(
        f"""
        held = [Task(f"held {{i}}", "gated", data={str(gate)!r}) for i in range(3)]
        for t in held:
            queue.add(t)
        """
    )
    # The extension found the queue created in the cell above.
    status = kernel.run("%nbqueue status")
    assert "pending 3" in text_of(status) and "held 2" in html_of(status)
    assert "* queue:" in kernel.ok("%nbqueue queues")

    # cancel by uid prefix and by name; unknown keys are a usage error.
    uid = kernel.ok("print(held[0].uid)").strip()
    assert f"cancelled 'held 0' ({uid[:8]}, was pending)" in kernel.ok(f"%nbqueue cancel {uid[:8]}")
    assert "cancelled 'held 1'" in kernel.ok("%nbqueue cancel 'held 1'")
    assert "already cancelled" in kernel.ok("%nbqueue cancel 'held 1'")
    # The whole text may name one task, spaces and all, without quotes.
    assert "already cancelled" in kernel.ok("%nbqueue cancel held 1")
    unknown = text_of(kernel.run("%nbqueue cancel nosuchtask"))
    assert "UsageError" in unknown and "uid prefix or name 'nosuchtask'" in unknown
    unknown = text_of(kernel.run("%nbqueue cancel held 9"))
    assert "UsageError" in unknown and "'held'" in unknown and "'held 9'" in unknown

    dash = kernel.run("%nbqueue dashboard")
    assert WIDGET_VIEW in mimetypes_of(dash)

    gate.touch()
    assert "nothing pending or running (completed 1, cancelled 2)" in kernel.ok("%nbqueue wait 60")
    workers = kernel.ok("%nbqueue workers")
    assert "nbqueue-worker-0: pid" in workers and "alive" in workers

    # A second queue becomes current when created; `use` switches back.
    kernel.ok("other = Queue(max_workers=1).init()")
    assert "* other:" in kernel.ok("%nbqueue queues")
    assert "current queue is queue" in kernel.ok("%nbqueue use queue")
    assert "completed 1, cancelled 2" in text_of(kernel.run("%nbqueue status"))
    assert "UsageError" in text_of(kernel.run("%nbqueue use nothere"))
    assert "UsageError" in text_of(kernel.run("%nbqueue frobnicate"))
    kernel.ok("other.shutdown()")

    # %nbqueue? shows the help (in the pager, which travels in the execute reply).
    help_cell = kernel.run("%nbqueue?")
    reply = kernel.client.replies[kernel.nb.cells.index(help_cell)]
    pager = json.dumps(reply["content"].get("payload", []))
    assert "cancel UID" in pager and "wait [TIMEOUT]" in pager and "dashboard" in pager
    assert "cancel UID" in kernel.ok("%nbqueue help")

    # Status frames (or a choice of their columns) show as the status table; other
    # DataFrames as pandas shows them.
    assert "nbqueue-status" in html_of(kernel.run("queue.status_frame()"))
    assert "nbqueue-status" in html_of(kernel.run("queue.status_frame()[['name', 'status']]"))
    other_frame = html_of(kernel.run("import pandas; pandas.DataFrame({'name': ['x']})"))
    assert 'class="dataframe"' in other_frame and "nbqueue-status" not in other_frame

    kernel.ok("%unload_ext nbqueue")
    assert "UsageError" in text_of(kernel.run("%nbqueue status"))
    assert 'class="dataframe"' in html_of(kernel.run("queue.status_frame()"))
    kernel.ok("queue.shutdown()")


# -- display and redraws -------------------------------------------------------------------
def test_tasks_and_queues_display_with_and_without_the_extension(
    kernel: Kernel, tmp_path: Path
) -> None:
    """``import nbqueue`` registers how a Task (live bar + HTML) and a Queue (HTML) display;
    ``%load_ext nbqueue`` keeps that, and so does ``%unload_ext``."""
    gate = tmp_path / "gate"
    kernel.ok(SETUP)
    kernel.ok(f"shown = Task('shown <b>', 'gated', data={str(gate)!r}); queue.add(shown)")
    for step in ("import only", "%load_ext nbqueue", "%unload_ext nbqueue"):
        if step != "import only":
            kernel.ok(step)
        task_cell = kernel.run("shown")
        assert {WIDGET_VIEW, "text/html", "text/plain"} <= mimetypes_of(task_cell), step
        assert "shown &lt;b&gt;" in html_of(task_cell) and "nbqueue-task" in html_of(task_cell)
        assert "<Task 'shown <b>' type='gated'" in text_of(task_cell), step
        queue_cell = kernel.run("queue")
        assert "nbqueue.Queue" in html_of(queue_cell) and "1 tasks" in html_of(queue_cell), step
        assert "<nbqueue.Queue running, 1 tasks" in text_of(queue_cell), step
    gate.touch()
    kernel.ok("shown.wait(60)\nqueue.shutdown()")


def test_widgets_move_while_a_cell_blocks_the_kernel(kernel: Kernel, tmp_path: Path) -> None:
    """Redraws do not need the kernel's event loop: with the controller on a thread of its
    own, a cell that blocks in time.sleep still sees the dashboard's bar reach 100 %, and
    the widget updates reach the front end on behalf of that cell."""
    gate = tmp_path / "gate"
    kernel.ok(
        """
        import os, threading, time
        from nbqueue import Queue, Task

        queue = Queue(max_workers=2)

        @queue.register
        def gated(task):
            task.update_progress(50)
            while not os.path.exists(task.data):
                task.sleep(0.02)
            return "done"

        # init() from a thread without an event loop: the controller gets a loop thread
        # of its own (as every controller will), so it goes on while this kernel is busy.
        starter = threading.Thread(target=queue.init)
        starter.start()
        starter.join()
        """
    )
    dash_cell = kernel.run(
        f"""
        tasks = [Task(f"t{{i}}", "gated", data={str(gate)!r}) for i in range(4)]
        for t in tasks:
            queue.add(t)
        queue.run_automatically()
        dash = queue.dashboard()
        dash
        """
    )
    assert WIDGET_VIEW in mimetypes_of(dash_cell)
    kernel.poll("print(queue.counts()['running'])", lambda out: out.strip() == "2")
    blocked = kernel.run(
        f"""
        open({str(gate)!r}, "w").close()  # the tasks may finish now
        deadline = time.monotonic() + 60
        while dash.percent < 100 and time.monotonic() < deadline:
            time.sleep(0.05)  # the kernel's loop does not turn meanwhile
        print(dash.percent, threading.main_thread() is threading.current_thread())
        """
    )
    assert text_of(blocked).strip() == "100.0 True"
    index = kernel.nb.cells.index(blocked)
    overall = kernel.client.models_with_class("nbqueue-overall")
    assert 100.0 in kernel.client.values(overall, index)
    kernel.ok("queue.shutdown()")


# -- the same code outside a notebook ----------------------------------------------------
SAME_CODE = """
from nbqueue import Queue, Task

def double(task):
    task.update_progress(50)
    return task.data * 2

queue = Queue(max_workers=1)
queue.register(double)
queue.init()
tasks = [Task(f"t{i}", "double", data=i) for i in range(4)]
for t in tasks:
    queue.add(t)
queue.run_automatically()
queue.wait(60)
print("results", [t.result()["value"] for t in tasks], tasks[-1].wait(10)["value"])
print(queue.dashboard())
queue.shutdown()
"""


def _run_script(source: str, tmp_path: Path) -> str:
    script = tmp_path / "script.py"
    script.write_text(source)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_same_code_runs_as_a_script_under_asyncio_run_and_in_a_kernel(
    kernel: Kernel, tmp_path: Path
) -> None:
    # A script guards its entry point, as every script whose workers are spawned must.
    body = textwrap.indent(SAME_CODE, "    ")
    as_script = _run_script(
        f"def main():\n{body}\nif __name__ == '__main__':\n    main()\n", tmp_path
    )
    under_asyncio = _run_script(
        f"import asyncio\n\nasync def main():\n{body}\n"
        "if __name__ == '__main__':\n    asyncio.run(main())\n",
        tmp_path,
    )
    in_kernel = kernel.ok(SAME_CODE)
    for out in (as_script, under_asyncio, in_kernel):
        assert "results [0, 2, 4, 6] 6" in out, out
    # print(queue.dashboard()) prints the same text snapshot everywhere (in a notebook the
    # dashboard is a live widget when displayed instead of printed).
    for out in (as_script, under_asyncio, in_kernel):
        assert "[####################] 4 / 4 finished (100%)\ncompleted 4" in out, out


def test_cells_queued_behind_a_waiting_cell_all_run(tmp_path: Path) -> None:
    """Run All sends every cell at once: those that arrive while a cell waits must run
    afterwards, in order."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        setup = kc.execute(SETUP)
        # Replies to the kernel_info requests of the start-up may still come first.
        while (reply := kc.get_shell_msg(timeout=CELL_TIMEOUT))["msg_type"] == "kernel_info_reply":
            pass
        assert reply["parent_header"]["msg_id"] == setup
        gate = tmp_path / "gate"
        # The gate opens a moment after the wait starts, by which time the cells sent with
        # it have reached the kernel.
        waiting = f"""
import threading
queue.add(Task("held", "gated", data={str(gate)!r}))
threading.Timer(0.5, Path({str(gate)!r}).touch).start()
queue.wait(60)
print("waited")
"""
        cells = [waiting] + [f"print('after {i}')" for i in range(3)] + ["queue.shutdown()"]
        ids = [kc.execute(code) for code in cells]
        replies = [kc.get_shell_msg(timeout=CELL_TIMEOUT) for _ in ids]
        assert [r["parent_header"]["msg_id"] for r in replies] == ids
        assert [r["content"]["status"] for r in replies] == ["ok"] * len(ids)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
