"""Writing a task directory's stub and its content hash: the stub is rewritten only when
the task files change, atomically, and a folder that cannot be written to gets a warning,
never an exception."""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from nbqueue.errors import TypeGenerationWarning
from nbqueue.typegen import stub as stub_module

if TYPE_CHECKING:
    from nbqueue.registry import ExecutorSpec

STUB_NAME = "_nbqueue_types.pyi"
HASH_NAME = ".nbqueue-types.hash"
#: Part of the hash, so a new nbqueue that writes stubs differently rewrites old ones.
FORMAT_VERSION = "1"


def generate(directory: Path, specs: list[ExecutorSpec]) -> Path | None:
    """Write ``<directory>/_nbqueue_types.pyi`` for the executors of ``specs`` loaded from
    task files, unless the task files are unchanged since the last run. Returns the stub's
    path when it was written, None when it was up to date or could not be written (a
    read-only directory gets a :class:`TypeGenerationWarning`, never an exception)."""
    directory = Path(directory)
    stub, hash_file = directory / STUB_NAME, directory / HASH_NAME
    file_specs = sorted((s for s in specs if s.ref[0] == "file"), key=lambda s: s.type)
    try:
        digest = content_hash(directory, file_specs)
        if stub.is_file() and _read_text(hash_file) == digest:
            return None
        _write_atomic(stub, stub_module.render(file_specs))
        _write_atomic(hash_file, digest)
    except OSError as exc:
        warnings.warn(
            f"nbqueue: could not write the typing stub for {directory} ({exc}); the queue "
            "works without it. Set NBQUEUE_GENERATE_TYPES=false to skip type generation",
            TypeGenerationWarning,
            stacklevel=3,
        )
        return None
    return stub


def content_hash(directory: Path, specs: Iterable[ExecutorSpec]) -> str:
    """SHA-256 over the names and bytes of the directory's ``*.py`` files (helper modules
    included: they may define the types), plus which types imported, since a file that
    failed because of a missing package gives a different stub once the package is there."""
    h = hashlib.sha256(f"nbqueue-types {FORMAT_VERSION}\0".encode())
    for path in sorted(directory.glob("*.py")):
        h.update(path.name.encode() + b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    for spec in specs:
        h.update(f"{spec.type}={'ok' if spec.source is not None else 'failed'}\0".encode())
    return h.hexdigest()


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and os.replace, so a reader (or a second queue starting at
    the same time) never sees half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
