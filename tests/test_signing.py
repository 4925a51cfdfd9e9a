"""Signed pickles: with NBQUEUE_SECRET set, every pickle stored in a database is signed
(HMAC-SHA256) and checked before it is unpickled; unsigned or mis-signed ones are refused.

Rows and executors on memory, SQLite and PostgreSQL (NBQUEUE_TEST_POSTGRES_URL, as in
test_store.py); tampering is done with raw SQL; and one Queue end to end on SQLite.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import pickle
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from nbqueue import Queue, Status, Task, config, rows, serialization
from nbqueue.errors import (
    CorruptRowError,
    SerializationError,
    SignatureError,
    UnsignedPayloadWarning,
)
from nbqueue.serialization import (
    SIGNATURE_PREFIX,
    sign,
    verify,
    warn_if_unsigned,
)
from nbqueue.store import DatabaseAdapter, MemoryAdapter, SQLAlchemyAdapter

SECRET = "correct horse battery staple"
OTHER_SECRET = "incorrect horse"
SAME_EVERYWHERE = "NBQUEUE_SECRET must be set to the same value on every controller and worker host"


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


@pytest.fixture(autouse=True)
def no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NBQUEUE_SECRET", raising=False)


@pytest.fixture
def use_secret(monkeypatch: pytest.MonkeyPatch) -> Callable[[str | None], None]:
    """Set (or, with None, unset) NBQUEUE_SECRET from here on."""

    def use(value: str | None) -> None:
        if value is None:
            monkeypatch.delenv("NBQUEUE_SECRET", raising=False)
        else:
            monkeypatch.setenv("NBQUEUE_SECRET", value)

    return use


# -- the format ---------------------------------------------------------------------------
def test_sign_and_verify() -> None:
    data = pickle.dumps({"a": 1})
    blob = sign(data, b"key")
    assert SIGNATURE_PREFIX == b"nbqsig1:"
    assert blob == SIGNATURE_PREFIX + blob[8:40] + data and len(blob) == 8 + 32 + len(data)
    assert blob[8:40] == hmac.new(b"key", SIGNATURE_PREFIX + data, hashlib.sha256).digest()
    assert verify(blob, b"key", "a thing") == data
    assert verify(memoryview(blob), b"key", "a thing") == data
    assert verify(data, None, "a thing") == data  # no secret: unsigned is accepted

    flipped_data = bytearray(blob)
    flipped_data[-3] ^= 0x01
    flipped_mac = bytearray(blob)
    flipped_mac[10] ^= 0x80
    refused = [
        (blob, b"other key", "mis-signed"),
        (bytes(flipped_data), b"key", "mis-signed"),
        (bytes(flipped_mac), b"key", "mis-signed"),
        (blob[:20], b"key", "mis-signed"),
        (data, b"key", "unsigned"),
        (blob, None, "is signed, but NBQUEUE_SECRET is not set"),
    ]
    for bad, key, problem in refused:
        with pytest.raises(SignatureError) as caught:
            verify(bad, key, "the thing")
        message = str(caught.value)
        assert problem in message and "the thing" in message and SAME_EVERYWHERE in message
        assert isinstance(caught.value, SerializationError)


def test_secret_is_read_from_the_environment_at_call_time(
    use_secret: Callable[[str | None], None],
) -> None:
    assert config.secret() is None
    for empty in ("", "  \n"):
        use_secret(empty)
        assert config.secret() is None
    use_secret(" s3cret\n")  # as read from a file
    assert config.secret() == b"s3cret"
    use_secret("clé")
    assert config.secret() == "clé".encode()


# -- rows and executors on every backend --------------------------------------------------
@dataclasses.dataclass
class Db:
    kind: str
    adapter: DatabaseAdapter
    raw: sa.Engine | None  # None for memory

    def sql(self, statement: str, **params: Any) -> list[Any]:
        assert self.raw is not None
        with self.raw.begin() as conn:
            result = conn.execute(sa.text(statement), params)
            return list(result) if result.returns_rows else []

    def flip_byte(self, table: str, column: str, key: str, value: str) -> None:
        """Flip one bit of a byte in the middle of a stored blob, with raw SQL."""
        [(blob,)] = self.sql(f"SELECT {column} FROM {table} WHERE {key} = :v", v=value)
        tampered = bytearray(blob)
        tampered[len(tampered) // 2 + 20] ^= 0x01  # in the pickle, past prefix and MAC
        self.sql(f"UPDATE {table} SET {column} = :b WHERE {key} = :v", b=bytes(tampered), v=value)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    if request.param == "memory":
        yield Db("memory", MemoryAdapter(), None)
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'tasks.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    adapter, raw = SQLAlchemyAdapter(url), sa.create_engine(url)
    try:
        yield Db(request.param, adapter, raw)
    finally:
        adapter.close()
        raw.dispose()


sql_only = pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)


def pickled_task(name: str = "pickled") -> Task[Any]:
    """A finished task with inputs and a result that are not JSON: both blobs are used."""
    task: Task[Any] = Task(name, "work", data={"ids": {1, 2}}, metadata={"at": Point(0, 0)})
    task.status = Status.COMPLETED
    task._result_bytes = serialization.dumps({"processed": True, "value": Point(1, 2)})
    return task


def json_task(name: str = "json") -> Task[Any]:
    return Task(name, "work", data={"i": 1})


def load(db: Db, task: Task[Any]) -> dict[str, Any]:
    [row] = db.adapter.load([task.uid])
    return row


@pytest.mark.parametrize("secret", [None, SECRET])
def test_round_trip(db: Db, use_secret: Callable[[str | None], None], secret: str | None) -> None:
    use_secret(secret)
    task = pickled_task()
    db.adapter.save([rows.task_to_row(task)])
    row = load(db, task)
    for column in ("data_blob", "result_blob"):
        assert bytes(row[column]).startswith(SIGNATURE_PREFIX) is (secret is not None), column
    back = rows.row_to_task(row)
    assert back.data == {"ids": {1, 2}} and back.metadata == {"at": Point(0, 0)}
    assert back.result == {"processed": True, "value": Point(1, 2)}
    # A state row signs the result too; applied elsewhere, it is checked and unsigned.
    running = json_task("running")
    db.adapter.save([rows.task_to_row(running)])
    running._result_bytes = serialization.dumps({"processed": True, "value": {1}})
    running.status = Status.COMPLETED
    db.adapter.save([rows.task_state_row(running)])
    copy = json_task("copy")
    copy.uid = running.uid
    rows.apply_state(copy, load(db, running))
    assert copy.result == {"processed": True, "value": {1}}
    # Executors.
    payload = serialization.dumps_by_value(lambda task: task.data, "executor 'work'")
    db.adapter.save_executor("work", serialization.digest(payload), payload)
    assert db.adapter.load_executor("work") == (serialization.digest(payload), payload)
    if db.raw is not None:
        [(stored,)] = db.sql("SELECT payload FROM tasks_executors")
        assert bytes(stored).startswith(SIGNATURE_PREFIX) is (secret is not None)


def _assert_refused(db: Db, task: Task[Any], problem: str, *, column: str = "data_blob") -> None:
    """Reading ``task``'s row fails that task only, with the SignatureError as the cause."""
    with pytest.raises(CorruptRowError) as caught:
        rows.row_to_task(load(db, task))
    error = caught.value
    assert error.uid == task.uid and task.uid in str(error)
    assert problem in str(error) and repr(column) in str(error)
    assert isinstance(error.__cause__, SignatureError)
    stand_in, corrupt = rows.task_or_placeholder(load(db, task))
    assert corrupt is not None and stand_in.uid == task.uid and stand_in.status is Status.FAILED


@sql_only
@pytest.mark.parametrize("column", ["data_blob", "result_blob"])
def test_tampered_blob_fails_only_its_task(
    db: Db, use_secret: Callable[[str | None], None], column: str
) -> None:
    use_secret(SECRET)
    good, bad = pickled_task("good"), pickled_task("bad")
    plain = json_task()
    db.adapter.save([rows.task_to_row(t) for t in (good, bad, plain)])
    db.flip_byte("tasks", column, "uid", bad.uid)
    _assert_refused(db, bad, "mis-signed", column=column)
    assert rows.row_to_task(load(db, good)).result == {"processed": True, "value": Point(1, 2)}
    assert rows.row_to_task(load(db, plain)).data == {"i": 1}
    if column == "result_blob":  # syncing a tampered state row is refused too
        with pytest.raises(CorruptRowError, match=bad.uid):
            rows.apply_state(pickled_task("copy"), {**load(db, bad), "uid": bad.uid})


@pytest.mark.parametrize(
    ("written_with", "read_with", "problem"),
    [
        (None, SECRET, "unsigned"),
        (SECRET, OTHER_SECRET, "mis-signed"),
        (SECRET, None, "is signed, but NBQUEUE_SECRET is not set"),
    ],
)
def test_rows_from_another_secret_are_refused(
    db: Db,
    use_secret: Callable[[str | None], None],
    written_with: str | None,
    read_with: str | None,
    problem: str,
) -> None:
    use_secret(written_with)
    task, plain = pickled_task(), json_task()
    db.adapter.save([rows.task_to_row(task), rows.task_to_row(plain)])
    use_secret(read_with)
    _assert_refused(db, task, problem)
    assert rows.row_to_task(load(db, plain)).data == {"i": 1}  # nothing pickled: readable

    payload = b"\x80\x05executor."
    use_secret(written_with)
    db.adapter.save_executor("work", "d1", payload)
    use_secret(read_with)
    with pytest.raises(SignatureError, match=problem) as caught:
        db.adapter.load_executor("work")
    assert "'work'" in str(caught.value) and SAME_EVERYWHERE in str(caught.value)


@sql_only
def test_tampered_executor_is_refused(db: Db, use_secret: Callable[[str | None], None]) -> None:
    use_secret(SECRET)
    payload = serialization.dumps_by_value(lambda task: task.data, "executor 'work'")
    digest = serialization.digest(payload)
    db.adapter.save_executor("work", digest, payload)
    db.flip_byte("tasks_executors", "payload", "digest", digest)
    with pytest.raises(SignatureError, match="mis-signed") as caught:
        db.adapter.load_executor("work", digest)
    assert "'work'" in str(caught.value) and digest in str(caught.value)
    # Written unsigned behind nbqueue's back: refused as well.
    db.sql("UPDATE tasks_executors SET payload = :p WHERE digest = :d", p=payload, d=digest)
    with pytest.raises(SignatureError, match="unsigned"):
        db.adapter.load_executor("work")


# -- the warning --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://nbq:s3cret@db.example.com:5432/queue",
        "postgresql://nbq@10.0.0.5/queue",
        "postgresql+psycopg://nbq@localhost/queue?host=db.internal",
        "postgresql+psycopg://nbq@/queue?host=/run/postgresql,db.internal",
    ],
)
def test_warning_for_a_remote_database_without_a_secret(
    url: str, use_secret: Callable[[str | None], None]
) -> None:
    with pytest.warns(UnsignedPayloadWarning) as caught:
        warn_if_unsigned(url)
    [warning] = caught
    message = str(warning.message)
    assert "NBQUEUE_SECRET" in message and "UNSIGNED" in message and "run any code" in message
    assert "s3cret" not in message and issubclass(warning.category, UserWarning)
    use_secret(SECRET)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_unsigned(url)  # signed: nothing to warn about


@pytest.mark.parametrize(
    "url",
    [
        None,
        "sqlite:///nbqueue.db",
        "sqlite://",
        "postgresql+psycopg://postgres@localhost:5432/test",
        "postgresql+psycopg://postgres@127.0.0.1/test",
        "postgresql+psycopg://postgres@[::1]:5432/test",
        "postgresql+psycopg://postgres@/test",
        "postgresql+psycopg://postgres@/test?host=/var/run/postgresql",
    ],
)
def test_no_warning_for_a_local_database(url: str | None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_unsigned(url)


# -- a queue end to end -------------------------------------------------------------------
def test_queue_with_a_secret_end_to_end(
    tmp_path: Path, use_secret: Callable[[str | None], None]
) -> None:
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    use_secret(SECRET)

    def pair(task: Task[Any]) -> Any:
        return (task.data, frozenset({1}))

    def echo(task: Task[Any]) -> Any:
        return task.data

    with Queue(db=url, max_workers=1) as q:
        q.register(pair)
        q.register(echo)
        signed = Task("signed", "pair", data={"ids": {1, 2}})
        plain = Task("plain", "echo", data=3)  # JSON in, JSON out: nothing pickled
        q.add(signed).add(plain)
        q.wait(60)
        assert signed.status is Status.COMPLETED, signed.errors
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        stored = dict(conn.execute(sa.text("SELECT uid, data_blob FROM tasks")).all())
        [(result_blob,)] = conn.execute(
            sa.text("SELECT result_blob FROM tasks WHERE uid = :u"), {"u": signed.uid}
        ).all()
    engine.dispose()
    assert bytes(stored[signed.uid]).startswith(SIGNATURE_PREFIX) and stored[plain.uid] is None
    assert bytes(result_blob).startswith(SIGNATURE_PREFIX)

    with Queue(db=url, max_workers=1) as fresh:  # the same secret: everything reads back
        fresh.register(pair)
        fresh.register(echo)
        again = fresh.get_task(signed.uid)
        assert again is not None and again.status is Status.COMPLETED
        assert again.result == {"processed": True, "value": ({"ids": {1, 2}}, frozenset({1}))}

    use_secret(OTHER_SECRET)  # a controller with another secret refuses only the pickles
    with Queue(db=url, max_workers=1) as other:
        other.register(pair)
        other.register(echo)
        refused, readable = other.get_task(signed.uid), other.get_task(plain.uid)
        assert refused is not None and refused.status is Status.FAILED
        assert "mis-signed" in str(refused.error) and signed.uid in str(refused.error)
        assert readable is not None and readable.status is Status.COMPLETED
        assert readable.result == {"processed": True, "value": 3}
