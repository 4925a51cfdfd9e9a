"""What a task writes, captured per task in the process that runs it: ``sys.stdout`` and
``sys.stderr`` writes, log records, and (in a local worker process, :class:`FdCapture`)
anything written to file descriptors 1 and 2, by C extensions and subprocesses too. It
reaches the controller as ``(OUTPUT, uid, text)`` messages (``task.output``); nothing a task
writes lands under whichever notebook cell ran last.

Who wrote it:

- a ``sys.stdout``/``sys.stderr`` write or a log record belongs to the attempt the writing
  thread runs, else to the current task of the writing coroutine (an ``async def exec`` on
  the worker's event loop), else, in a local worker -- a thread the task started -- to the
  one attempt running in the process; else it is not captured (a local worker drops it, a
  Dask worker writes it where it would have gone);
- bytes read from file descriptors 1 and 2 cannot be told apart: they go to the attempt
  running when they are read, and with several running, to each of them, every line
  marked ``[shared]``; with none running they are dropped.

Carriage-return redraws (tqdm) are collapsed: a line keeps only its last state. A complete
line leaves at once; the line in progress when it ends or the attempt does (a redraw could
still change it). The percentage of a tqdm-style bar (``NN%|``) is reported as the task's
progress, unless the task reports progress itself.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import os
import re
import select
import sys
import threading
from collections.abc import Callable
from typing import Any

from nbqueue import config, context
from nbqueue.errors import NbqueueError

#: How a log record is written into a task's output (logging.basicConfig's format).
LOG_FORMAT = "%(levelname)s:%(name)s:%(message)s"
#: The line in progress is sent as it is once it grows past this many characters.
PARTIAL_LINE_LIMIT = config.OUTPUT_LIMIT
#: Marks fd-level output that went to every task running when it was read.
SHARED_MARK = "[shared] "

_BAR = re.compile(r"(\d{1,3})%\|")


def _last_state(line: str) -> str:
    """A line without its newline as a terminal shows it: after its last carriage return
    (a trailing one belongs to a CRLF line ending)."""
    line = line.rstrip("\r")
    return line[line.rfind("\r") + 1 :]


class TaskText:
    """The output of one attempt, assembled into lines. ``on_text`` receives complete
    lines (and, at the end, the rest); ``on_progress`` a tqdm bar's percentage."""

    __slots__ = ("on_progress", "on_text", "own_progress", "partial", "percent", "uid")

    def __init__(
        self, uid: str, on_text: Callable[[str], None], on_progress: Callable[[float], None]
    ) -> None:
        self.uid, self.on_text, self.on_progress = uid, on_text, on_progress
        self.partial = ""  # the line in progress, its last redraw only
        self.percent = -1
        self.own_progress = False  # the task reports progress itself: tqdm's is ignored

    def write(self, text: str) -> None:
        *complete, text = (self.partial + text).split("\n")
        lines = [_last_state(line) for line in complete]
        # The line in progress, without its earlier redraws (a CR may end it: it belongs
        # to a CRLF, or the next redraw starts there).
        self.partial = text[text.rfind("\r", 0, len(text) - 1) + 1 :]
        out = "".join(line + "\n" for line in lines)
        if len(self.partial) > PARTIAL_LINE_LIMIT:  # sent as it is, to bound the memory
            out, self.partial = out + self.partial, ""
        if out:
            self.on_text(out)
        if not self.own_progress:
            for latest in (_last_state(self.partial), lines[-1] if lines else ""):
                if "%|" in latest:
                    self._bar(latest)
                    break

    def _bar(self, line: str) -> None:
        found = _BAR.findall(line)
        percent = int(found[-1]) if found else -1
        if 0 <= percent <= 100 and percent != self.percent:
            self.percent = percent
            self.on_progress(float(percent))

    def rest(self) -> str:
        """The line in progress, as it was left; nothing more is expected."""
        rest, self.partial = _last_state(self.partial), ""
        return rest


class Capture:
    """The attempts running in this process and whose output is whose. Thread-safe.
    ``strays``: what a thread running no attempt writes goes to the one attempt running, if
    only one runs (in a local worker such threads are the tasks'; a Dask worker runs other
    work in its threads, so there it is False)."""

    def __init__(self, *, strays: bool) -> None:
        self._strays = strays
        self._lock = threading.Lock()
        self._by_uid: dict[str, TaskText] = {}
        self._by_thread: dict[int, TaskText] = {}

    def begin(
        self, uid: str, on_text: Callable[[str], None], on_progress: Callable[[float], None]
    ) -> TaskText:
        """The calling thread runs an attempt of task ``uid`` from now on."""
        text = TaskText(uid, on_text, on_progress)
        with self._lock:
            self._by_uid[uid] = text
            self._by_thread[threading.get_ident()] = text
        return text

    def end(self, text: TaskText) -> str:
        """The attempt is over (call it on the thread that began it); the rest of its
        output, not yet given to ``on_text``."""
        with self._lock:
            if self._by_uid.get(text.uid) is text:
                del self._by_uid[text.uid]
            self._by_thread.pop(threading.get_ident(), None)
            return text.rest()

    def own_progress(self, uid: str) -> None:
        """Task ``uid`` reports progress itself: stop reading it from its output."""
        with self._lock:
            text = self._by_uid.get(uid)
            if text is not None:
                text.own_progress = True

    def write(self, data: str) -> bool:
        """A Python-level write (or log record) of the calling thread; False when it is
        nobody's (see the module's docstring)."""
        with self._lock:
            text = self._by_thread.get(threading.get_ident())
            if text is None:
                text = self._by_uid.get(_current_uid() or "")
            if text is None and self._strays and len(self._by_uid) == 1:
                text = next(iter(self._by_uid.values()))
            if text is None:
                return False
            text.write(data)
            return True

    def shared(self, data: str) -> None:
        """Output that could be anyone's (read from a file descriptor)."""
        with self._lock:
            texts = list(self._by_uid.values())
            if len(texts) > 1:
                data = "".join(SHARED_MARK + line for line in data.splitlines(keepends=True))
            for text in texts:
                text.write(data)


def _current_uid() -> str | None:
    try:
        return context.current_task().uid
    except NbqueueError:
        return None


class TaskStream:
    """Stands in for ``sys.stdout`` / ``sys.stderr``: a write goes to the writer's task,
    else to ``fallback`` (None: dropped). Anything else is the original stream's."""

    def __init__(self, capture: Capture, original: Any, fallback: Any) -> None:
        self._capture, self._original, self._fallback = capture, original, fallback

    def write(self, data: str) -> int:
        if not isinstance(data, str):
            raise TypeError(f"write() argument must be str, not {type(data).__name__}")
        if not self._capture.write(data) and self._fallback is not None:
            self._fallback.write(data)
        return len(data)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._fallback is not None:
            self._fallback.flush()

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:  # fileno, encoding, buffer, ...
        return getattr(self._original, name)


class TaskLogHandler(logging.Handler):
    """Installed as ``logging.lastResort``: a log record no handler took (the logger's
    level passed, as the user set it) goes, formatted, to the emitting thread's task,
    else to the previous last resort (None: dropped). Records that the user's own handlers
    take are captured too when those write to stdout or stderr, and logging.basicConfig()
    in a task keeps working -- a handler on the root logger would disable it."""

    def __init__(self, capture: Capture, previous: logging.Handler | None) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter(LOG_FORMAT))
        self._capture, self._previous = capture, previous

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        previous = self._previous
        if not self._capture.write(message) and previous and record.levelno >= previous.level:
            previous.handle(record)


def install(capture: Capture, *, keep_other_output: bool) -> None:
    """Route this process's ``sys.stdout``, ``sys.stderr`` and unhandled log records
    through ``capture``. Output from no task is dropped, or written where it went before
    when ``keep_other_output``."""
    for name in ("stdout", "stderr"):
        original = getattr(sys, name)
        fallback = original if keep_other_output else None
        setattr(sys, name, TaskStream(capture, original, fallback))
    previous = logging.lastResort if keep_other_output else None
    logging.lastResort = TaskLogHandler(capture, previous)


class FdCapture:
    """File descriptors 1 and 2 of this process made the write end of a pipe that a thread
    of ours reads into ``capture.shared`` (the read end is non-blocking: that thread and
    :meth:`drain` read it in turn)."""

    def __init__(self, capture: Capture) -> None:
        self._capture = capture
        read, write = os.pipe()
        os.dup2(write, 1)
        os.dup2(write, 2)
        os.close(write)
        os.set_blocking(read, False)
        self._fd = read
        self._probe = _readable(read)  # (one poll object per thread that polls)
        self._lock = threading.Lock()
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        try:
            self._fflush: Callable[[Any], int] | None = ctypes.CDLL(None).fflush
        except (OSError, AttributeError):  # no C library to flush
            self._fflush = None

    def start(self) -> None:
        threading.Thread(target=self._run, name="nbqueue-fd-capture", daemon=True).start()

    def _run(self) -> None:
        waiter = _readable(self._fd)
        open_ = True
        while open_:  # (fds 1 and 2 both closed by a task: nothing more to read)
            waiter.poll()
            with self._lock:
                open_ = self._read()

    def drain(self) -> None:
        """Take in what was written so far: call it when an attempt ends, before it is
        reported, so that its fd-level output is still its own. C's stdio buffers and the
        original Python streams on fds 1 and 2 are flushed first."""
        if self._fflush is not None:
            self._fflush(None)
        for stream in (sys.__stdout__, sys.__stderr__):
            if stream is not None:
                stream.flush()
        with self._lock:
            if self._probe.poll(0):
                self._read()

    def _read(self) -> bool:
        """Read what is there; False at the end of the file."""
        chunks, more = [], True
        while more:
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            more = bool(chunk)
            chunks.append(chunk)
        text = self._decoder.decode(b"".join(chunks), final=not more)
        if text:
            self._capture.shared(text)
        return more


def _readable(fd: int) -> select.poll:
    """A poll object that waits for ``fd`` to be readable."""
    poll = select.poll()
    poll.register(fd, select.POLLIN)
    return poll
