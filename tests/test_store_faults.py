"""Database faults (store_kit.py): dropped connections, locked files, a deleted or damaged
SQLite file, and which failures are permanent."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import store_kit as kit
from sqlalchemy import event
from store_kit import Store, make_task, postgres_only, save, sql_only, sqlite_only

from nbqueue import rows
from nbqueue.errors import DatabaseLostError
from nbqueue.store import DatabaseAdapter, DatabaseError, SQLAlchemyAdapter

store, adapter, no_secret = kit.store, kit.adapter, kit.no_secret


# -- database faults ----------------------------------------------------------------------
def _terminate(postgres_server: sa.Engine, database: str) -> int:
    """Kill every connection to ``database`` and wait until they are gone."""
    with postgres_server.connect() as conn:
        killed = conn.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity "
                "WHERE datname = :db AND pid <> pg_backend_pid()"
            ),
            {"db": database},
        ).scalar_one()
    return int(killed)


@postgres_only
def test_postgres_dropped_connections_are_reopened(
    store: Store, adapter: DatabaseAdapter, postgres_server: sa.Engine
) -> None:
    tasks = [make_task(f"t{i}") for i in range(5)]
    save(adapter, *tasks)
    assert store.url is not None
    database = sa.make_url(store.url).database
    assert database is not None
    assert _terminate(postgres_server, database) >= 1
    assert len(adapter.load()) == 5  # the pool's dead connection is replaced
    assert _terminate(postgres_server, database) >= 1
    assert sorted(adapter.claim([t.uid for t in tasks], "me", 30)) == sorted(t.uid for t in tasks)


@postgres_only
def test_postgres_connection_dropped_mid_operation_is_retried(
    store: Store, adapter: DatabaseAdapter, postgres_server: sa.Engine
) -> None:
    tasks = [make_task(f"t{i}") for i in range(5)]
    save(adapter, *tasks)
    assert isinstance(adapter, SQLAlchemyAdapter)
    failures: list[str] = []
    state = {"killed": False}

    def kill_before_update(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("UPDATE") and not state["killed"]:
            state["killed"] = True
            pid = conn.connection.dbapi_connection.info.backend_pid
            with postgres_server.connect() as admin:
                admin.execute(sa.text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid})

    def record(context: Any) -> None:
        failures.append(type(context.original_exception).__name__)

    event.listen(adapter.engine, "before_cursor_execute", kill_before_update)
    event.listen(adapter.engine, "handle_error", record)
    won = adapter.claim([t.uid for t in tasks], "me", 30)
    assert state["killed"] and failures  # the first attempt really failed
    assert sorted(won) == sorted(t.uid for t in tasks)
    assert {row["lease_owner"] for row in adapter.load()} == {"me"}


@sqlite_only
def test_sqlite_locked_file_is_retried(store: Store) -> None:
    adapter = store.new_adapter(busy_timeout=0.01)
    adapter.open()
    assert isinstance(adapter, SQLAlchemyAdapter)
    failed = threading.Event()
    event.listen(adapter.engine, "handle_error", lambda context: failed.set())
    path = sa.make_url(store.url).database if store.url else None
    assert path is not None
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")

    def release() -> None:
        failed.wait(60)  # hold the lock until the adapter has been refused once
        holder.execute("COMMIT")

    releaser = threading.Thread(target=release)
    releaser.start()
    try:
        task = make_task()
        save(adapter, task)  # refused while the lock is held, retried after it is released
    finally:
        failed.set()
        releaser.join()
        holder.close()
    assert [row["uid"] for row in adapter.load()] == [task.uid]


@sqlite_only
def test_sqlite_waits_for_a_lock_within_its_busy_timeout(store: Store) -> None:
    adapter = store.new_adapter()
    adapter.open()
    assert isinstance(adapter, SQLAlchemyAdapter)
    waiting = threading.Event()

    def note_begin(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement == "BEGIN IMMEDIATE":
            waiting.set()

    event.listen(adapter.engine, "before_cursor_execute", note_begin)
    path = sa.make_url(store.url).database if store.url else None
    assert path is not None
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("INSERT INTO tasks_meta (key, value) VALUES ('held', 'yes')")

    def release() -> None:
        waiting.wait(60)
        holder.execute("COMMIT")

    releaser = threading.Thread(target=release)
    releaser.start()
    try:
        task = make_task()
        save(adapter, task)
    finally:
        waiting.set()
        releaser.join()
        holder.close()
    assert [row["uid"] for row in adapter.load()] == [task.uid]
    assert ("held", "yes") in store.sql("SELECT key, value FROM tasks_meta")


@sqlite_only
def test_sqlite_is_in_wal_mode(store: Store, adapter: DatabaseAdapter) -> None:
    assert store.sql("PRAGMA journal_mode") == [("wal",)]


@sqlite_only
def test_sqlite_without_returning(store: Store) -> None:
    """SQLite before 3.35 has no UPDATE ... RETURNING; the adapter selects, then updates."""
    adapter = store.new_adapter()
    adapter.open()
    assert isinstance(adapter, SQLAlchemyAdapter)
    adapter.engine.dialect.update_returning = False
    tasks = [make_task(f"t{i}", priority=i) for i in range(4)]
    save(adapter, *tasks)
    assert adapter.claim([tasks[0].uid], "me", 10) == [tasks[0].uid]
    best = adapter.claim_next("me", 2, 10)
    assert [r["uid"] for r in best] == [tasks[3].uid, tasks[2].uid]
    assert best[0]["status"] == "running" and best[0]["lease_owner"] == "me"
    assert adapter.heartbeat("me", [tasks[0].uid], 20) == [tasks[0].uid]
    store.clock.advance(15)
    assert sorted(adapter.requeue_expired(kit.retry)) == sorted([tasks[2].uid, tasks[3].uid])


def test_unreachable_database_raises_database_error() -> None:
    adapter = SQLAlchemyAdapter(
        "postgresql+psycopg://nobody@127.0.0.1:1/nothing", retry_attempts=2, retry_max_seconds=5
    )
    with pytest.raises(DatabaseError, match="attempt 2") as caught:
        adapter.open()
    assert isinstance(caught.value.__cause__, sa.exc.OperationalError)
    assert caught.value.permanent is False  # the same call may succeed later
    adapter.close()


# -- permanent and transient failures -------------------------------------------------------
POISON = {
    "sqlite": """CREATE TRIGGER no_poison BEFORE INSERT ON tasks WHEN NEW.name = 'poison'
                 BEGIN SELECT RAISE(ABORT, 'poison row'); END""",
    "postgresql": "ALTER TABLE tasks ADD CONSTRAINT no_poison CHECK (name <> 'poison')",
}


@sql_only
def test_refused_data_is_a_permanent_error_and_not_retried(
    store: Store, adapter: DatabaseAdapter
) -> None:
    assert isinstance(adapter, SQLAlchemyAdapter)
    store.sql(POISON[store.kind])
    attempts: list[str] = []
    event.listen(adapter.engine, "handle_error", lambda context: attempts.append("failed"))
    good, poison = make_task("good"), make_task("poison")
    with pytest.raises(DatabaseError, match="attempt 1") as caught:
        save(adapter, good, poison)
    assert caught.value.permanent is True
    assert isinstance(caught.value.__cause__, sa.exc.IntegrityError)
    assert attempts == ["failed"]
    assert adapter.load() == []  # the batch is one transaction
    save(adapter, good)  # the writer splits the batch: the good row alone goes in
    assert [row["uid"] for row in adapter.load()] == [good.uid]


@sqlite_only
def test_locked_file_outlasting_the_retries_is_transient(store: Store, tmp_path: Path) -> None:
    adapter = store.new_adapter(busy_timeout=0.01, retry_attempts=2, retry_max_seconds=5)
    adapter.open()
    holder = sqlite3.connect(tmp_path / "tasks.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(DatabaseError, match="attempt 2") as caught:
            save(adapter, make_task())
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert caught.value.permanent is False
    save(adapter, make_task())  # the same write succeeds once the lock is gone


# -- a vanished or damaged SQLite file ------------------------------------------------------
def _sqlite_file(store: Store) -> Path:
    assert store.url is not None
    database = sa.make_url(store.url).database
    assert database is not None
    return Path(database)


@sqlite_only
def test_deleted_sqlite_file_is_reported_at_the_next_call(
    store: Store, adapter: DatabaseAdapter
) -> None:
    path = _sqlite_file(store)
    save(adapter, make_task())
    for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)
    for call in (
        lambda: save(adapter, make_task()),
        adapter.load,
        lambda: adapter.claim_next("me", 1, 10),
    ):
        with pytest.raises(DatabaseLostError, match="was deleted") as caught:
            call()
        assert caught.value.permanent is True and str(path) in str(caught.value)
        assert isinstance(caught.value, DatabaseError)
    assert not path.exists()  # no empty database was silently made in its place
    adapter.close()  # closing and opening again starts afresh, deliberately
    assert adapter.load() == []
    assert path.exists()


@sqlite_only
def test_replaced_sqlite_file_is_reported_at_the_next_call(
    store: Store, adapter: DatabaseAdapter, tmp_path: Path
) -> None:
    path = _sqlite_file(store)
    mine = make_task("mine")
    save(adapter, mine)
    other = SQLAlchemyAdapter(f"sqlite:///{tmp_path / 'other.db'}")
    save(other, make_task("other"))
    other.close()
    (tmp_path / "other.db").replace(path)
    with pytest.raises(DatabaseLostError, match="was replaced"):
        adapter.load()
    with pytest.raises(DatabaseLostError, match="was replaced"):
        save(adapter, make_task())


def _garble(path: Path, *, keep_header: bool) -> None:
    """Overwrite the file with garbage: every page but the first (which holds the schema),
    or the header itself."""
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    assert len(data) >= 3 * page
    start, end = (page, len(data)) if keep_header else (0, 100)
    data[start:end] = bytes((i * 37 + 11) % 256 for i in range(end - start))
    path.write_bytes(bytes(data))


@sqlite_only
@pytest.mark.parametrize("keep_header", [True, False], ids=["pages", "header"])
def test_damaged_sqlite_file_is_a_permanent_error_naming_it(
    store: Store, adapter: DatabaseAdapter, keep_header: bool
) -> None:
    path = _sqlite_file(store)
    save(adapter, *(make_task(f"t{i}", data={"pad": "x" * 2000}) for i in range(20)))
    with contextlib.closing(sqlite3.connect(path)) as other:  # move the WAL into the file
        assert other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone() == (0, 0, 0)
    _garble(path, keep_header=keep_header)
    for call in (adapter.load, lambda: save(adapter, make_task())):
        with pytest.raises(DatabaseError, match="is damaged") as caught:
            call()
        assert caught.value.permanent is True
        assert str(path) in str(caught.value)


@postgres_only
def test_a_statement_beyond_a_server_limit_is_permanent(
    store: Store, adapter: DatabaseAdapter
) -> None:
    """PostgreSQL reports a B-tree entry that is too large as an operational error (program
    limit exceeded): retrying cannot help, so it is permanent and not retried."""
    store.sql("CREATE INDEX ix_output ON tasks (output)")
    big = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(3000))  # ~9 kB, varied
    row = {**rows.task_to_row(make_task()), "output": big}
    with pytest.raises(DatabaseError, match="attempt 1") as caught:
        adapter.save([row])
    assert caught.value.permanent is True
    assert isinstance(caught.value.__cause__, sa.exc.OperationalError)
