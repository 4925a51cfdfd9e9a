"""The ``nbqueue`` command line.

``nbqueue demo`` runs the example task files (``tasks/`` in a checkout, a packaged copy
otherwise) through a queue kept in an SQLite file and shows their progress in the terminal;
``nbqueue status --db URL`` prints the status table of any queue database.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import nbqueue
from nbqueue import frame
from nbqueue.errors import NbqueueError
from nbqueue.queue import Queue
from nbqueue.task import Status, Task

if TYPE_CHECKING:
    import pandas

#: How often the demo redraws its progress (it waits on the queue in between, no busy loop).
POLL_SECONDS = 0.1
DEFAULT_DEMO_COUNT = 12
DEFAULT_DEMO_WORKERS = 2
DEFAULT_DEMO_TIMEOUT = 120.0
#: The demo's queue lives in this SQLite file in the working directory.
DEFAULT_DEMO_DB = "sqlite:///nbqueue-demo.db"
#: The example files the demo needs in its task directory.
DEMO_FILES = ("test-task.py", "compress-image.py", "_models.py")
#: The status table's columns, and how wide a cell may get before it is shortened.
TABLE_COLUMNS = ["name", "type", "status", "priority", "progress", "retry_count", "duration",
                 "worker", "error"]  # fmt: skip
TABLE_CELL_WIDTH = 48
BAR_WIDTH = 24


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nbqueue`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except NbqueueError as exc:
        return _error(str(exc))
    except KeyboardInterrupt:  # the queue has been shut down on the way out
        print("\nnbqueue: interrupted", file=sys.stderr)
        return 130


def _error(message: str, status: int = 2) -> int:
    print(f"nbqueue: error: {message}", file=sys.stderr)
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nbqueue", description="nbqueue: a task queue for Jupyter, from the command line."
    )
    parser.add_argument("--version", action="version", version=f"nbqueue {nbqueue.__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help="run the example tasks and watch their progress",
        description="Run a mix of the example tasks (test-task and compress-image, some with "
        "a higher priority, one with invalid data that fails validation) in worker "
        "processes, show their progress, then print the status table.",
    )
    demo.add_argument(
        "--tasks",
        type=Path,
        metavar="DIR",
        help="task directory holding the example files (default: the bundled examples)",
    )
    demo.add_argument(
        "--count",
        type=_positive_int,
        default=DEFAULT_DEMO_COUNT,
        metavar="N",
        help=f"how many tasks to run (default: {DEFAULT_DEMO_COUNT})",
    )
    demo.add_argument(
        "--workers",
        type=_positive_int,
        default=DEFAULT_DEMO_WORKERS,
        metavar="N",
        help=f"worker processes (default: {DEFAULT_DEMO_WORKERS})",
    )
    demo.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_DEMO_TIMEOUT,
        metavar="SECONDS",
        help=f"give up after this long (default: {DEFAULT_DEMO_TIMEOUT:g})",
    )
    demo.add_argument(
        "--db",
        default=DEFAULT_DEMO_DB,
        metavar="URL",
        help=f"queue database (default: {DEFAULT_DEMO_DB}, a file in the working directory; "
        "'memory' keeps the queue in memory)",
    )
    demo.set_defaults(run=run_demo)

    status = commands.add_parser(
        "status",
        help="print the status table of a queue database",
        description="Print every task of a queue database (SQLite or PostgreSQL): counts per "
        "status, then one row per task.",
    )
    status.add_argument("--db", required=True, metavar="URL", help="the queue's database URL")
    status.add_argument("--table", default="tasks", help="the tasks table (default: tasks)")
    status.set_defaults(run=run_status)

    worker = commands.add_parser(
        "worker",
        help="run tasks from a shared queue database (a worker host)",
        description="Join a shared queue: claim ready tasks from the database, run them in "
        "worker processes here, write progress and results back. SIGTERM or Ctrl-C drains "
        "(finishes what runs, hands back the rest); a second Ctrl-C stops at once. Every "
        "option can also come from an environment variable.",
    )
    worker.add_argument(
        "--db", default=_env("NBQUEUE_DB"), metavar="URL", help="queue database ($NBQUEUE_DB)"
    )
    worker.add_argument(
        "--tasks",
        type=Path,
        default=_env("NBQUEUE_TASKS"),
        metavar="DIR",
        help="task directory ($NBQUEUE_TASKS; executors registered in a notebook come "
        "from the database)",
    )
    worker.add_argument(
        "--processes",
        type=_positive_int,
        default=_env("NBQUEUE_PROCESSES", "2"),
        metavar="N",
        help="worker processes ($NBQUEUE_PROCESSES, default 2)",
    )
    worker.add_argument(
        "--concurrency",
        type=_positive_int,
        default=_env("NBQUEUE_CONCURRENCY", "3"),
        metavar="N",
        help="tasks at once per process ($NBQUEUE_CONCURRENCY, default 3)",
    )
    worker.add_argument(
        "--name",
        default=_env("NBQUEUE_WORKER_NAME"),
        help="this host's name in the database ($NBQUEUE_WORKER_NAME, default HOSTNAME-PID)",
    )
    worker.add_argument(
        "--lease",
        type=float,
        default=_env("NBQUEUE_LEASE_SECONDS", "30"),
        metavar="SECONDS",
        help="lease on a claimed task, renewed while it runs ($NBQUEUE_LEASE_SECONDS, "
        "default 30): a dead host's tasks are claimed again after it",
    )
    worker.set_defaults(run=run_worker)
    return parser


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name) or default


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


# -- demo --------------------------------------------------------------------------------------
def default_tasks_dir() -> Path | None:
    """The example task directory: ``tasks/`` next to the package in a source checkout, else
    the copy packaged as ``nbqueue/_demo_tasks``."""
    package = Path(nbqueue.__file__).resolve().parent
    for candidate in (package.parent / "tasks", package / "_demo_tasks"):
        if all((candidate / name).is_file() for name in DEMO_FILES):
            return candidate
    return None


def open_queue(args: argparse.Namespace, tasks_dir: Path) -> Queue:
    """The demo's queue: in the database ``--db`` names, or in memory."""
    db = None if args.db == "memory" else args.db
    return Queue(tasks_dir, db=db, max_workers=args.workers)


def demo_tasks(count: int, email_class: Any) -> tuple[list[Task[Any]], Task[Any] | None]:
    """``count`` example tasks: compress-image and test-task alternately, every third one
    with a higher priority, and (from two tasks on) one whose data fails validation.
    Returns the tasks and that invalid one."""
    tasks: list[Task[Any]] = []
    invalid: Task[Any] | None = None
    for i in range(count):
        priority = 5 if i % 3 == 2 else 0
        if count >= 2 and i == count - 1:
            invalid = Task(
                "welcome email (bad data)",
                "test-task",
                description="data['email'] is a string, not an Email: fails validation",
                data={"email": "someone@example.com"},
            )
            tasks.append(invalid)
        elif i % 2 == 0:
            n_sizes = 3 + i % 3
            sizes = [{"width": 64 * (k + 1), "height": 48 * (k + 1)} for k in range(n_sizes)]
            tasks.append(
                Task(
                    f"compress photo-{i:02d}.jpg",
                    "compress-image",
                    priority=priority,
                    data={"image": f"photo-{i:02d}.jpg", "sizes": sizes},
                )
            )
        else:
            email = email_class(
                to=[f"user{i}@example.com"], sender="hello@example.com", subject="Welcome!"
            )
            tasks.append(
                Task(f"welcome email #{i}", "test-task", priority=priority, data={"email": email})
            )
    return tasks, invalid


def run_demo(args: argparse.Namespace) -> int:
    tasks_dir: Path | None = args.tasks or default_tasks_dir()
    if tasks_dir is None:
        return _error("the example task files were not found; pass --tasks DIR")
    missing = [name for name in DEMO_FILES if not (tasks_dir / name).is_file()]
    if missing:
        return _error(f"{tasks_dir} lacks the demo's example files: {', '.join(missing)}")
    tasks_dir = tasks_dir.resolve()
    out = sys.stdout
    where = "in memory" if args.db == "memory" else f"in {args.db}"
    print(
        f"nbqueue demo: {args.count} tasks from {tasks_dir}, {args.workers} worker(s), "
        f"queue {where}",
        file=out,
    )
    started = time.monotonic()
    bundled = tasks_dir == Path(nbqueue.__file__).resolve().parent / "_demo_tasks"
    queue = open_queue(args, tasks_dir)
    try:
        # The packaged copy lives inside the installed package: no typing stub there.
        with _environ("NBQUEUE_GENERATE_TYPES", "false" if bundled else None):
            queue.init()
        broken = {"test-task", "compress-image"} & set(queue.import_errors)
        if broken:
            return _error(f"example task files failed to import: {sorted(broken)}", status=1)
        email_class = _import_models(tasks_dir).Email
        tasks, invalid = demo_tasks(args.count, email_class)
        for task in tasks:
            queue.add(task)
        if not watch(queue, out, args.timeout):
            return _error(f"the demo did not finish within {args.timeout:g} s", status=1)
        print(file=out)
        print(status_table(queue, tasks), file=out)
        print(file=out)
        return report(tasks, invalid, time.monotonic() - started, out)
    finally:
        queue.shutdown()


def watch(queue: Queue, out: TextIO, timeout: float) -> bool:
    """Process the queue until it is idle, redrawing the progress every POLL_SECONDS;
    False when ``timeout`` seconds pass first."""
    view = ProgressView(out)
    deadline = time.monotonic() + timeout
    try:
        while True:
            view.update(queue)
            try:
                queue.wait(timeout=min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
                view.update(queue)
                return True
            except TimeoutError:
                if time.monotonic() >= deadline:
                    return False
    finally:
        view.close()


class ProgressView:
    """One progress line: a bar for the overall percent and the count per status. On a
    terminal it is redrawn in place; otherwise a line is printed when the counts change."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self._last = ""

    def update(self, queue: Queue) -> None:
        tasks = queue.tasks
        counts = {status: n for status, n in queue.counts().items() if n}
        summary = "  ".join(f"{status} {n}" for status, n in counts.items())
        if self.tty:
            width = shutil.get_terminal_size().columns - 1
            line = f"{progress_bar(overall_percent(tasks))}  {summary}"[:width]
            if line == self._last:
                return
            self.out.write("\r" + line.ljust(max(width, len(self._last)))[:width])
            self._last = line
            self.out.flush()
        elif summary != self._last:
            self.out.write(f"{overall_percent(tasks):5.1f}%  {summary}\n")
            self._last = summary
            self.out.flush()

    def close(self) -> None:
        if self.tty:
            self.out.write("\n")
            self.out.flush()


def overall_percent(tasks: Sequence[Task[Any]]) -> float:
    """Finished tasks count as 100%, the others with their progress."""
    if not tasks:
        return 100.0
    return sum(100.0 if t.status.finished else t.progress for t in tasks) / len(tasks)


def progress_bar(percent: float) -> str:
    filled = round(BAR_WIDTH * percent / 100)
    return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {percent:5.1f}%"


def status_table(queue: Queue, tasks: Sequence[Task[Any]]) -> str:
    """The status frame of ``tasks`` with the columns that fit a terminal."""
    return format_table(frame.status_frame(list(tasks)))


def format_table(table: pandas.DataFrame) -> str:
    return table[TABLE_COLUMNS].to_string(
        index=False,
        na_rep="",
        max_colwidth=TABLE_CELL_WIDTH,
        formatters={"progress": "{:.0f}%".format, "duration": _seconds},
    )


def _seconds(value: float) -> str:
    return "" if value != value else f"{value:.2f}s"  # NaN for tasks that never started


def report(tasks: list[Task[Any]], invalid: Task[Any] | None, elapsed: float, out: TextIO) -> int:
    """Print what happened; 0 when every task ended as the demo expects (all completed,
    the invalid one failed validation), else 1."""
    for task in tasks:
        if task.status is Status.FAILED:
            print(f"  {task.name} failed: {task.error}", file=out)
    unexpected = []
    for task in tasks:
        if task is invalid:
            ok = (
                task.status is Status.FAILED
                and task.error is not None
                and (task.error.type == "TaskValidationError")
            )
        else:
            ok = task.status is Status.COMPLETED
        if not ok:
            unexpected.append(task)
    counts = ", ".join(
        f"{sum(t.status is s for t in tasks)} {s.value}"
        for s in Status
        if any(t.status is s for t in tasks)
    )
    print(f"nbqueue demo: {counts} in {elapsed:.1f} s", file=out)
    if unexpected:
        names = ", ".join(f"{t.name} ({t.status.value})" for t in unexpected)
        print(f"nbqueue demo: unexpected outcome for: {names}", file=sys.stderr)
        return 1
    if invalid is not None:
        print("(the failure is expected: that task's data does not pass validation)", file=out)
    return 0


# -- worker ----------------------------------------------------------------------------------
def run_worker(args: argparse.Namespace) -> int:
    from nbqueue import host

    if not args.db:
        return _error("a database is needed: --db URL or NBQUEUE_DB")
    if args.tasks is not None and not Path(args.tasks).is_dir():
        return _error(f"--tasks {args.tasks} is not a directory")
    return host.serve(
        args.db,
        None if args.tasks is None else Path(args.tasks),
        processes=int(args.processes),
        concurrency=int(args.concurrency),
        name=args.name or host.default_name(),
        lease_seconds=float(args.lease),
    )


# -- status ----------------------------------------------------------------------------------
def run_status(args: argparse.Namespace) -> int:
    from nbqueue import rows, store

    adapter = store.make_adapter(args.db, table=args.table)
    assert adapter is not None
    try:
        stored = adapter.load()
        hosts = adapter.load_hosts()
    finally:
        adapter.close()
    stored.sort(key=lambda row: row["created_at"])
    # the classes in a task's data may not be importable here: states only
    tasks = [rows.task_or_placeholder(row, inputs=False)[0] for row in stored]
    counts = ", ".join(f"{n} {s.value}" for s in Status if (n := sum(t.status is s for t in tasks)))
    print(f"{len(tasks)} task(s) in {args.db} table {args.table!r}: {counts or 'none'}")
    if tasks:
        print(format_table(frame.status_frame(tasks)))
    print(f"\n{len(hosts)} worker host(s)")
    if hosts:
        print(hosts_table(hosts))
    return 0


def hosts_table(hosts: list[dict[str, Any]]) -> str:
    """Worker hosts: name, where, last heartbeat (seconds ago), running / capacity."""
    import datetime as dt

    import pandas

    now = dt.datetime.now(dt.timezone.utc)
    table = pandas.DataFrame(
        {
            "name": [h["name"] for h in hosts],
            "hostname": [h["hostname"] for h in hosts],
            "pid": [h["pid"] for h in hosts],
            "last heartbeat": [f"{(now - h['last_seen']).total_seconds():.0f}s ago" for h in hosts],
            "running": [f"{h['running']}/{h['capacity']}" for h in hosts],
        }
    )
    return table.to_string(index=False)


def _import_models(tasks_dir: Path) -> Any:
    """The examples' ``_models`` module, imported the way test-task.py imports it (so an
    Email made here unpickles in the workers as ``_models.Email``)."""
    if str(tasks_dir) not in sys.path:
        sys.path.insert(0, str(tasks_dir))
    return importlib.import_module("_models")


@contextlib.contextmanager
def _environ(name: str, value: str | None) -> Iterator[None]:
    """Set an environment variable for the duration of the block (None: leave it)."""
    if value is None:
        yield
        return
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


if __name__ == "__main__":
    raise SystemExit(main())
