"""The row contract shared by every backend: the columns of the tasks table, the statuses,
and the order in which ready rows are claimed.

A row is a plain dict of column name to value:

- text: ``uid``, ``type``, ``name``, ``description``, ``status``, ``error``, ``worker``,
  ``lease_owner``, ``key`` (a keyed task's key: re-runs look it up), ``output`` (what the
  task printed and logged, bounded by the caller)
- int: ``priority``, ``retry_count``, ``max_retries``
- float: ``progress``; ``delay`` and ``timeout`` in seconds; ``ready_at`` in epoch seconds
- timezone-aware UTC datetime: ``created_at``, ``updated_at``, ``run_at``, ``started_at``,
  ``finished_at``, ``lease_expires_at``
- JSON documents as their text: ``data``, ``metadata``, ``user_id``, ``result``, ``errors``
- bytes: ``data_blob`` (inputs that are not JSON, pickled), ``result_blob``

``updated_at`` is stamped by the adapter on every write; ``lease_owner`` and
``lease_expires_at`` belong to :meth:`DatabaseAdapter.claim` and friends.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

#: One row of the tasks table: column name -> value (see the module docstring).
Row = dict[str, Any]

#: Version of the table layout below; recorded in ``<table>_meta`` when the table is made.
#: Version 2 added ``key`` and ``output`` (a version-1 table is migrated when opened).
SCHEMA_VERSION = 2
DEFAULT_TABLE = "tasks"

PENDING, RUNNING, RETRYING = "pending", "running", "retrying"
COMPLETED, FAILED, CANCELLED = "completed", "failed", "cancelled"
STATUSES = frozenset({PENDING, RUNNING, RETRYING, COMPLETED, FAILED, CANCELLED})
#: Rows in these states are claimed once their ``ready_at`` has passed.
CLAIMABLE = (PENDING, RETRYING)

#: Every column, in table order.
COLUMNS: tuple[str, ...] = (
    # the seed's tasks table
    "uid", "type", "name", "description", "status", "data", "error", "started_at",
    "finished_at",
    # what the queue needs on top
    "priority", "progress", "retry_count", "max_retries", "delay", "timeout", "run_at",
    "ready_at", "user_id", "metadata", "result", "errors", "created_at", "updated_at",
    "worker", "lease_owner", "lease_expires_at", "data_blob", "result_blob",
    # schema version 2
    "key", "output",
)  # fmt: skip
#: Columns a new row must have. A row without all of them only updates an existing row
#: (a state change for a task some other controller has deleted is then dropped).
REQUIRED = frozenset({
    "uid", "type", "name", "status", "priority", "progress", "retry_count", "max_retries",
    "delay", "timeout", "created_at", "ready_at",
})  # fmt: skip
KNOWN = frozenset(COLUMNS)
#: Columns that never hold NULL.
NOT_NULL = REQUIRED | {"updated_at"}
#: Length limits of the text columns that have one (in characters).
MAX_UID_LENGTH = 64
MAX_WORKER_LENGTH = 255  # worker and lease_owner
MAX_KEY_LENGTH = 1000

#: The columns of a row of the executors table (payload: the pickle, signed or not).
EXECUTOR_COLUMNS = ("type", "digest", "payload", "created_at")
#: The columns of a row of the hosts table, as :meth:`DatabaseAdapter.load_hosts` gives them.
HOST_COLUMNS = ("name", "hostname", "pid", "started_at", "last_seen", "running", "capacity")
#: Length limits of the other text columns: a task's type (also in the executors table),
#: an executor's digest, a host's name.
MAX_TYPE_LENGTH = 255
MAX_DIGEST_LENGTH = 128
MAX_NAME_LENGTH = 255


def utc_from_epoch(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)


_EPOCH = utc_from_epoch(0)


def order_key(row: Row) -> tuple[int, int, dt.datetime]:
    """Best first: priority desc, then created_at. A row whose columns are not what they
    should be (a corrupt row) sorts last instead of breaking the sort."""
    return order_key_of(row.get("priority"), row.get("created_at"))


def order_key_of(priority: Any, created: Any) -> tuple[int, int, dt.datetime]:
    """:func:`order_key` of a row's priority and created_at."""
    if type(priority) is int and isinstance(created, dt.datetime) and created.tzinfo:
        return (0, -priority, created)
    return (1, 0, _EPOCH)
