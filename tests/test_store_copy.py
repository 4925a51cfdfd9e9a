"""Many new rows into PostgreSQL by COPY (nbqueue.store.pgcopy): the same rows as inserted
one by one, a refused row fails the whole batch as any refused row does, and a role that
may not create temporary tables inserts row by row."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
import store_kit as kit
from sqlalchemy import event
from store_kit import Store, make_task, postgres_only

from nbqueue import rows
from nbqueue.store import DatabaseError, SQLAlchemyAdapter, pgcopy

store, no_secret = kit.store, kit.no_secret

N = pgcopy.MIN_ROWS + 8


def varied(n: int) -> list[dict[str, Any]]:
    """Rows with every kind of value: JSON and pickled data, text, keys, times, blobs."""
    at = dt.datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=dt.timezone.utc)
    tasks = [
        make_task(
            f"t{i} 'quoted' \\ tab\t", data={"i": i, "s": "é"} if i % 2 else {i, "set"},
            description=None if i % 3 else "line\nbreak", key=f"k{i}" if i % 4 else None,
            run_at=at if i % 5 == 0 else None, metadata={"m": [i, None, True]}, priority=i % 3,
        )
        for i in range(n)
    ]  # fmt: skip
    return [rows.task_to_row(t) for t in tasks]


def statements(adapter: SQLAlchemyAdapter) -> list[str]:
    seen: list[str] = []
    event.listen(adapter.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen


def copied(seen: list[str]) -> bool:
    return any(pgcopy.STAGE_PREFIX in sql and sql.startswith("INSERT") for sql in seen)


@pytest.fixture
def pg(store: Store) -> Iterator[SQLAlchemyAdapter]:
    adapter = store.new_adapter()
    assert isinstance(adapter, SQLAlchemyAdapter)
    adapter.open()
    yield adapter
    adapter.close()


@postgres_only
def test_many_new_rows_go_by_copy_and_read_back_as_inserted_one_by_one(
    store: Store, pg: SQLAlchemyAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = varied(N)
    seen = statements(pg)
    pg.save(batch)
    assert copied(seen)
    by_copy = {row["uid"]: row for row in pg.load()}
    one_by_one = store.new_adapter(table="one_by_one")
    monkeypatch.setattr(pgcopy, "MIN_ROWS", 10**9)
    one_by_one.save(batch)
    by_rows = {row["uid"]: row for row in one_by_one.load()}
    assert by_copy.keys() == by_rows.keys() == {row["uid"] for row in batch}
    for uid, row in by_copy.items():
        assert {**row, "updated_at": None} == {**by_rows[uid], "updated_at": None}
    one_by_one.close()


@postgres_only
def test_a_refused_row_fails_the_copied_batch_and_the_next_batch_copies_again(
    store: Store, pg: SQLAlchemyAdapter
) -> None:
    store.sql("ALTER TABLE tasks ADD CONSTRAINT no_poison CHECK (name <> 'poison')")
    batch = varied(N)
    batch[5]["name"] = "poison"
    with pytest.raises(DatabaseError) as caught:
        pg.save(batch)  # (the temporary table made in it went with its rollback)
    assert caught.value.permanent is True
    assert isinstance(caught.value.__cause__, sa.exc.IntegrityError)
    assert pg.load() == []
    good = batch[:5] + batch[6:]
    seen = statements(pg)
    pg.save(good)
    assert copied(seen)
    assert len(pg.load()) == len(good)


@postgres_only
def test_a_role_that_may_not_create_temporary_tables_inserts_row_by_row(
    store: Store, postgres_server: sa.Engine, pg: SQLAlchemyAdapter
) -> None:
    assert store.url is not None
    database = sa.make_url(store.url).database
    role = f"nbq_notemp_{uuid.uuid4().hex[:8]}"
    with postgres_server.connect() as conn:
        conn.exec_driver_sql(f'CREATE ROLE "{role}" LOGIN')
    try:
        store.sql(f'REVOKE TEMPORARY ON DATABASE "{database}" FROM PUBLIC')
        store.sql(
            f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"'
        )
        url = sa.make_url(store.url).set(username=role).render_as_string(hide_password=False)
        writer = SQLAlchemyAdapter(url)
        seen = statements(writer)
        batch = varied(N)
        writer.save(batch)
        assert not copied(seen)
        assert {row["uid"] for row in writer.load()} == {row["uid"] for row in batch}
        writer.close()
    finally:
        store.sql(f'DROP OWNED BY "{role}"')
        with postgres_server.connect() as conn:
            conn.exec_driver_sql(f'DROP ROLE "{role}"')
