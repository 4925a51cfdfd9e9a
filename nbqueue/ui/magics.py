"""The IPython extension: ``%load_ext nbqueue``.

It registers the ``%nbqueue`` line magic, the display of tasks (live progress bars) and
queues, and the coloured look of status frames. It is the
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

from nbqueue.ui import figures, formatters, frame, html, views

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from nbqueue.queue import Queue
    from nbqueue.records import TaskStatus
    from nbqueue.task import Task

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
                     (at least 4 characters) or a unique task name; the whole text
                     may be one name with spaces (%nbqueue cancel gbm long), else
                     each word (or 'quoted words') names a task
  output UID         what a task printed and logged (by uid, uid prefix or name)
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
  %nbqueue cancel gbm long
  %nbqueue dashboard
"""


@magics_class
class NbqueueMagics(Magics):
    """The ``%nbqueue`` magic and the registry of the notebook's current queue."""

    def __init__(self, shell: InteractiveShell, queue_type: type[Queue]) -> None:
        super().__init__(shell)
        self._queue_type = queue_type
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
            if isinstance(value, self._queue_type) and not name.startswith("_")
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
        parts = line.split(None, 1)
        command = parts[0].lower() if parts else "status"
        rest = parts[1] if len(parts) == 2 else ""
        handler = getattr(self, f"_cmd_{command}", None)
        if handler is None:
            raise UsageError(f"nbqueue: unknown command {command!r}\n\n{HELP}")
        if command == "cancel":  # it reads the text itself: a task's name may have spaces
            return self._cmd_cancel(rest.strip())
        if command == "output":  # a name may have spaces, like cancel's
            return self._cmd_output(rest.strip())
        return handler(_words(rest))

    nbqueue.__doc__ = HELP  # what %nbqueue? shows

    def _cmd_help(self, args: list[str]) -> None:
        print(HELP)

    def _cmd_status(self, args: list[str]) -> views.StatusView:
        self._no_args("status", args)
        return views.status_view(self._queue())

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
        summary = figures.summarize(queue.get_task_statuses())
        print(f"nbqueue: nothing pending or running ({summary.counts_text})")

    def _cmd_cancel(self, text: str) -> None:
        if not text:
            raise UsageError("nbqueue: usage: %nbqueue cancel UID [UID ...]")
        queue = self._queue()
        snapshots = queue.get_task_statuses()
        whole = _lookup(snapshots, text)
        keys = _words(text)
        if len(whole) == 1:
            tasks = whole
        elif whole or keys == [text]:
            tasks = [_find(snapshots, text)]  # the error says what matched, or that none did
        else:
            try:
                tasks = [_find(snapshots, key) for key in keys]
            except UsageError as exc:
                raise UsageError(
                    f"{exc} (nor is {text!r} the uid, uid prefix or name of a task)"
                ) from None
        for task in tasks:
            status = task.status.value
            if queue.cancel(task.uid):
                print(f"cancelled {task.name!r} ({task.uid[:8]}, was {status})")
            else:
                print(f"{task.name!r} ({task.uid[:8]}) is already {status}; nothing to cancel")

    def _cmd_output(self, text: str) -> None:
        if not text:
            raise UsageError("nbqueue: usage: %nbqueue output UID (or a uid prefix, or a name)")
        queue = self._queue()
        found = _find(queue.get_task_statuses(), text)
        print(found.output or f"({found.name!r} has printed nothing yet)", end="")

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
        if not isinstance(value, self._queue_type):
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


def _words(text: str) -> list[str]:
    """``text`` split as a shell would (quotes group words)."""
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"nbqueue: cannot parse {text!r}: {exc}") from None


def _lookup(snapshots: list[TaskStatus], key: str) -> list[TaskStatus]:
    """The tasks ``key`` names: the task with that uid, else those whose uid starts with it
    (when it is long enough to be a prefix), else those with that name."""
    exact = [s for s in snapshots if s.uid == key]
    if exact:
        return exact
    if len(key) >= MIN_UID_PREFIX:
        prefixed = [s for s in snapshots if s.uid.startswith(key)]
        if prefixed:
            return prefixed
    return [s for s in snapshots if s.name == key]


def _find(snapshots: list[TaskStatus], key: str) -> TaskStatus:
    """The one task ``key`` names (uid, unique uid prefix, or unique name)."""
    matches = _lookup(snapshots, key)
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UsageError(f"nbqueue: no task with uid, uid prefix or name {key!r}")
    listed = ", ".join(f"{s.name!r} ({s.uid[:8]})" for s in matches[:5])
    raise UsageError(f"nbqueue: {key!r} matches {len(matches)} tasks: {listed}; be precise")


def _frame_html(df: pandas.DataFrame) -> str | None:
    """A status frame (or a choice of its columns) as the coloured status table; any other
    DataFrame as pandas shows it."""
    if frame.is_status_frame(df):
        return html.status_table(df)
    return df._repr_html_()  # type: ignore[no-any-return,operator]


def load(shell: InteractiveShell, task_type: type[Task[Any]], queue_type: type[Queue]) -> None:
    """Register the magic, the registry hook, the display of tasks and queues, and the
    status-table look."""
    magics = NbqueueMagics(shell, queue_type)
    shell.register_magics(magics)
    shell.events.register("post_run_cell", magics.scan)
    formatters.install(shell, task_type, queue_type)
    formatter = shell.display_formatter
    assert formatter is not None
    magics.previous_frame_html = formatter.formatters["text/html"].for_type(
        pandas.DataFrame, _frame_html
    )
    magics.scan()


def unload(shell: InteractiveShell) -> None:
    """Undo :func:`load`, except the display of tasks and queues (``import nbqueue`` in a
    running IPython registers that too)."""
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
        html_formatter = formatter.formatters["text/html"]
        html_formatter.pop(pandas.DataFrame, None)
        if magics.previous_frame_html is not None:
            html_formatter.for_type(pandas.DataFrame, magics.previous_frame_html)
