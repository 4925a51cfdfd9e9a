"""Defaults and environment variables, read in this one place."""

from __future__ import annotations

import os

DEFAULT_WORKER_PREFIX = "nbqueue-worker-"
DEFAULT_MAX_WORKERS = 3
DEFAULT_TASKS_PER_WORKER = 3
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


def sync_seconds() -> float:
    """How often a controller reads other controllers' changes and polls for ready tasks
    (NBQUEUE_POLL_SECONDS, default 0.5; PostgreSQL notifications wake it sooner)."""
    return _env_number("POLL_SECONDS", 0.5, seed_fallback=False) or 0.5


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


#: The environment variable holding the key that signs pickles stored in a database.
SECRET_ENV = "NBQUEUE_SECRET"


def secret() -> bytes | None:
    """The key for signing pickled payloads stored in a database (HMAC-SHA256), from
    NBQUEUE_SECRET; None when it is unset or empty. Surrounding whitespace is dropped (a
    trailing newline from a secrets file must not make one host's key differ). Read on
    every call, so a changed environment takes effect at once."""
    raw = os.environ.get(SECRET_ENV, "").strip()
    return raw.encode("utf-8", "surrogateescape") if raw else None
