"""Terminal text: bars, the progress line of ``nbqueue demo``, status and host tables, and a
queue's text snapshot (``print(queue.dashboard())`` outside a notebook). Every figure comes
from :mod:`nbqueue.ui.figures`."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from nbqueue.ui import figures

if TYPE_CHECKING:
    import pandas

    from nbqueue.queue import Queue
    from nbqueue.records import TaskStatus

#: Width of the overall bar, in characters.
BAR_WIDTH = 20
#: Running tasks a text snapshot lists, and failures it lists.
RUNNING_ROWS = 10
FAILURE_ROWS = 5
#: Rows a text status table shows before it says how many it left out.
TABLE_ROWS = 50
#: A text table's cells are shortened to this many characters.
CELL_WIDTH = 48
#: The columns of the command line's status table.
TABLE_COLUMNS = (
    "name", "type", "status", "priority", "progress", "retry_count", "duration", "worker", "error",
)  # fmt: skip
#: The columns of ``%nbqueue status`` as text (a uid prefix instead of the less telling ones).
SHORT_COLUMNS = ("uid", "name", "type", "status", "progress", "duration", "error")


def bar(percent: float, width: int = BAR_WIDTH) -> str:
    """``[#####---------------]``."""
    filled = round(width * min(100.0, max(0.0, percent)) / 100)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def snapshot(queue: Queue, snapshots: Sequence[TaskStatus]) -> str:
    """A queue's state as a few lines of text: overall bar, counts, running tasks, the
    latest failures."""
    summary = figures.summarize(snapshots)
    lines = [
        f"nbqueue.Queue ({queue.state}): {summary.total:,} tasks",
        f"{bar(summary.percent)} {summary.finished_text}",
        summary.counts_text,
    ]
    running = figures.running(snapshots)
    if running:
        lines.append(f"running ({len(running)}):")
        for s in running[:RUNNING_ROWS]:
            lines.append(
                f"  {figures.shorten(s.name, 30):<30} {bar(s.progress, 10)} "
                f"{figures.percent_text(s.progress):>4}  "
                f"{figures.elapsed_text(s)}"
            )
        if len(running) > RUNNING_ROWS:
            lines.append(f"  ... and {len(running) - RUNNING_ROWS} more")
    failed = figures.failures(snapshots, FAILURE_ROWS)
    if failed:
        lines.append("recent failures:")
        lines.extend(f"  {s.name}: {s.error}" for s in failed)
    return "\n".join(lines)


def _blank_or(show: Callable[[Any], str]) -> Callable[[Any], str]:
    def cell(value: Any) -> str:
        missing = value is None or (isinstance(value, float) and value != value)
        return "" if missing else show(value)

    return cell


def status_table(
    frame: pandas.DataFrame,
    columns: Sequence[str] = TABLE_COLUMNS,
    *,
    limit: int | None = None,
) -> str:
    """A status frame as a text table of ``columns``: percents, readable durations, uid
    prefixes, long cells shortened; the first ``limit`` rows, then how many were left out."""
    shown = frame[list(columns)].head(limit) if limit is not None else frame[list(columns)]
    formatters: dict[str, Callable[[Any], str]] = {
        column: _blank_or(lambda v: figures.shorten(str(v), CELL_WIDTH)) for column in columns
    }
    formatters.update(
        uid=_blank_or(lambda v: str(v)[:8]),
        progress=_blank_or(figures.percent_text),
        duration=_blank_or(figures.seconds_text),
    )
    table = shown.to_string(
        index=False, na_rep="", formatters={c: f for c, f in formatters.items() if c in columns}
    )
    more = len(frame) - len(shown)
    return table + (
        f"\n... {more:,} more row(s); queue.status_frame() has them all" if more else ""
    )


def hosts_table(hosts: list[dict[str, Any]]) -> str:
    """Worker hosts: name, where, last heartbeat, running / capacity."""
    import pandas

    now = dt.datetime.now(dt.timezone.utc)
    table = pandas.DataFrame(
        {
            "name": [h["name"] for h in hosts],
            "hostname": [h["hostname"] for h in hosts],
            "pid": [h["pid"] for h in hosts],
            "last heartbeat": [
                figures.seconds_text((now - h["last_seen"]).total_seconds()) + " ago" for h in hosts
            ],
            "running": [f"{h['running']}/{h['capacity']}" for h in hosts],
        }
    )
    return table.to_string(index=False)


class ProgressLine:
    """One line of progress: the overall bar, "N / M finished (P%)" and the count per
    status. On a terminal it is redrawn in place; otherwise a line is printed whenever it
    changes."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self._last = ""

    def update(self, snapshots: Sequence[TaskStatus]) -> None:
        summary = figures.summarize(snapshots)
        line = f"{summary.finished_text}: {summary.counts_text}"
        if self.tty:
            width = shutil.get_terminal_size().columns - 1
            line = f"{bar(summary.percent)} {line}"[:width]
            if line != self._last:
                self.out.write("\r" + line.ljust(max(width, len(self._last)))[:width])
        elif line != self._last:
            self.out.write(line + "\n")
        if line != self._last:
            self._last = line
            self.out.flush()

    def close(self) -> None:
        if self.tty:
            self.out.write("\n")
            self.out.flush()
