"""Messages on the pipe between the controller and a worker, framed as
``multiprocessing.connection.Connection`` frames them (a 4-byte big-endian length, or -1
and then an 8-byte length for the huge ones), with fewer system calls and less Python.

``Connection.recv_bytes`` reads the length and then the message (two reads), and
``Connection.poll`` asks a new selector whether another message waits: the controller's
loop thread did that for every message a worker sends. :class:`FrameReader` reads what is
there at once and splits it, keeping an unfinished message for the next read; :func:`send`
writes a message in one call (its length and itself together, as ``send_bytes`` does for
small ones). Both ends of a round trip go through here, so a lone task costs one write and
one read each way.
"""

from __future__ import annotations

import collections
import os
import struct
from multiprocessing.connection import Connection

_LENGTH = struct.Struct("!i")
_LONG_LENGTH = struct.Struct("!Q")
#: Most bytes one read takes, beyond the rest of an unfinished message: a worker that
#: sends without pause cannot keep the loop thread reading its pipe.
READ_SIZE = 65536
#: Messages up to this size are written with their length in one call; bigger ones are
#: written after it (not copied to be joined), as ``Connection.send_bytes`` does.
JOIN_SIZE = 16384


def send(conn: Connection, data: bytes) -> None:
    """Write one message to ``conn``'s pipe; OSError when it is closed (at either end)."""
    fd = conn.fileno()  # (OSError once closed here)
    size = len(data)
    huge = size > 0x7FFFFFFF
    header = _LENGTH.pack(-1) + _LONG_LENGTH.pack(size) if huge else _LENGTH.pack(size)
    if size <= JOIN_SIZE:
        _write(fd, header + data)
    else:
        _write(fd, header)
        _write(fd, data)


def _write(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written < len(data):  # (a big message: the pipe took part of it)
        with memoryview(data) as view:
            while written < len(data):
                written += os.write(fd, view[written:])


class FrameReader:
    """The reading end of one pipe: :meth:`read` when the pipe is readable (it blocks only
    if nothing is there), or :meth:`receive` (which blocks until a message is there), not
    both."""

    __slots__ = ("_buffer", "_fd", "_missing", "_ready")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = bytearray()  # the start of an unfinished message
        self._missing = 0  # how many bytes that message still lacks, when known
        self._ready: collections.deque[bytes] = collections.deque()  # read, not received

    def receive(self) -> bytes:
        """The next message, once it is there. EOFError once the other end is closed."""
        while not self._ready:
            self._ready.extend(self.read())
        return self._ready.popleft()

    def read(self) -> list[bytes]:
        """Read once; the messages completed, in order (none while one is unfinished).
        EOFError once the other end is closed."""
        chunk = os.read(self._fd, max(READ_SIZE, self._missing))
        if not chunk:
            raise EOFError
        buffer = self._buffer
        if not buffer and len(chunk) >= _LENGTH.size:  # mostly: exactly one message
            (size,) = _LENGTH.unpack_from(chunk)
            if len(chunk) == _LENGTH.size + size:
                return [chunk[_LENGTH.size :]]
        buffer += chunk
        messages = []
        start, end = 0, len(buffer)
        self._missing = 0
        while end - start >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(buffer, start)
            body = start + _LENGTH.size
            if size == -1:
                if end - body < _LONG_LENGTH.size:
                    break
                (size,) = _LONG_LENGTH.unpack_from(buffer, body)
                body += _LONG_LENGTH.size
            if end - body < size:
                self._missing = size - (end - body)
                break
            with memoryview(buffer) as view:  # (one copy of a big message, not two)
                messages.append(bytes(view[body : body + size]))
            start = body + size
        del buffer[:start]
        return messages
