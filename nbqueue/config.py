"""Defaults and environment variables, read in this one place."""

from __future__ import annotations

import os
import socket

DEFAULT_WORKER_PREFIX = "nbqueue-worker-"
#: One task at a time per worker process: Python threads share one GIL, so CPU-bound tasks
#: in threads of one process only take turns. Async executors and I/O-bound work may ask
#: for more with ``Queue(tasks_per_worker=...)``.
DEFAULT_TASKS_PER_WORKER = 1
DEFAULT_MAX_RETRIES = 3
DEFAULT_TIMEOUT_SECONDS = 30.0

#: Retry back-off: base * 2**retry_count seconds, capped, with +/- jitter.
RETRY_BACKOFF_BASE = 0.5
RETRY_BACKOFF_CAP = 60.0
RETRY_BACKOFF_JITTER = 0.25

#: Worker restart back-off after crashes: base * 2**consecutive_crashes, capped.
RESTART_BACKOFF_BASE = 0.05
RESTART_BACKOFF_CAP = 10.0

#: How long a cancelled running task may take to reach a cancellation point before its
#: worker is killed.
CANCEL_GRACE_SECONDS = 2.0

#: With a database: how long a claimed task's lease lasts (renewed every third of it), how
#: often other controllers' changes are read, and how often progress-only changes are written.
DEFAULT_LEASE_SECONDS = 30.0
PROGRESS_FLUSH_SECONDS = 0.5


def default_max_workers() -> int:
    """One worker process per CPU this process may use (as ProcessPoolExecutor and joblib
    choose): notebook work is mostly CPU-bound, and each worker runs one task at a time."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_controller_name() -> str:
    """A controller's name in a shared database: ``HOSTNAME-PID``."""
    return f"{socket.gethostname()}-{os.getpid()}"


def sync_seconds() -> float:
    """How often a controller reads other controllers' changes and polls for ready tasks
    (NBQUEUE_POLL_SECONDS, default 0.5; PostgreSQL notifications wake it sooner)."""
    return _env_number("POLL_SECONDS", 0.5, seed_fallback=False) or 0.5


#: The most characters of a task's captured output (stdout, stderr, log records) that are
#: kept, in memory and in the database: the last ones.
OUTPUT_LIMIT = 64 * 1024

#: How long shutdown() waits for workers to exit before killing them.
SHUTDOWN_GRACE_SECONDS = 2.0


def _env(name: str, *, seed_fallback: bool = True) -> str | None:
    """NBQUEUE_<name>, falling back to the seed's unprefixed <name>."""
    value = os.environ.get(f"NBQUEUE_{name}")
    if (value is None or value == "") and seed_fallback:
        value = os.environ.get(name)
    return value or None


def _env_number(name: str, default: float, *, seed_fallback: bool = True) -> float:
    raw = _env(name, seed_fallback=seed_fallback)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        from nbqueue.errors import ConfigurationError

        raise ConfigurationError(
            f"environment variable {name} (or NBQUEUE_{name}) must be a number, got {raw!r}"
        ) from None
    if value < 0:
        from nbqueue.errors import ConfigurationError

        raise ConfigurationError(f"environment variable {name} must not be negative, got {raw!r}")
    return value


def default_max_retries() -> int:
    """NBQUEUE_MAX_TASK_RETRIES, else MAX_TASK_RETRIES, else 3."""
    return int(_env_number("MAX_TASK_RETRIES", DEFAULT_MAX_RETRIES))


def default_timeout() -> float:
    """Seconds, from NBQUEUE_TASK_TIMEOUT_MS (else TASK_TIMEOUT_MS), else 30."""
    return _env_number("TASK_TIMEOUT_MS", DEFAULT_TIMEOUT_SECONDS * 1000) / 1000.0


def generate_types_enabled() -> bool:
    """False when NBQUEUE_GENERATE_TYPES (or the seed's ANQUEUE_GENERATE_TYPES) is "false"."""
    raw = os.environ.get("NBQUEUE_GENERATE_TYPES", os.environ.get("ANQUEUE_GENERATE_TYPES", ""))
    return raw.strip().lower() not in {"false", "0", "no", "off"}


# -- signing pickles stored in a database (see nbqueue.signing) ---------------------------------
#: The keys that sign pickles stored in a database: the newest first, then older ones that
#: still verify (comma-separated).
SECRET_ENV = "NBQUEUE_SECRET"
#: "1": treat the database as shared even when it is local (refuse unsigned pickles).
REQUIRE_SIGNED_ENV = "NBQUEUE_REQUIRE_SIGNED"
#: "1": the explicit opt-out: store and accept unsigned pickles on a shared database.
ALLOW_UNSIGNED_ENV = "NBQUEUE_ALLOW_UNSIGNED"


def secret_keys() -> tuple[bytes, ...]:
    """The keys in NBQUEUE_SECRET, comma-separated: the first signs new payloads, every one
    verifies. Whitespace around each key is dropped (a trailing newline from a secrets file
    must not make one host's key differ), as are empty ones and repeats; () when unset.
    Never shown anywhere: nbqueue identifies a key by its fingerprint only."""
    keys: list[bytes] = []
    for part in os.environ.get(SECRET_ENV, "").split(","):
        key = part.strip().encode("utf-8", "surrogateescape")
        if key and key not in keys:
            keys.append(key)
    return tuple(keys)


def require_signed() -> bool:
    """NBQUEUE_REQUIRE_SIGNED: apply the shared-database rule to a local database too."""
    return _env_flag(REQUIRE_SIGNED_ENV)


def allow_unsigned() -> bool:
    """NBQUEUE_ALLOW_UNSIGNED: the explicit opt-out from refusing unsigned pickles."""
    return _env_flag(ALLOW_UNSIGNED_ENV)


def libpq_environment() -> dict[str, str]:
    """PGHOST, PGHOSTADDR and PGSERVICE: where libpq connects when a URL names no host."""
    return {name: os.environ.get(name, "") for name in ("PGHOST", "PGHOSTADDR", "PGSERVICE")}


def _env_flag(name: str) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    from nbqueue.errors import ConfigurationError

    raise ConfigurationError(f"environment variable {name} must be 1 or 0, got {raw!r}")


# -- `nbqueue worker`: every option may come from the environment -----------------------------
DEFAULT_HOST_CONCURRENCY = DEFAULT_TASKS_PER_WORKER


def host_db() -> str | None:
    """The shared queue database of ``nbqueue worker`` (NBQUEUE_DB)."""
    return _env("DB", seed_fallback=False)


def host_tasks() -> str | None:
    """The task directory of ``nbqueue worker`` (NBQUEUE_TASKS)."""
    return _env("TASKS", seed_fallback=False)


def host_name() -> str | None:
    """The name of an ``nbqueue worker`` host in the database (NBQUEUE_WORKER_NAME)."""
    return _env("WORKER_NAME", seed_fallback=False)


def host_processes() -> int:
    """Worker processes of an ``nbqueue worker`` host (NBQUEUE_PROCESSES, default: one per
    CPU, as a queue's max_workers)."""
    return int(_env_positive("PROCESSES", default_max_workers(), whole=True))


def host_concurrency() -> int:
    """Tasks at once per worker process of a host (NBQUEUE_CONCURRENCY, default 1)."""
    return int(_env_positive("CONCURRENCY", DEFAULT_HOST_CONCURRENCY, whole=True))


def host_lease_seconds() -> float:
    """The lease on a task a host claims (NBQUEUE_LEASE_SECONDS, default 30)."""
    return _env_positive("LEASE_SECONDS", DEFAULT_LEASE_SECONDS, whole=False)


def _env_positive(name: str, default: float, *, whole: bool) -> float:
    value = _env_number(name, default, seed_fallback=False)
    if value <= 0 or (whole and value != int(value)):
        from nbqueue.errors import ConfigurationError

        kind = "a whole number" if whole else "a number"
        raise ConfigurationError(
            f"environment variable NBQUEUE_{name} must be {kind} above zero, got {value:g}"
        )
    return value
