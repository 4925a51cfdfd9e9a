"""Where nbqueue's benchmark keeps its queues: in memory, an SQLite file, or the
benchmark's PostgreSQL database; a started queue on one of them; and a reader that tells
when tasks are committed."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from bench import pg
from bench.common import PG_URL, WORKERS
from bench.tasks import inc_task

STORES = ("memory", "sqlite", "postgresql")


class Store:
    """Where a queue keeps its tasks: ``url()`` gives a fresh, empty database each call."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._tmp: str | None = None
        self._count = 0
        self.last_url: str | None = None  # of the latest queue opened
        self._pg_created = False

    def url(self) -> str | None:
        self._count += 1
        if self.kind == "memory":
            return None
        if self.kind == "sqlite":
            if self._tmp is None:
                self._tmp = tempfile.mkdtemp(prefix="nbqueue-bench-sqlite-")
            return f"sqlite:///{self._tmp}/bench-{self._count}.db"
        pg.recreate(pg.nbqueue_database())
        self._pg_created = True
        return PG_URL

    def describe(self) -> str:
        return {
            "memory": "in memory",
            "sqlite": "SQLite file (Queue(db='sqlite:///...'))",
            "postgresql": f"PostgreSQL ({PG_URL.split('@')[-1]})",
        }[self.kind]

    def close(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
        if self._pg_created:
            pg.drop(pg.nbqueue_database())


class Unsupported(Exception):
    """This nbqueue cannot run on the store (yet)."""


class Committed:
    """Reads the queue's table through a connection of its own: W3 stops its clock only
    once every task's final state is committed there, not when the controller has it.

    Each run has a fresh database, so it polls (every 2 ms) one cheap count -- the rows not
    yet completed -- until it is zero with all the run's rows there; :meth:`check`, after
    the clock, reads each of the run's tasks back as completed."""

    def __init__(self, url: str) -> None:
        import sqlalchemy as sa

        from nbqueue.store import DEFAULT_TABLE, make_adapter

        self.adapter = make_adapter(url)
        assert self.adapter is not None
        self.engine = sa.create_engine(url)
        table = sa.table(DEFAULT_TABLE, sa.column("status"))
        status = table.c.status
        self.count = sa.select(
            sa.func.count(), sa.func.count().filter(status != "completed")
        ).select_from(table)
        self.waits: list[float] = []
        self.expected: list[str] = []

    def wait(self, uids: list[str], timeout: float = 120.0) -> None:
        t0 = time.perf_counter()
        self.expected = uids
        with self.engine.connect() as conn:
            while True:
                rows, unfinished = conn.execute(self.count).one()
                conn.rollback()  # (a fresh snapshot for the next poll)
                if rows >= len(uids) and not unfinished:
                    break
                if time.perf_counter() - t0 > timeout:
                    raise RuntimeError(f"{unfinished} tasks not committed as completed")
                time.sleep(0.002)
        self.waits.append(time.perf_counter() - t0)

    def check(self) -> None:
        """Every task of the last wait() reads back as completed (after the clock)."""
        found = self.adapter.load(self.expected, columns=("status",))
        if len(found) != len(self.expected) or any(r["status"] != "completed" for r in found):
            raise RuntimeError("W3: not every task reads back as completed")

    def close(self) -> None:
        self.adapter.close()
        self.engine.dispose()


@contextlib.contextmanager
def open_queue(
    store: Store, tpw: int | None, *, register: Callable[..., Any] = inc_task,
    type_: str = "inc", **extra: Any,
) -> Iterator[Any]:  # fmt: skip
    """A started queue with one registered executor, shut down on exit. ``tpw`` None leaves
    ``tasks_per_worker`` at the library's default."""
    from nbqueue import ConfigurationError, Queue

    url = store.url()
    store.last_url = url
    kwargs: dict[str, Any] = dict(max_workers=WORKERS, **extra)
    if tpw is not None:
        kwargs["tasks_per_worker"] = tpw
    if url is not None:
        kwargs["db"] = url
    try:
        queue = Queue(**kwargs)
    except ConfigurationError as exc:
        if url is None:
            raise
        raise Unsupported(f"Queue(db={store.kind} URL) raised ConfigurationError: {exc}") from exc
    try:
        queue.register(register, type=type_)
        queue.init()
        yield queue
    finally:
        queue.shutdown()
