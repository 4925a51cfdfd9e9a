"""Tracebacks of errors raised in workers, as the user should see them: the user's frames
only (nbqueue's own machinery left out), with source lines, also for functions defined in
notebook cells (the worker cannot read a cell's source; the kernel can), attached to the
re-raised exception the way ``concurrent.futures`` attaches a process pool's."""

from __future__ import annotations

import linecache
import os
import pickle
import re
import traceback
import types

from nbqueue.errors import RemoteTraceback, TaskFailedError

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_FRAME_LINE = re.compile(r'^(\s*)File "(.+)", line (\d+), in ')


def _ours(filename: str) -> bool:
    return filename.startswith(_PACKAGE)


def _strip(te: traceback.TracebackException, seen: set[int]) -> None:
    if id(te) in seen:
        return
    seen.add(id(te))
    frames = [frame for frame in te.stack if not _ours(frame.filename)]
    if frames:  # an error raised by nbqueue itself keeps its frames
        te.stack = traceback.StackSummary.from_list(frames)
    for linked in (te.__cause__, te.__context__):
        if linked is not None:
            _strip(linked, seen)


def user_traceback(error: BaseException) -> str:
    """The formatted traceback of ``error`` without nbqueue's frames (chained exceptions
    included)."""
    te = traceback.TracebackException.from_exception(error)
    _strip(te, set())
    return "".join(te.format())


#: cloudpickle names the file of every code object it ships "<dynamic-code>".
SHIPPED_FILE = "<dynamic-code>"
#: How deep code_index follows the functions and classes an executor refers to.
_INDEX_DEPTH = 3


def code_index(source: object) -> dict[str, list[types.CodeType]]:
    """Code objects of a shipped executor (a function, a class, an instance) and of the
    functions and classes of its module it refers to, by name: where a worker's
    ``<dynamic-code>`` frames really come from."""
    index: dict[str, list[types.CodeType]] = {}
    seen: set[int] = set()
    module = getattr(source, "__module__", None) or type(source).__module__

    def add_code(code: types.CodeType) -> None:
        index.setdefault(code.co_name, []).append(code)
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                add_code(const)

    def visit(obj: object, depth: int) -> None:
        if id(obj) in seen or depth > _INDEX_DEPTH:
            return
        seen.add(id(obj))
        obj = getattr(obj, "__func__", obj)  # staticmethod, classmethod, bound method
        code = getattr(obj, "__code__", None)
        if isinstance(code, types.CodeType):
            add_code(code)
            globals_ = getattr(obj, "__globals__", {})
            for name in code.co_names:
                found = globals_.get(name)
                if getattr(found, "__module__", None) == module:
                    visit(found, depth + 1)
            return
        cls = obj if isinstance(obj, type) else type(obj)
        if cls.__module__ == module:
            for value in vars(cls).values():
                visit(value, depth + 1)
        for value in getattr(obj, "__dict__", {}).values():  # e.g. a wrapped function
            if callable(value):
                visit(value, depth + 1)

    visit(source, 0)
    return index


def _real_file(index: dict[str, list[types.CodeType]], name: str, line: int) -> str | None:
    for code in index.get(name, ()):
        if any(number == line for _, _, number in code.co_lines()):
            return code.co_filename
    return None


def fill_source(text: str, index: dict[str, list[types.CodeType]] | None = None) -> str:
    """Name the real file of frames from shipped code (``index``, see :func:`code_index`)
    and add the source lines a worker could not show (code from notebook cells) from this
    process's line cache, where IPython keeps every cell."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    for i, line in enumerate(lines):
        match = _FRAME_LINE.match(line)
        if match is None:
            out.append(line)
            continue
        indent, filename, number = match.group(1), match.group(2), int(match.group(3))
        if filename == SHIPPED_FILE and index:
            name = line[match.end() :].strip()
            real = _real_file(index, name, number)
            if real is not None:
                line = line.replace(f'"{SHIPPED_FILE}"', f'"{real}"', 1)
                filename = real
        out.append(line)
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if following.startswith(indent + "  ") and not _FRAME_LINE.match(following):
            continue  # the source line is there
        source = linecache.getline(filename, number).strip()
        if source:
            out.append(f"{indent}    {source}\n")
    return "".join(out)


def pickled_error(error: BaseException) -> bytes | None:
    """``error`` pickled, when it survives a round trip (so the controller can re-raise the
    very exception); None otherwise."""
    try:
        data = pickle.dumps(error, pickle.HIGHEST_PROTOCOL)
        pickle.loads(data)
        return data
    except Exception:
        return None


def as_raised(error: BaseException | None, message: str, text: str | None) -> BaseException:
    """The exception ``Task.result()`` raises for a failure from a worker: the task's own
    exception (rebuilt from its pickle) when it is an ordinary Exception, else a
    TaskFailedError carrying ``message``; the worker's traceback ``text`` is its cause."""
    if not isinstance(error, Exception):
        error = TaskFailedError(message)
    if text:
        error.__cause__ = RemoteTraceback(text)
    return error
