"""Signed pickles (nbqueue.signing): the format, key ids and rotation, the rule that says
when unsigned pickles are refused, and the pickles of rows and executors on memory, SQLite
and PostgreSQL (NBQUEUE_TEST_POSTGRES_URL, as in test_store.py); tampering is done with raw
SQL; and one Queue end to end on SQLite. Queues, hosts and the CLI under the shared-database
rule are in test_security.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import pickle
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from nbqueue import Queue, Status, Task, config, rows, serialization, signing
from nbqueue.errors import (
    ConfigurationError,
    CorruptRowError,
    SerializationError,
    SignatureError,
    UnsignedPayloadError,
    UnsignedPayloadWarning,
)
from nbqueue.signing import PREFIX, PREFIX_V1, Signer, fingerprint, key_id, sign
from nbqueue.store import DatabaseAdapter, MemoryAdapter, SQLAlchemyAdapter

SECRET = "correct horse battery staple"
OTHER_SECRET = "incorrect horse"
SAME_EVERYWHERE = "NBQUEUE_SECRET must be set to the same value on every controller and worker host"
ENV = ("NBQUEUE_SECRET", "NBQUEUE_REQUIRE_SIGNED", "NBQUEUE_ALLOW_UNSIGNED", "PGHOST", "PGHOSTADDR",
       "PGSERVICE")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def signer(*keys: str, shared: str | None = None, allow_unsigned: bool = False) -> Signer:
    return Signer(tuple(k.encode() for k in keys), shared=shared, allow_unsigned=allow_unsigned)


def sign_v1(data: bytes, key: bytes) -> bytes:
    """A blob of the first format, as nbqueue wrote it before key ids."""
    return PREFIX_V1 + hmac.new(key, PREFIX_V1 + data, hashlib.sha256).digest() + data


# -- the format ---------------------------------------------------------------------------
def test_the_signed_format_carries_the_key_id() -> None:
    data = pickle.dumps({"a": 1})
    blob = sign(data, b"key")
    kid = key_id(b"key")
    assert PREFIX == b"nbqsig2:" and len(kid) == 8
    assert kid == hmac.new(b"key", b"nbqueue key id", hashlib.sha256).digest()[:8]
    assert blob == PREFIX + kid + blob[16:48] + data and len(blob) == 8 + 8 + 32 + len(data)
    assert blob[16:48] == hmac.new(b"key", PREFIX + kid + data, hashlib.sha256).digest()
    assert fingerprint(b"key") == kid.hex()[:8]
    assert signer("key").open(blob, "a thing") == data
    assert signer("key").open(memoryview(blob), "a thing") == data  # type: ignore[arg-type]
    assert signer("key").seal(data, "a thing") == blob
    assert signer().open(data, "a thing") == data  # no key, a local database: as it is
    assert signer().seal(data, "a thing") == data


def test_the_first_format_is_still_read() -> None:
    data = pickle.dumps([1, 2])
    old = sign_v1(data, b"old")
    assert signer("old").open(old, "it") == data
    assert signer("new", "old").open(old, "it") == data  # every key is tried: no key id
    with pytest.raises(SignatureError, match="mis-signed"):
        signer("new").open(old, "it")


def test_refused_blobs_name_the_problem_and_the_fix() -> None:
    key, other = SECRET.encode(), OTHER_SECRET.encode()
    data = pickle.dumps({"a": 1})
    blob = sign(data, key)
    flipped_data, flipped_mac = bytearray(blob), bytearray(blob)
    flipped_data[-3] ^= 0x01
    flipped_mac[20] ^= 0x80
    old = sign_v1(data, key)
    refused = [
        (blob, signer(OTHER_SECRET), f"signed with key {fingerprint(key)}, which is not among"),
        (bytes(flipped_data), signer(SECRET), "mis-signed"),
        (bytes(flipped_mac), signer(SECRET), "mis-signed"),
        (blob[:30], signer(SECRET), "mis-signed"),
        (old[:20], signer(SECRET), "mis-signed"),
        (sign_v1(data, other), signer(SECRET), "mis-signed"),
        (data, signer(SECRET), "unsigned, but NBQUEUE_SECRET is set"),
        (data, signer(shared="it is not on this machine"), "unsigned, and the database is shared"),
        (blob, signer(), "but NBQUEUE_SECRET is not set"),
        (old, signer(), "is signed, but NBQUEUE_SECRET is not set"),
    ]
    for bad, checker, problem in refused:
        with pytest.raises(SignatureError) as caught:
            checker.open(bad, "the thing")
        message = str(caught.value)
        assert problem in message and "the thing" in message and SAME_EVERYWHERE in message
        assert SECRET not in message and OTHER_SECRET not in message
        assert isinstance(caught.value, SerializationError)
    # the shared-database refusal names the opt-out too
    with pytest.raises(SignatureError, match="NBQUEUE_ALLOW_UNSIGNED=1"):
        signer(shared="it is not on this machine").open(data, "the thing")


def test_key_rotation_signs_with_the_first_key_and_verifies_with_every_one() -> None:
    data = pickle.dumps({"x": 1})
    rotated = signer("new", "old")
    sealed = rotated.seal(data, "it")
    assert sealed[8:16] == key_id(b"new")
    assert rotated.fingerprints == [fingerprint(b"new"), fingerprint(b"old")]
    for blob in (sign(data, b"old"), sign_v1(data, b"old"), sealed):
        assert rotated.open(blob, "it") == data
    with pytest.raises(SignatureError) as caught:  # the old key dropped too early
        signer("new").open(sign(data, b"old"), "it")
    message = str(caught.value)
    assert fingerprint(b"old") in message and fingerprint(b"new") in message
    assert "rotation" in message


def test_the_opt_out_accepts_unsigned_pickles_and_says_so() -> None:
    data = pickle.dumps(1)
    opted_out = signer(shared="it is not on this machine", allow_unsigned=True)
    assert not opted_out.required
    assert opted_out.open(data, "it") == data and opted_out.seal(data, "it") == data
    assert signer("key", allow_unsigned=True).open(data, "it") == data
    with pytest.warns(UnsignedPayloadWarning, match="NBQUEUE_ALLOW_UNSIGNED is set"):
        opted_out.warn_if_opted_out()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        signer(shared="it is not on this machine").warn_if_opted_out()
        signer("key").warn_if_opted_out()


def test_storing_unsigned_on_a_shared_database_is_refused_with_the_fix() -> None:
    shared = signer(shared="it is not on this machine")
    assert shared.required
    with pytest.raises(UnsignedPayloadError) as caught:
        shared.seal(b"\x80\x05N.", "the data of task 'fit'")
    message = str(caught.value)
    assert "the data of task 'fit'" in message and "it is not on this machine" in message
    assert "NBQUEUE_SECRET" in message and "NBQUEUE_ALLOW_UNSIGNED=1" in message
    assert "Nothing was stored" in message
    assert signer("key", shared="it is not on this machine").seal(b"x", "it").startswith(PREFIX)


def test_labels_say_which_key_signed_without_unpickling() -> None:
    data = b"\x80\x05N."
    ours = signer("new", "old")
    tampered = bytearray(sign(data, b"new"))
    tampered[-2] ^= 1
    assert ours.label(data) == "unsigned"
    assert ours.label(sign(data, b"new")) == fingerprint(b"new")
    assert ours.label(sign_v1(data, b"old")) == fingerprint(b"old")
    assert ours.label(sign(data, b"someone else")) == fingerprint(b"someone else")
    assert ours.label(sign_v1(data, b"someone else")) == "unknown key"
    assert ours.label(bytes(tampered)) == "mis-signed"
    assert signer().label(sign(data, b"new")) == fingerprint(b"new")  # the id is in the blob


def test_keys_never_show() -> None:
    rotated = signer(SECRET, OTHER_SECRET)
    for text in (repr(rotated), str(rotated), rotated.summary()):
        assert SECRET not in text and OTHER_SECRET not in text
        assert SECRET.encode().hex() not in text
    assert fingerprint(SECRET.encode()) in repr(rotated)


# -- the environment ----------------------------------------------------------------------
def test_keys_come_from_nbqueue_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    assert config.secret_keys() == ()
    for value, keys in [
        ("", ()),
        ("  \n", ()),
        (" s3cret\n", (b"s3cret",)),  # as read from a file
        ("clé", ("clé".encode(),)),
        ("new, old ,, new\n", (b"new", b"old")),  # the new key first; empties and repeats go
    ]:
        monkeypatch.setenv("NBQUEUE_SECRET", value)
        assert config.secret_keys() == keys


@pytest.mark.parametrize("name", ["NBQUEUE_REQUIRE_SIGNED", "NBQUEUE_ALLOW_UNSIGNED"])
def test_flags_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    read = config.require_signed if name == "NBQUEUE_REQUIRE_SIGNED" else config.allow_unsigned
    assert read() is False
    for value, expected in [("1", True), ("true", True), (" YES ", True), ("0", False),
                            ("off", False), ("", False)]:  # fmt: skip
        monkeypatch.setenv(name, value)
        assert read() is expected
    monkeypatch.setenv(name, "perhaps")
    with pytest.raises(ConfigurationError, match=f"{name} must be 1 or 0"):
        read()


SHARED_URLS = [
    "postgresql+psycopg://nbq:s3cret@db.example.com:5432/queue",
    "postgresql://nbq@10.0.0.5/queue",
    "postgresql+psycopg://nbq@localhost/queue?host=db.internal",
    "postgresql+psycopg://nbq@/queue?host=/run/postgresql,db.internal",
    "postgresql+psycopg://nbq@localhost/queue?hostaddr=10.0.0.5",
    "postgresql+psycopg://nbq@/queue?service=queue",
    "mysql://nbq@localhost/queue",
    "not a url",
]
LOCAL_URLS = [
    "sqlite:///nbqueue.db",
    "sqlite://",
    "postgresql+psycopg://postgres@localhost:5432/test",
    "postgresql+psycopg://postgres@127.0.0.1/test",
    "postgresql+psycopg://postgres@127.0.0.2/test",
    "postgresql+psycopg://postgres@[::1]:5432/test",
    "postgresql+psycopg://postgres@/test",
    "postgresql+psycopg://postgres@/test?host=/var/run/postgresql",
]


@pytest.mark.parametrize("url", SHARED_URLS)
def test_a_database_elsewhere_is_shared(url: str) -> None:
    assert not signing.is_local(url)
    made = signing.for_database(url)
    assert made.shared == "it is not on this machine" and made.required
    assert "s3cret" not in repr(made) and "s3cret" not in made.where


@pytest.mark.parametrize("url", [*LOCAL_URLS, None])
def test_a_local_database_is_not_shared(url: str | None) -> None:
    assert url is None or signing.is_local(url)
    made = signing.for_database(url)
    assert made.shared is None and not made.required and made.keys == ()


def test_libpq_environment_decides_for_a_url_without_a_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "postgresql+psycopg://postgres@/test"
    monkeypatch.setenv("PGHOST", "db.example.com")
    assert not signing.is_local(url)
    monkeypatch.setenv("PGHOST", "/run/postgresql,localhost")
    assert signing.is_local(url)
    monkeypatch.setenv("PGSERVICE", "queue")  # a service file names the host: not looked into
    assert not signing.is_local(url)
    assert signing.is_local("postgresql+psycopg://postgres@localhost/test")  # the URL wins


def test_the_rule_for_a_database(monkeypatch: pytest.MonkeyPatch) -> None:
    local = "postgresql+psycopg://postgres:pw@127.0.0.1/test"
    assert signing.for_database(local).shared is None
    host = signing.for_database(local, host=True)
    assert host.shared == "it is served by `nbqueue worker` hosts" and host.required
    assert not signing.for_database(local, host=True, allow_unsigned=True).required
    monkeypatch.setenv("NBQUEUE_REQUIRE_SIGNED", "1")
    forced = signing.for_database(local)
    assert forced.shared == "NBQUEUE_REQUIRE_SIGNED is set" and forced.required
    assert forced.where == "postgresql+psycopg://postgres:***@127.0.0.1/test"
    monkeypatch.setenv("NBQUEUE_ALLOW_UNSIGNED", "1")
    assert not signing.for_database(local).required
    monkeypatch.setenv("NBQUEUE_SECRET", "new,old")
    assert signing.for_database(local).keys == (b"new", b"old")


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
        tampered[len(tampered) // 2 + 24] ^= 0x01  # in the pickle, past the header
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


def test_an_adapter_makes_its_signer_once(db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBQUEUE_SECRET", SECRET)
    made = db.adapter.signer
    assert made.keys == (SECRET.encode(),) and made.shared is None  # local, or in memory
    monkeypatch.setenv("NBQUEUE_SECRET", OTHER_SECRET)
    assert db.adapter.signer is made
    db.adapter.signer = signer(OTHER_SECRET)
    assert db.adapter.signer.keys == (OTHER_SECRET.encode(),)
    with pytest.raises(ConfigurationError, match="a signing"):
        db.adapter.signer = "key"  # type: ignore[assignment]
    with pytest.raises(ConfigurationError, match="non-empty bytes"):
        Signer(("key",))  # type: ignore[arg-type]


@pytest.mark.parametrize("secret", [None, SECRET])
def test_round_trip(db: Db, secret: str | None) -> None:
    keys = signer() if secret is None else signer(secret)
    db.adapter.signer = keys
    task = pickled_task()
    db.adapter.save([rows.task_to_row(task, signer=keys)])
    row = load(db, task)
    for column in ("data_blob", "result_blob"):
        assert bytes(row[column]).startswith(PREFIX) is (secret is not None), column
    back = rows.row_to_task(row, signer=keys)
    assert back.data == {"ids": {1, 2}} and back.metadata == {"at": Point(0, 0)}
    assert back.result() == {"processed": True, "value": Point(1, 2)}
    # A state row signs the result too; applied elsewhere, it is checked and unsigned.
    running = json_task("running")
    db.adapter.save([rows.task_to_row(running, signer=keys)])
    running._result_bytes = serialization.dumps({"processed": True, "value": {1}})
    running.status = Status.COMPLETED
    db.adapter.save([rows.task_state_row(running, signer=keys)])
    copy = json_task("copy")
    copy.uid = running.uid
    rows.apply_state(copy, load(db, running), signer=keys)
    assert copy.result() == {"processed": True, "value": {1}}
    # Executors.
    payload = serialization.dumps_by_value(lambda task: task.data, "executor 'work'")
    db.adapter.save_executor("work", serialization.digest(payload), payload)
    assert db.adapter.load_executor("work") == (serialization.digest(payload), payload)
    [stored] = db.adapter.executor_blobs().values()
    assert stored.startswith(PREFIX) is (secret is not None)
    if db.raw is not None:
        [(raw,)] = db.sql("SELECT payload FROM tasks_executors")
        assert bytes(raw) == stored


def _assert_refused(
    db: Db, task: Task[Any], problem: str, reader: Signer, *, column: str = "data_blob"
) -> None:
    """Reading ``task``'s row fails that task only, with the SignatureError as the cause."""
    with pytest.raises(CorruptRowError) as caught:
        rows.row_to_task(load(db, task), signer=reader)
    error = caught.value
    assert error.uid == task.uid and task.uid in str(error)
    assert problem in str(error) and repr(column) in str(error)
    assert isinstance(error.__cause__, SignatureError)
    stand_in, corrupt = rows.task_or_placeholder(load(db, task), signer=reader)
    assert corrupt is not None and stand_in.uid == task.uid and stand_in.status is Status.FAILED


@sql_only
@pytest.mark.parametrize("column", ["data_blob", "result_blob"])
def test_tampered_blob_fails_only_its_task(db: Db, column: str) -> None:
    keys = signer(SECRET)
    good, bad = pickled_task("good"), pickled_task("bad")
    plain = json_task()
    db.adapter.save([rows.task_to_row(t, signer=keys) for t in (good, bad, plain)])
    db.flip_byte("tasks", column, "uid", bad.uid)
    _assert_refused(db, bad, "mis-signed", keys, column=column)
    back = rows.row_to_task(load(db, good), signer=keys)
    assert back.result() == {"processed": True, "value": Point(1, 2)}
    assert rows.row_to_task(load(db, plain), signer=keys).data == {"i": 1}
    if column == "result_blob":  # syncing a tampered state row is refused too
        with pytest.raises(CorruptRowError, match=bad.uid):
            rows.apply_state(pickled_task("copy"), {**load(db, bad), "uid": bad.uid}, signer=keys)


@pytest.mark.parametrize(
    ("writer", "reader", "problem"),
    [
        (signer(), signer(SECRET), "unsigned, but NBQUEUE_SECRET is set"),
        (signer(), signer(shared="it is not on this machine"), "the database is shared"),
        (signer(SECRET), signer(OTHER_SECRET), "which is not among the keys"),
        (signer(SECRET), signer(), "but NBQUEUE_SECRET is not set"),
    ],
)
def test_rows_and_executors_another_signer_refuses(
    db: Db, writer: Signer, reader: Signer, problem: str
) -> None:
    task, plain = pickled_task(), json_task()
    db.adapter.save([rows.task_to_row(task, signer=writer), rows.task_to_row(plain, signer=writer)])
    _assert_refused(db, task, problem, reader)
    assert rows.row_to_task(load(db, plain), signer=reader).data == {"i": 1}  # JSON: readable

    db.adapter.signer = writer
    db.adapter.save_executor("work", "d1", b"\x80\x05executor.")
    db.adapter.signer = reader
    with pytest.raises(SignatureError, match=problem) as caught:
        db.adapter.load_executor("work")
    assert "'work'" in str(caught.value) and SAME_EVERYWHERE in str(caught.value)


def test_pickles_a_shared_database_may_not_store_unsigned(db: Db) -> None:
    shared = signer(shared="NBQUEUE_REQUIRE_SIGNED is set")
    db.adapter.signer = shared
    for task, names in [
        (Task("d", "work", data={1, 2}), "the data of task 'd'"),
        (Task("m", "work", data=1, metadata={"at": Point(0, 0)}), "the metadata of task 'm'"),
        (Task("u", "work", user_id=("a", 1)), "the user_id of task 'u'"),
    ]:
        with pytest.raises(UnsignedPayloadError, match=names):
            rows.task_to_row(task, signer=shared)
    assert rows.task_to_row(json_task(), signer=shared)["data_blob"] is None  # JSON: fine
    with pytest.raises(UnsignedPayloadError, match="executor 'work'"):
        db.adapter.save_executor("work", "d1", b"\x80\x05executor.")
    assert db.adapter.executor_digests() == {}
    # A result that is not JSON is not stored unsigned either: the row says why it failed.
    done = pickled_task("done")
    state = rows.task_state_row(done, signer=shared)
    assert state["status"] == "failed" and state["result_blob"] is None
    assert state["error"].startswith("UnsignedPayloadError: the result of task 'done'")
    db.adapter.save([{**rows.task_to_row(json_task("done")), **state, "uid": done.uid}])
    back = rows.row_to_task(load(db, done), signer=shared)
    assert back.status is Status.FAILED and back.errors[-1].type == "UnsignedPayloadError"


@sql_only
def test_tampered_executor_is_refused(db: Db) -> None:
    db.adapter.signer = signer(SECRET)
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


# -- a queue end to end -------------------------------------------------------------------
def test_queue_with_a_secret_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    monkeypatch.setenv("NBQUEUE_SECRET", SECRET)

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
    assert bytes(stored[signed.uid]).startswith(PREFIX) and stored[plain.uid] is None
    assert bytes(result_blob)[8:16] == key_id(SECRET.encode())

    with Queue(db=url, max_workers=1) as fresh:  # the same secret: everything reads back
        fresh.register(pair)
        fresh.register(echo)
        again = fresh.get_task(signed.uid)
        assert again is not None and again.status is Status.COMPLETED
        assert again.result() == {"processed": True, "value": ({"ids": {1, 2}}, frozenset({1}))}

    monkeypatch.setenv("NBQUEUE_SECRET", OTHER_SECRET)  # another key refuses only the pickles
    with (
        pytest.warns(UnsignedPayloadWarning, match="not among the keys"),
        Queue(db=url, max_workers=1) as other,
    ):
        other.register(pair)
        other.register(echo)
        refused, readable = other.get_task(signed.uid), other.get_task(plain.uid)
        assert refused is not None and refused.status is Status.FAILED
        assert "not among the keys" in str(refused.error) and signed.uid in str(refused.error)
        assert readable is not None and readable.status is Status.COMPLETED
        assert readable.result() == {"processed": True, "value": 3}


def test_a_local_database_without_a_secret_works_as_before(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'queue.db'}"

    def pair(task: Task[Any]) -> Any:
        return (task.data, 1)

    with warnings.catch_warnings():
        warnings.simplefilter("error", UnsignedPayloadWarning)
        with Queue(db=url, max_workers=1) as q:
            q.register(pair)
            task = Task("t", "pair", data={1})
            q.add(task)
            assert task.wait(60) == {"processed": True, "value": ({1}, 1)}
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        blobs = conn.execute(sa.text("SELECT data_blob, result_blob FROM tasks")).one()
    engine.dispose()
    assert all(bytes(blob)[:1] == b"\x80" for blob in blobs)  # pickles, as they are
