"""The IPython extension: ``%load_ext nbqueue``.

It registers the ``%nbqueue`` line magic and shows tasks as live progress bars. It is the
one place that knows a "current queue": the queue most recently created in the notebook
(found in the user's namespace after each cell), or the one picked with
``%nbqueue use NAME``. Nothing else in nbqueue keeps such a global.
"""

from __future__ import annotations

import shlex
import weakref
from typing import TYPE_CHECKING, Any

import pandas
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class

from nbqueue import display, frame
from nbqueue.queue import Queue
from nbqueue.task import Task

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

#: Shortest uid prefix ``%nbqueue cancel`` accepts.
MIN_UID_PREFIX = 4

HELP = """\
%nbqueue COMMAND [ARGS]: inspect and steer the current nbqueue.Queue.

The current queue is the one most recently created in this notebook (the extension looks
for new Queue objects in your variables after each cell), or the one chosen with
`%nbqueue use NAME`.

Commands:
  status             counts per status and the status table (the default command)
  wait [TIMEOUT]     process until nothing is pending or running; widgets keep moving
                     meanwhile. TIMEOUT in seconds raises TimeoutError when it passes
  cancel UID [...]   cancel pending or running tasks, by uid, a unique uid prefix
                     (at least 4 characters) or a unique task name
  dashboard          the live dashboard: overall bar, a bar per running task, recent
                     failures, status table
  workers            the worker processes
  use NAME           make the Queue in variable NAME the current queue
  queues             the queues this notebook holds, and which one is current
  help               this text

Examples:
  %nbqueue status
  %nbqueue wait 600
  %nbqueue cancel 3f2a9c1e
  %nbqueue dashboard
"""


@magics_class
class NbqueueMagics(Magics):
    """The ``%nbqueue`` magic and the registry of the notebook's current queue."""

    def __init__(self, shell: InteractiveShell) -> None:
        super().__init__(shell)
        self._seen: weakref.WeakSet[Queue] = weakref.WeakSet()
        self._current: weakref.ref[Queue] | None = None
        self._current_name: str | None = None
        #: The DataFrame HTML printer that was registered before ours (restored on unload).
        self.previous_frame_html: Any = None

    # -- the registry ----------------------------------------------------------------------
    def _namespace_queues(self) -> list[tuple[str, Queue]]:
        assert self.shell is not None
        return [
            (name, value)
            for name, value in list(self.shell.user_ns.items())
            if isinstance(value, Queue) and not name.startswith("_")
        ]

    def scan(self, *_: Any) -> None:
        """Note queues that appeared in the user's namespace; the newest becomes current.
        Runs after every cell (a ``post_run_cell`` hook) and before every command."""
        for name, queue in self._namespace_queues():
            if queue not in self._seen:
                self._seen.add(queue)
                self.use(queue, name)

    def use(self, queue: Queue, name: str | None = None) -> None:
        """Make ``queue`` the current queue."""
        self._current = weakref.ref(queue)
        self._current_name = name

    @property
    def current(self) -> Queue | None:
        """The current queue, or None when the notebook has none."""
        self.scan()
        return None if self._current is None else self._current()

    def _queue(self) -> Queue:
        queue = self.current
        if queue is None:
            raise UsageError(
                "nbqueue: no queue yet. Create one (queue = nbqueue.Queue(...)) or pick one "
                "with %nbqueue use NAME"
            )
        return queue

    # -- the magic -------------------------------------------------------------------------
    @line_magic
    def nbqueue(self, line: str) -> Any:
        """See HELP (``%nbqueue?`` shows it)."""
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"nbqueue: cannot parse {line!r}: {exc}") from None
        command, args = (words[0].lower(), words[1:]) if words else ("status", [])
        handler = getattr(self, f"_cmd_{command}", None)
        if handler is None:
            raise UsageError(f"nbqueue: unknown command {command!r}\n\n{HELP}")
        return handler(args)

    nbqueue.__doc__ = HELP  # what %nbqueue? shows

    def _cmd_help(self, args: list[str]) -> None:
        print(HELP)

    def _cmd_status(self, args: list[str]) -> display.StatusView:
        self._no_args("status", args)
        return display.status_view(self._queue())

    def _cmd_dashboard(self, args: list[str]) -> Any:
        self._no_args("dashboard", args)
        return self._queue().dashboard()

    def _cmd_wait(self, args: list[str]) -> None:
        if len(args) > 1:
            raise UsageError("nbqueue: usage: %nbqueue wait [TIMEOUT_SECONDS]")
        timeout: float | None = None
        if args:
            try:
                timeout = float(args[0])
            except ValueError:
                raise UsageError(
                    f"nbqueue: TIMEOUT must be a number of seconds, got {args[0]!r}"
                ) from None
        queue = self._queue()
        queue.wait(timeout)
        counts = ", ".join(f"{k} {v}" for k, v in queue.counts().items() if v)
        print(f"nbqueue: nothing pending or running ({counts or 'no tasks'})")

    def _cmd_cancel(self, args: list[str]) -> None:
        if not args:
            raise UsageError("nbqueue: usage: %nbqueue cancel UID [UID ...]")
        queue = self._queue()
        tasks = [self._find(queue, key) for key in args]
        for task in tasks:
            status = task.status.value
            if queue.cancel(task.uid):
                print(f"cancelled {task.name!r} ({task.uid[:8]}, was {status})")
            else:
                print(f"{task.name!r} ({task.uid[:8]}) is already {status}; nothing to cancel")

    def _cmd_workers(self, args: list[str]) -> None:
        self._no_args("workers", args)
        workers = self._queue().workers()
        if not workers:
            print("no local workers")
        for w in workers:
            state = "alive" if w.alive else "stopped"
            print(
                f"{w.name}: pid {w.pid}, {state}, running {w.running}/{w.capacity}, "
                f"restarts {w.restarts}"
            )

    def _cmd_use(self, args: list[str]) -> None:
        if len(args) != 1:
            raise UsageError("nbqueue: usage: %nbqueue use NAME")
        assert self.shell is not None
        name = args[0]
        if name not in self.shell.user_ns:
            raise UsageError(f"nbqueue: no variable {name!r} in this notebook")
        value = self.shell.user_ns[name]
        if not isinstance(value, Queue):
            raise UsageError(f"nbqueue: {name!r} is a {type(value).__name__}, not a Queue")
        self._seen.add(value)
        self.use(value, name)
        print(f"nbqueue: current queue is {name} {value!r}")

    def _cmd_queues(self, args: list[str]) -> None:
        self._no_args("queues", args)
        current = self.current
        found = self._namespace_queues()
        if not found:
            print("no queues in this notebook's variables")
        for name, queue in found:
            print(f"{'*' if queue is current else ' '} {name}: {queue!r}")

    @staticmethod
    def _no_args(command: str, args: list[str]) -> None:
        if args:
            raise UsageError(f"nbqueue: {command} takes no arguments, got {' '.join(args)!r}")

    @staticmethod
    def _find(queue: Queue, key: str) -> Task[Any]:
        """A task by uid, unique uid prefix, or unique name."""
        task = queue.get_task(key)
        if task is not None:
            return task
        tasks = queue.tasks
        matches = [t for t in tasks if t.uid.startswith(key)] if len(key) >= MIN_UID_PREFIX else []
        if not matches:
            matches = [t for t in tasks if t.name == key]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise UsageError(f"nbqueue: no task with uid, uid prefix or name {key!r}")
        listed = ", ".join(f"{t.name!r} ({t.uid[:8]})" for t in matches[:5])
        raise UsageError(f"nbqueue: {key!r} matches {len(matches)} tasks: {listed}; be precise")


def _task_bundle(task: Task[Any]) -> dict[str, Any] | None:
    return display.task_mimebundle(task)


def _frame_html(df: Any) -> str | None:
    """A status frame (exactly the columns of ``queue.status_frame()``) as the coloured
    status table; any other DataFrame as pandas shows it."""
    if df.attrs.get("nbqueue") == "status" and set(df.columns) <= set(frame.COLUMNS):
        return display.status_table_html(df)
    return df._repr_html_()  # type: ignore[no-any-return]


def load(shell: InteractiveShell) -> None:
    """Register the magic, the registry hook, live task bars and the status-table look."""
    magics = NbqueueMagics(shell)
    shell.register_magics(magics)
    shell.events.register("post_run_cell", magics.scan)
    formatter = shell.display_formatter
    assert formatter is not None
    formatter.mimebundle_formatter.for_type(Task, _task_bundle)
    magics.previous_frame_html = formatter.formatters["text/html"].for_type(
        pandas.DataFrame, _frame_html
    )
    magics.scan()


def unload(shell: InteractiveShell) -> None:
    """Undo :func:`load`."""
    magics = shell.magics_manager.registry.pop(NbqueueMagics.__name__, None)
    if magics is None:
        return
    try:
        shell.events.unregister("post_run_cell", magics.scan)
    except ValueError:
        pass
    shell.magics_manager.magics["line"].pop("nbqueue", None)
    formatter = shell.display_formatter
    if formatter is not None:
        formatter.mimebundle_formatter.pop(Task, None)
        html = formatter.formatters["text/html"]
        html.pop(pandas.DataFrame, None)
        if magics.previous_frame_html is not None:
            html.for_type(pandas.DataFrame, magics.previous_frame_html)


def extension(shell: InteractiveShell) -> NbqueueMagics | None:
    """The loaded extension of ``shell`` (its magics and current-queue registry), if any."""
    magics = shell.magics_manager.registry.get(NbqueueMagics.__name__)
    return magics if isinstance(magics, NbqueueMagics) else None
