"""What the runner checks about the machine: which systems can run here (packages, the
local Redis and PostgreSQL), and the facts the table's header reports."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import importlib.util
import os
import platform
import socket
import subprocess
from typing import Any
from urllib.parse import urlparse

import psutil

from bench import pg
from bench.common import REDIS_URL, ROOT
from bench.entries import Entry


def redis_answers(url: str = REDIS_URL, timeout: float = 2.0) -> str | None:
    """None when the Redis at ``url`` answers PING, else why not."""
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            if not sock.recv(64).startswith(b"+PONG"):
                return f"Redis at {host}:{port} did not answer PING"
    except OSError as exc:
        return f"no Redis at {host}:{port} ({exc})"
    return None


def missing(entry: Entry) -> list[str]:
    return [m for m in entry.requires if importlib.util.find_spec(m) is None]


def unavailable(entry: Entry) -> str | None:
    """Why an entry cannot run here (a package or a server missing), or None."""
    gone = missing(entry)
    if gone:
        return f'not installed ({", ".join(gone)}): pip install -e ".[bench]"'
    if entry.redis:
        return redis_answers()
    if entry.postgres:
        return pg.answers()
    return None


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for dist in ("nbqueue", "cloudpickle", "pandas", "ipywidgets", "loky", "dask", "distributed",
                 "huey", "rq", "celery", "kombu", "redis", "pgqueuer", "asyncpg", "procrastinate",
                 "psycopg", "ray", "psutil", "pyinstrument"):  # fmt: skip
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    commit = dirty = None
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
            check=True,
        ).stdout.strip()  # fmt: skip
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--", "nbqueue"], cwd=ROOT,
                capture_output=True, text=True, check=True,
            ).stdout.strip()
        )  # fmt: skip
    return {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "loadavg": round(os.getloadavg()[0], 2),
        "versions": versions,
        "commit": commit,
        "nbqueue_dirty": dirty,
    }
