"""Where a queue keeps its tasks: the storage interface and its backends.

``make_adapter(db)`` turns what ``Queue(db=...)`` accepts into an adapter.
``DatabaseAdapter.write(rows, delete=..., claim=ClaimRequest(...))`` does a writer's whole
cycle in one transaction and answers a ``WriteResult``.
"""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from nbqueue.errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseLostError,
    RowRejectedError,
    SchemaMismatchError,
)
from nbqueue.store.base import DatabaseAdapter
from nbqueue.store.batch import ClaimRequest, WriteResult
from nbqueue.store.columns import (
    COLUMNS,
    DEFAULT_TABLE,
    EXECUTOR_COLUMNS,
    HOST_COLUMNS,
    REQUIRED,
    SCHEMA_VERSION,
    Row,
)
from nbqueue.store.memory import MemoryAdapter
from nbqueue.store.sql import SQLAlchemyAdapter

__all__ = [
    "COLUMNS",
    "DEFAULT_TABLE",
    "EXECUTOR_COLUMNS",
    "HOST_COLUMNS",
    "REQUIRED",
    "SCHEMA_VERSION",
    "ClaimRequest",
    "DatabaseAdapter",
    "DatabaseError",
    "DatabaseLostError",
    "MemoryAdapter",
    "Row",
    "RowRejectedError",
    "SQLAlchemyAdapter",
    "SchemaMismatchError",
    "WriteResult",
    "make_adapter",
]


def make_adapter(db: Any, *, table: str = DEFAULT_TABLE) -> DatabaseAdapter | None:
    """The adapter for ``db``: None for None; an adapter as it is; an SQLAlchemy Engine, a
    URL string (``"sqlite:///nbqueue.db"``, ``"postgresql+psycopg://user@host/db"``) or an
    ``sqlalchemy.URL`` wrapped in an SQLAlchemyAdapter (on ``table``); a path object as an
    SQLite file. The adapter is not opened yet."""
    if db is None or isinstance(db, DatabaseAdapter):
        return db
    if isinstance(db, (Engine, sa.URL)):
        return SQLAlchemyAdapter(db, table=table)
    if isinstance(db, str):
        if "://" not in db:
            raise ConfigurationError(
                f"db={db!r} is not a database URL; for an SQLite file use "
                f"'sqlite:///{db}', for PostgreSQL 'postgresql+psycopg://user@host/dbname'"
            )
        return SQLAlchemyAdapter(db, table=table)
    if isinstance(db, os.PathLike):
        return SQLAlchemyAdapter(f"sqlite:///{os.fspath(db)}", table=table)
    raise ConfigurationError(
        "db must be None (keep tasks in memory), a DatabaseAdapter, an SQLAlchemy Engine, "
        "a database URL such as 'sqlite:///nbqueue.db' or "
        f"'postgresql+psycopg://user@host/dbname', or a path to an SQLite file; got {db!r}"
    )
