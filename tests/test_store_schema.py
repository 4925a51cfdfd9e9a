"""The tables on SQLite and PostgreSQL (store_kit.py): creation, checks, migration."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid

import pytest
import sqlalchemy as sa
import store_kit as kit
from helpers import poll
from store_kit import Store, make_task, postgres_only, save, sql_only

from nbqueue import rows
from nbqueue.errors import ConfigurationError
from nbqueue.store import SCHEMA_VERSION, DatabaseAdapter, SchemaMismatchError, SQLAlchemyAdapter

store, adapter, no_secret = kit.store, kit.adapter, kit.no_secret


# -- schema -------------------------------------------------------------------------------
@sql_only
def test_table_is_created_on_first_use_with_its_schema_version(store: Store) -> None:
    adapter = store.new_adapter()
    save(adapter, make_task())  # no open(): the first use creates the table
    assert store.sql("SELECT key, value FROM tasks_meta") == [
        ("schema_version", str(SCHEMA_VERSION))
    ]
    again = store.new_adapter()
    again.open()  # an existing, compatible table is used as it is
    save(again, make_task())
    assert len(adapter.load()) == 2
    adapter.close()
    assert len(adapter.load()) == 2  # a closed adapter reopens on use


@sql_only
def test_table_name_is_configurable(store: Store) -> None:
    jobs = store.new_adapter(table="jobs")
    jobs.open()
    save(jobs, make_task())
    inspector = sa.inspect(store.raw)
    assert inspector is not None
    assert {"jobs", "jobs_meta"} <= set(inspector.get_table_names())
    assert "tasks" not in inspector.get_table_names()
    with pytest.raises(ConfigurationError, match="table"):
        store.new_adapter(table="jobs; DROP TABLE jobs")


def _open_at_once(store: Store, count: int) -> list[DatabaseAdapter]:
    """``count`` new adapters opened by as many threads at the same moment; none may fail."""
    adapters = [store.new_adapter() for _ in range(count)]
    start = threading.Barrier(count)
    errors: list[BaseException] = []

    def open_it(adapter: DatabaseAdapter) -> None:
        try:
            start.wait()
            adapter.open()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_it, args=(a,)) for a in adapters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return adapters


@sql_only
def test_opening_concurrently_creates_the_table_once(store: Store) -> None:
    _open_at_once(store, 3)
    assert store.sql("SELECT count(*) FROM tasks_meta") == [(1,)]


SEED_TABLE = """CREATE TABLE tasks (uid VARCHAR(64) PRIMARY KEY, type VARCHAR(255), name TEXT,
    description TEXT, status VARCHAR(16), data TEXT, error TEXT, started_at TIMESTAMP,
    finished_at TIMESTAMP)"""


@sql_only
def test_foreign_table_is_refused_and_left_alone(store: Store) -> None:
    store.sql(SEED_TABLE)
    store.sql("INSERT INTO tasks (uid, type, name, status) VALUES ('a', 't', 'n', 'pending')")
    adapter = store.new_adapter()
    with pytest.raises(SchemaMismatchError, match="not made by nbqueue") as caught:
        adapter.open()
    assert "table='nbqueue_tasks'" in str(caught.value)
    assert store.sql("SELECT uid, status FROM tasks") == [("a", "pending")]
    inspector = sa.inspect(store.raw)
    assert inspector is not None
    assert len(inspector.get_columns("tasks")) == 9
    assert not inspector.has_table("tasks_meta")


@sql_only
def test_other_schema_version_is_refused(store: Store, adapter: DatabaseAdapter) -> None:
    save(adapter, make_task())
    store.sql("UPDATE tasks_meta SET value = '99'")
    with pytest.raises(SchemaMismatchError, match="version 99"):
        store.new_adapter().open()
    assert len(adapter.load()) == 1


@sql_only
def test_missing_column_is_refused(store: Store, adapter: DatabaseAdapter) -> None:
    store.sql("ALTER TABLE tasks DROP COLUMN result_blob")
    with pytest.raises(SchemaMismatchError, match="result_blob"):
        store.new_adapter().open()
    store.sql("ALTER TABLE tasks ADD COLUMN result_blob BYTEA" if store.kind == "postgresql"
              else "ALTER TABLE tasks ADD COLUMN result_blob BLOB")  # fmt: skip
    store.sql("ALTER TABLE tasks ADD COLUMN colour TEXT NOT NULL DEFAULT 'red'")
    store.new_adapter().open()  # an extra column with a default does no harm
    store.sql("ALTER TABLE tasks ADD COLUMN shape TEXT NOT NULL")
    with pytest.raises(SchemaMismatchError, match="shape"):
        store.new_adapter().open()


@sql_only
def test_executors_and_hosts_tables_are_created_beside_the_tasks_table(store: Store) -> None:
    adapter = store.new_adapter(table="jobs")
    adapter.save_executor("t", "d", b"x")  # first use, no open(): every table is made
    inspector = sa.inspect(store.raw)
    assert inspector is not None
    assert {"jobs", "jobs_meta", "jobs_executors", "jobs_hosts"} <= set(inspector.get_table_names())
    assert [c["name"] for c in inspector.get_columns("jobs_executors")] == [
        "type", "digest", "payload", "created_at",
    ]  # fmt: skip
    assert inspector.get_pk_constraint("jobs_executors")["constrained_columns"] == [
        "type", "digest",
    ]  # fmt: skip
    assert [c["name"] for c in inspector.get_columns("jobs_hosts")] == [
        "name", "hostname", "pid", "started_at", "last_seen", "running", "capacity",
    ]  # fmt: skip
    assert inspector.get_pk_constraint("jobs_hosts")["constrained_columns"] == ["name"]


@sql_only
def test_database_made_before_the_scale_out_tables_gets_them(store: Store) -> None:
    old = store.new_adapter()
    task = make_task()
    save(old, task)
    old.close()
    # What an nbqueue from before the executors and hosts tables left behind.
    store.sql("DROP TABLE tasks_executors")
    store.sql("DROP TABLE tasks_hosts")
    adapter = store.new_adapter()
    adapter.open()
    assert [row["uid"] for row in adapter.load()] == [task.uid]  # the tasks are untouched
    assert store.sql("SELECT key, value FROM tasks_meta") == [
        ("schema_version", str(SCHEMA_VERSION))
    ]
    adapter.save_executor("t", "d", b"x")
    adapter.host_heartbeat("h", hostname="box", pid=1, running=0, capacity=1)
    assert adapter.load_executor("t") == ("d", b"x")
    assert [row["name"] for row in adapter.load_hosts()] == ["h"]


@sql_only
def test_claims_read_the_claim_index_which_an_older_table_gets(store: Store) -> None:
    """The best ready rows come from a partial index in order (never a sort of every
    pending row); a table made before that index gets it when opened. On SQLite the
    claim names the index (INDEXED BY: it fails without it); PostgreSQL counts its
    scans."""
    old = store.new_adapter()
    tasks = [make_task(f"p{p}", priority=p) for p in (1, 5, 3)]
    save(old, *tasks, *(make_task("filler") for _ in range(2000)))
    old.close()
    store.sql("DROP INDEX ix_tasks_claim")  # what an earlier nbqueue left behind
    adapter = store.new_adapter()
    adapter.open()
    assert "ix_tasks_claim" in _indexes(store)
    if store.kind == "postgresql":
        store.sql("ANALYZE tasks")  # (on a few rows a scan of the table is cheaper)
    scans = _index_scans(store)
    claimed = adapter.claim_next("me", 2, 30, types=["work"])
    assert [row["name"] for row in claimed] == ["p5", "p3"]
    adapter.close()  # (a PostgreSQL session hands in its statistics as it ends)
    if store.kind == "postgresql":
        poll(lambda: _index_scans(store) > scans, timeout=15)


@postgres_only
def test_an_index_the_role_may_not_create_is_left_out_with_a_warning(
    store: Store, postgres_server: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """A role that may write the tasks but does not own the table cannot add an index an
    earlier nbqueue did not make: it says so and works on (claims read more rows)."""
    store.new_adapter().open()
    store.sql("DROP INDEX ix_tasks_claim")
    role = f"nbq_writer_{uuid.uuid4().hex[:8]}"
    with postgres_server.connect() as conn:
        conn.exec_driver_sql(f'CREATE ROLE "{role}" LOGIN')
    try:
        store.sql(
            f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"'
        )
        assert store.url is not None
        url = sa.make_url(store.url).set(username=role).render_as_string(hide_password=False)
        writer = SQLAlchemyAdapter(url)
        with caplog.at_level(logging.WARNING, logger="nbqueue.store"):
            writer.open()
        assert "could not create index ix_tasks_claim" in caplog.text
        save(writer, make_task("low"), make_task("high", priority=2))
        assert [row["name"] for row in writer.claim_next("me", 1, 30)] == ["high"]
        writer.close()
    finally:
        store.sql(f'DROP OWNED BY "{role}"')  # its privileges in this database
        with postgres_server.connect() as conn:
            conn.exec_driver_sql(f'DROP ROLE "{role}"')


def _index_scans(store: Store) -> int:
    if store.kind != "postgresql":
        return 0
    [(scans,)] = store.sql(
        "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = 'ix_tasks_claim'"
    )
    return int(scans)


@sql_only
def test_incompatible_hosts_table_is_refused_and_left_alone(store: Store) -> None:
    store.new_adapter().open()
    store.sql("DROP TABLE tasks_hosts")
    store.sql("CREATE TABLE tasks_hosts (name VARCHAR(255) PRIMARY KEY, colour TEXT)")
    store.sql("INSERT INTO tasks_hosts (name, colour) VALUES ('h', 'red')")
    with pytest.raises(SchemaMismatchError, match=r"tasks_hosts.*missing column"):
        store.new_adapter().open()
    assert store.sql("SELECT name, colour FROM tasks_hosts") == [("h", "red")]


# -- migration from schema version 1 ------------------------------------------------------
#: What nbqueue with schema version 1 made: its tasks table, indexes and meta table, as
#: SQLAlchemy rendered them for each database (kept here as they were, not derived).
V1_COLUMNS = """uid VARCHAR(64) NOT NULL, type VARCHAR(255) NOT NULL, name TEXT NOT NULL,
    description TEXT, status VARCHAR(16) NOT NULL, data {json}, error TEXT,
    started_at {moment}, finished_at {moment}, priority BIGINT NOT NULL,
    progress {double} NOT NULL, retry_count BIGINT NOT NULL, max_retries BIGINT NOT NULL,
    delay {double} NOT NULL, timeout {double} NOT NULL, run_at {moment},
    ready_at {double} NOT NULL, user_id {json}, metadata {json}, result {json}, errors {json},
    created_at {moment} NOT NULL, updated_at {moment} NOT NULL, worker VARCHAR(255),
    lease_owner VARCHAR(255), lease_expires_at {moment}, data_blob {blob}, result_blob {blob},
    PRIMARY KEY (uid)"""
V1_TYPES = {
    "sqlite": {"json": "TEXT", "moment": "DATETIME", "double": "DOUBLE", "blob": "BLOB"},
    "postgresql": {"json": "JSON", "moment": "TIMESTAMP WITH TIME ZONE",
                   "double": "DOUBLE PRECISION", "blob": "BYTEA"},
}  # fmt: skip
V1_DDL = [
    "CREATE TABLE tasks ({columns})",
    "CREATE INDEX ix_tasks_lease ON tasks (status, lease_expires_at)",
    "CREATE INDEX ix_tasks_ready ON tasks (status, ready_at)",
    "CREATE INDEX ix_tasks_updated ON tasks (updated_at)",
    'CREATE TABLE tasks_meta ("key" VARCHAR(64) NOT NULL, value TEXT NOT NULL, '
    'PRIMARY KEY ("key"))',
    "INSERT INTO tasks_meta (\"key\", value) VALUES ('schema_version', '1')",
]
V1_ROW = """INSERT INTO tasks (uid, type, name, status, data, priority, progress, retry_count,
    max_retries, delay, timeout, ready_at, created_at, updated_at)
    VALUES ('old', 'work', 'from version 1', 'completed', '{"x": 1}', 3, 100.0, 1, 3, 0.0,
    30.0, 0.0, :created, :created)"""
CREATED = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone.utc)


def _make_version_1(store: Store, *, without: str | None = None) -> None:
    columns = V1_COLUMNS.format(**V1_TYPES[store.kind])
    if without is not None:
        columns = ",".join(c for c in columns.split(",") if not c.strip().startswith(without))
    for statement in V1_DDL:
        store.sql(statement.format(columns=columns))
    created: object = CREATED
    if store.kind == "sqlite":  # how version 1 stored datetimes in SQLite: fixed-width text
        created = CREATED.replace(tzinfo=None).isoformat(" ", "microseconds")
    store.sql(V1_ROW, created=created)


def _columns(store: Store, table: str = "tasks") -> list[str]:
    inspector = sa.inspect(store.raw)
    assert inspector is not None
    return [column["name"] for column in inspector.get_columns(table)]


def _indexes(store: Store) -> set[str]:
    inspector = sa.inspect(store.raw)
    assert inspector is not None
    return {index["name"] for index in inspector.get_indexes("tasks")}


@sql_only
def test_a_version_1_table_is_migrated_when_opened(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    _make_version_1(store)
    assert "key" not in _columns(store)
    adapter = store.new_adapter()
    with caplog.at_level(logging.INFO, logger="nbqueue.store"):
        adapter.open()
    assert "from schema version 1 to 2" in caplog.text
    assert store.sql("SELECT key, value FROM tasks_meta") == [("schema_version", "2")]
    assert _columns(store)[-2:] == ["key", "output"]
    assert "ix_tasks_key" in _indexes(store)
    [old] = adapter.load(["old"])
    assert (old["key"], old["output"], old["name"], old["data"]) == (
        None, None, "from version 1", '{"x": 1}',
    )  # fmt: skip
    assert old["created_at"] == CREATED and old["retry_count"] == 1
    keyed = make_task("keyed")
    adapter.save([{**rows.task_to_row(keyed), "key": "k-1", "output": "hello\n"}])
    [back] = adapter.load([keyed.uid])
    assert (back["key"], back["output"]) == ("k-1", "hello\n")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="nbqueue.store"):
        store.new_adapter().open()  # version 2 now: nothing more to do
    assert "migrated" not in caplog.text
    assert len(adapter.load()) == 2


@sql_only
def test_a_version_1_table_that_is_not_what_version_1_made_is_left_alone(store: Store) -> None:
    _make_version_1(store, without="result_blob")
    with pytest.raises(
        SchemaMismatchError, match=r"version 1: missing column\(s\) \['result_blob'\]"
    ):
        store.new_adapter().open()
    assert store.sql("SELECT key, value FROM tasks_meta") == [("schema_version", "1")]
    assert "key" not in _columns(store) and "ix_tasks_key" not in _indexes(store)
    assert store.sql("SELECT uid FROM tasks") == [("old",)]


@sql_only
def test_a_version_1_table_is_migrated_once_by_concurrent_openers(store: Store) -> None:
    _make_version_1(store)
    adapters = _open_at_once(store, 3)
    assert store.sql("SELECT key, value FROM tasks_meta") == [("schema_version", "2")]
    assert [row["uid"] for row in adapters[0].load()] == ["old"]
