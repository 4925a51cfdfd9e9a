"""The one definition of each figure nbqueue shows.

The dashboard, the HTML summaries, the text snapshot, the status table and the command
line all compute their figures here, from :class:`~nbqueue.task.TaskStatus` snapshots (one
list of them per drawing), so that they never disagree: "percent finished" is the share of
tasks that have finished (completed, failed or cancelled) everywhere, a task's elapsed time
is the same number in the table and on its bar, and so on.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import heapq
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from nbqueue import records

if TYPE_CHECKING:
    from nbqueue.backends.base import WorkerInfo
    from nbqueue.records import Status, TaskStatus

#: The order statuses are listed in: a task's life, from waiting to its end.
STATUS_ORDER = tuple(status.value for status in records.Status)
#: Statuses of tasks waiting for their (next) attempt.
WAITING = ("pending", "retrying")
#: Lines of a task's output its widget shows (the last ones), and a running row shows.
WIDGET_OUTPUT_LINES = 40
ROW_OUTPUT_LINES = 1
#: An error's text in the status DataFrame is shortened to this many characters (the full
#: text is in ``task.errors``).
FRAME_ERROR_WIDTH = 200

_EPOCH = dt.datetime.min.replace(tzinfo=dt.timezone.utc)


class TaskState(Protocol):
    """What a row of the status table reads of a task: a :class:`~nbqueue.task.TaskStatus`
    snapshot has it, and so has a live :class:`~nbqueue.task.Task` (``status_frame()``
    reads the tasks themselves: one row each, a hundred thousand at a time)."""

    @property
    def uid(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def status(self) -> Status: ...
    @property
    def priority(self) -> int: ...
    @property
    def progress(self) -> float: ...
    @property
    def retry_count(self) -> int: ...
    @property
    def created_at(self) -> dt.datetime: ...
    @property
    def started_at(self) -> dt.datetime | None: ...
    @property
    def finished_at(self) -> dt.datetime | None: ...
    @property
    def worker(self) -> str | None: ...
    @property
    def error(self) -> object: ...


@dataclasses.dataclass(frozen=True)
class Summary:
    """What a list of task snapshots adds up to: the count per status and how many have
    finished."""

    #: Every status of :data:`STATUS_ORDER` (zeros included), then any other status seen.
    counts: dict[str, int]
    finished: int
    total: int

    @property
    def percent(self) -> float:
        """Finished tasks, in percent of all (0 when there are none)."""
        return 100.0 * self.finished / self.total if self.total else 0.0

    @property
    def finished_text(self) -> str:
        """``3 / 6 finished (50%)``."""
        return f"{self.finished:,} / {self.total:,} finished ({percent_text(self.percent)})"

    @property
    def counts_text(self) -> str:
        """``pending 2, running 4`` (the statuses that have tasks), or ``no tasks``."""
        return ", ".join(f"{status} {n:,}" for status, n in self.nonzero) or "no tasks"

    @property
    def nonzero(self) -> list[tuple[str, int]]:
        """(status, count) of the statuses that have tasks, in :data:`STATUS_ORDER`."""
        return [(status, n) for status, n in self.counts.items() if n]

    @property
    def all_done(self) -> bool:
        """True when there are tasks and every one has finished."""
        return self.total > 0 and self.finished == self.total


def summarize(snapshots: Iterable[TaskStatus]) -> Summary:
    """Counts per status and finished tasks of ``snapshots``."""
    counts = records.status_counts(s.status for s in snapshots)
    finished = sum(counts[status.value] for status in records.FINISHED)
    return Summary(counts, finished, sum(counts.values()))


def percent_text(percent: float) -> str:
    """``42%``."""
    return f"{percent:.0f}%"


def elapsed(snapshot: TaskState, now: dt.datetime | None = None) -> float | None:
    """Seconds the task has run: from its start to its end, or to ``now`` while it runs;
    None before it starts."""
    if snapshot.started_at is None:
        return None
    end = snapshot.finished_at or now or dt.datetime.now(dt.timezone.utc)
    return max(0.0, (end - snapshot.started_at).total_seconds())


def elapsed_text(snapshot: TaskStatus) -> str:
    """A task's elapsed time as text (empty before it starts)."""
    return seconds_text(elapsed(snapshot))


def alive_workers(workers: Iterable[WorkerInfo]) -> int:
    """How many of ``workers`` are alive."""
    return sum(1 for w in workers if w.alive)


def seconds_text(seconds: float | None) -> str:
    """``0.4 s``, ``12 s``, ``3 min 05 s``, ``2 h 01 min``; empty for None (or NaN)."""
    if seconds is None or seconds != seconds:
        return ""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def last_lines(output: str, count: int) -> str:
    """The last ``count`` non-empty lines a task printed."""
    lines = [line for line in output.splitlines() if line.strip()]
    return "\n".join(lines[-count:])


def shorten(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` characters, ending with an ellipsis when cut."""
    return text if len(text) <= width else text[: width - 1] + "…"


def retries_text(snapshot: TaskStatus) -> str:
    """``retry 1/3`` once a task has been retried, else empty."""
    return f"retry {snapshot.retry_count}/{snapshot.max_retries}" if snapshot.retry_count else ""


def shows_error(snapshot: TaskStatus) -> bool:
    """Whether a task's last error is worth showing next to it (it failed, is retrying
    after an error, or was cancelled with a reason)."""
    return snapshot.error is not None and snapshot.status.value in (
        "failed",
        "retrying",
        "cancelled",
    )


# -- picking tasks -----------------------------------------------------------------------
def running(snapshots: Iterable[TaskStatus]) -> list[TaskStatus]:
    """Running tasks, longest running first."""
    # A Status is a str enum: comparing it with a name is a plain string comparison.
    found = [s for s in snapshots if s.status == "running"]
    found.sort(key=lambda s: s.started_at or _EPOCH)
    return found


def next_to_run(snapshots: Iterable[TaskStatus], limit: int) -> list[TaskStatus]:
    """The first ``limit`` waiting tasks in the order they will run (priority, then age)."""
    waiting = (s for s in snapshots if s.status in WAITING)
    return heapq.nsmallest(limit, waiting, key=lambda s: (-s.priority, s.created_at))


def latest_finished(
    snapshots: Iterable[TaskStatus], limit: int, *, status: str | None = None
) -> list[TaskStatus]:
    """The ``limit`` most recently finished tasks (of one ``status`` if given), newest
    first."""
    done = (
        s for s in snapshots if s.status.finished and (status is None or s.status.value == status)
    )
    return heapq.nlargest(limit, done, key=lambda s: s.finished_at or _EPOCH)


def failures(snapshots: Iterable[TaskStatus], limit: int) -> list[TaskStatus]:
    """The ``limit`` most recent failures, newest first."""
    return latest_finished(snapshots, limit, status="failed")
