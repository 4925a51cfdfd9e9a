"""Who holds a lease. A controller's lease owner id names its machine, its process and the
moment that process started, so that another controller on the same machine can see at once
that the owner is gone (its pid is dead, or now belongs to another process) instead of
waiting out the lease. Owners on other machines are waited out by their lease."""

from __future__ import annotations

import os
import socket
import uuid


def _start_ticks(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, Linux), or None when this
    cannot be told (no such process, or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ")"
    fields = stat[stat.rfind(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else None


def owner_id() -> str:
    """This process's lease owner id: ``host:pid:start:random``."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid) or '-'}:{uuid.uuid4().hex[:8]}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def dead_here(owner: str) -> bool:
    """True when ``owner`` is a process on this machine that is gone."""
    parts = owner.rsplit(":", 3)
    if len(parts) != 4 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid, started = int(parts[1]), parts[2]
    if pid == os.getpid():
        return False
    if not _alive(pid):
        return True
    if started == "-":
        return False
    now = _start_ticks(pid)
    return now is not None and now != started
