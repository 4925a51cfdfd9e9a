"""The storage test kit: one backend under test (memory, SQLite, PostgreSQL) per
parametrised ``store`` fixture, and helpers shared by the ``test_store*.py`` files.

PostgreSQL comes from NBQUEUE_TEST_POSTGRES_URL (any database on the server; each test gets
a fresh ``nbq_test_<random>`` database, dropped afterwards). Unset or unreachable: those
tests are skipped -- except on CI (CI=true), where they fail.

A test file takes the fixtures by name: ``store, adapter, no_secret = kit.store,
kit.adapter, kit.no_secret``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from nbqueue import rows
from nbqueue.store import DatabaseAdapter, MemoryAdapter, Row, SQLAlchemyAdapter
from nbqueue.task import Task

POSTGRES_ENV = "NBQUEUE_TEST_POSTGRES_URL"
BACKENDS = ["memory", "sqlite", "postgresql"]
SQL_BACKENDS = ["sqlite", "postgresql"]
UTC = dt.timezone.utc


# -- fixtures -----------------------------------------------------------------------------
class FakeClock:
    """The adapters' clock, moved by hand: leases expire without anyone sleeping. It starts
    a minute ahead so tasks made during a test are already ready."""

    def __init__(self) -> None:
        self.now = time.time() + 60

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclasses.dataclass
class Store:
    """One backend under test: make adapters on the same storage, reach it with raw SQL."""

    kind: str
    clock: FakeClock
    new_adapter: Callable[..., DatabaseAdapter]
    url: str | None  # None for memory
    raw: sa.Engine | None  # a plain engine on the same database, for raw SQL

    def sql(self, statement: str, **params: Any) -> list[Any]:
        assert self.raw is not None
        with self.raw.begin() as conn:
            result = conn.execute(sa.text(statement), params)
            return list(result) if result.returns_rows else []


@pytest.fixture(autouse=True)
def no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NBQUEUE_SECRET", raising=False)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    kind = request.param
    clock = FakeClock()
    made: list[DatabaseAdapter] = []
    if kind == "memory":
        shared = MemoryAdapter(clock=clock)
        yield Store(kind, clock, lambda **kw: shared, None, None)
        return
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'tasks.db'}"
    else:
        url = request.getfixturevalue("postgres_url")

    def new_adapter(**options: Any) -> DatabaseAdapter:
        adapter = SQLAlchemyAdapter(url, clock=clock, **options)
        made.append(adapter)
        return adapter

    raw = sa.create_engine(url)
    try:
        yield Store(kind, clock, new_adapter, url, raw)
    finally:
        for adapter in made:
            adapter.close()
        raw.dispose()


@pytest.fixture
def adapter(store: Store) -> DatabaseAdapter:
    adapter = store.new_adapter()
    adapter.open()
    return adapter


sql_only = pytest.mark.parametrize("store", SQL_BACKENDS, indirect=True)
sqlite_only = pytest.mark.parametrize("store", ["sqlite"], indirect=True)
postgres_only = pytest.mark.parametrize("store", ["postgresql"], indirect=True)


# -- helpers ------------------------------------------------------------------------------
def make_task(name: str = "task", **options: Any) -> Task[Any]:
    options.setdefault("type", "work")
    return Task(name, **options)


def save(adapter: DatabaseAdapter, *tasks: Task[Any]) -> None:
    adapter.save(rows.task_to_row(task) for task in tasks)


def load_task(adapter: DatabaseAdapter, uid: str) -> Task[Any]:
    [row] = adapter.load([uid])
    return rows.row_to_task(row)


def by_uid(adapter: DatabaseAdapter) -> dict[str, dict[str, Any]]:
    return {row["uid"]: row for row in adapter.load()}


def retry(row: Row) -> dict[str, Any]:
    """A ``lost`` function for requeue_expired(), as a controller would write it: the lost
    attempt counts; the task is retried, or failed once its retries are used up."""
    attempts = row["retry_count"] + 1
    if attempts > row["max_retries"]:
        return {"status": "failed", "retry_count": attempts, "error": "WorkerCrashedError: lost"}
    return {"status": "pending", "retry_count": attempts, "worker": None, "started_at": None,
            "progress": 0.0}  # fmt: skip
