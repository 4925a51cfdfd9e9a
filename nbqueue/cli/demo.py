"""``nbqueue demo``: the example task files (``tasks/`` in a checkout, a packaged copy
otherwise) run through a queue kept in an SQLite file, with their progress in the
terminal, then the status table."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import nbqueue
from nbqueue.cli import common
from nbqueue.queue import Queue
from nbqueue.records import Status
from nbqueue.task import Task
from nbqueue.ui import figures, frame, text

#: How often the demo redraws its progress (it waits on the queue in between, no busy loop).
POLL_SECONDS = 0.1
DEFAULT_DEMO_COUNT = 12
DEFAULT_DEMO_WORKERS = 2
DEFAULT_DEMO_TIMEOUT = 120.0
#: The demo's queue lives in this SQLite file in the working directory.
DEFAULT_DEMO_DB = "sqlite:///nbqueue-demo.db"
#: The example files the demo needs in its task directory.
DEMO_FILES = ("test-task.py", "compress-image.py", "_models.py")


def add_parser(commands: Any) -> None:
    """Add ``demo`` to the subcommands."""
    parser = commands.add_parser(
        "demo",
        help="run the example tasks and watch their progress",
        description="Run a mix of the example tasks (test-task and compress-image, some with "
        "a higher priority, one with invalid data that fails validation) in worker "
        "processes, show their progress, then print the status table.",
    )
    parser.add_argument(
        "--tasks",
        type=Path,
        metavar="DIR",
        help="task directory holding the example files (default: the bundled examples)",
    )
    parser.add_argument(
        "--count",
        type=common.positive_int,
        default=DEFAULT_DEMO_COUNT,
        metavar="N",
        help=f"how many tasks to run (default: {DEFAULT_DEMO_COUNT})",
    )
    parser.add_argument(
        "--workers",
        type=common.positive_int,
        default=DEFAULT_DEMO_WORKERS,
        metavar="N",
        help=f"worker processes (default: {DEFAULT_DEMO_WORKERS})",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_DEMO_TIMEOUT,
        metavar="SECONDS",
        help=f"give up after this long (default: {DEFAULT_DEMO_TIMEOUT:g})",
    )
    parser.add_argument(
        "--db",
        default=DEFAULT_DEMO_DB,
        metavar="URL",
        help=f"queue database (default: {DEFAULT_DEMO_DB}, a file in the working directory; "
        "'memory' keeps the queue in memory)",
    )
    parser.set_defaults(run=run)


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


def run(args: argparse.Namespace) -> int:
    """``nbqueue demo``."""
    tasks_dir: Path | None = args.tasks or default_tasks_dir()
    if tasks_dir is None:
        return common.error("the example task files were not found; pass --tasks DIR")
    missing = [name for name in DEMO_FILES if not (tasks_dir / name).is_file()]
    if missing:
        return common.error(f"{tasks_dir} lacks the demo's example files: {', '.join(missing)}")
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
            return common.error(f"example task files failed to import: {sorted(broken)}", status=1)
        email_class = _import_models(tasks_dir).Email
        tasks, invalid = demo_tasks(args.count, email_class)
        for task in tasks:
            queue.add(task)
        if not watch(queue, out, args.timeout):
            return common.error(f"the demo did not finish within {args.timeout:g} s", status=1)
        print(file=out)
        print(text.status_table(frame.status_frame([t.get_status() for t in tasks])), file=out)
        print(file=out)
        return report(tasks, invalid, time.monotonic() - started, out)
    finally:
        queue.shutdown()


def watch(queue: Queue, out: TextIO, timeout: float) -> bool:
    """Process the queue until it is idle, redrawing the progress every POLL_SECONDS;
    False when ``timeout`` seconds pass first."""
    view = text.ProgressLine(out)
    deadline = time.monotonic() + timeout
    try:
        while True:
            view.update(queue.get_task_statuses())
            try:
                queue.wait(timeout=min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
                view.update(queue.get_task_statuses())
                return True
            except TimeoutError:
                if time.monotonic() >= deadline:
                    return False
    finally:
        view.close()


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
    counts = figures.summarize(t.get_status() for t in tasks).counts_text
    print(f"nbqueue demo: {counts} in {elapsed:.1f} s", file=out)
    if unexpected:
        names = ", ".join(f"{t.name} ({t.status.value})" for t in unexpected)
        print(f"nbqueue demo: unexpected outcome for: {names}", file=sys.stderr)
        return 1
    if invalid is not None:
        print("(the failure is expected: that task's data does not pass validation)", file=out)
    return 0


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
