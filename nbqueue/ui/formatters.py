"""How IPython displays a Task and a Queue: registered formatters, not ``_repr_*`` methods,
so that the task model and the queue know nothing of presentation.

``import nbqueue`` inside a running IPython registers them (:func:`install_in_running_ipython`;
IPython is never imported otherwise), and so does ``%load_ext nbqueue``. A Task shows as
its live progress bar in a notebook kernel (with ipywidgets) plus static HTML; a Queue as
its HTML summary.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from nbqueue.ui import html, views

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from nbqueue.queue import Queue
    from nbqueue.task import Task


def task_html(task: Task[Any]) -> str:
    """A task's static HTML summary."""
    return html.task_summary(task.get_status())


def queue_html(queue: Queue) -> str:
    """A queue's HTML summary (one snapshot of its tasks)."""
    return html.queue_summary(queue, queue.get_task_statuses())


def task_mimebundle(task: Task[Any], include: Any = None, exclude: Any = None) -> Any:
    """The live bar and the static HTML in a kernel; None elsewhere (the HTML then)."""
    return views.task_mimebundle(task)


def install(shell: InteractiveShell, task_type: type[Task[Any]], queue_type: type[Queue]) -> None:
    """Register the formatters for ``task_type`` and ``queue_type`` (and their subclasses)
    with ``shell``; doing it again changes nothing."""
    formatter = shell.display_formatter
    if formatter is None:
        return
    formatter.mimebundle_formatter.for_type(task_type, task_mimebundle)
    html_formatter = formatter.formatters["text/html"]
    html_formatter.for_type(task_type, task_html)
    html_formatter.for_type(queue_type, queue_html)


def install_in_running_ipython(task_type: type[Task[Any]], queue_type: type[Queue]) -> None:
    """:func:`install` into the running IPython shell, if there is one."""
    ipython = sys.modules.get("IPython")
    shell = None if ipython is None else ipython.get_ipython()
    if shell is not None:
        install(shell, task_type, queue_type)
