"""Secure by default on a shared database, against the real PostgreSQL
(NBQUEUE_TEST_POSTGRES_URL) with real ``nbqueue worker`` host processes.

The test server is on loopback, so NBQUEUE_REQUIRE_SIGNED=1 stands in for a database on
another machine where a client is concerned; a host applies the shared-database rule
wherever its database is. The server trusts local connections, so a URL may carry any
password: it must never show.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from helpers import poll, sql, write_task
from hosts import WorkerHost

from nbqueue import Queue, Status, Task, signing
from nbqueue.errors import (
    ConfigurationError,
    DatabaseError,
    UnsignedPayloadError,
    UnsignedPayloadWarning,
)
from nbqueue.store import SQLAlchemyAdapter

SIGNING_ENV = ("NBQUEUE_SECRET", "NBQUEUE_REQUIRE_SIGNED", "NBQUEUE_ALLOW_UNSIGNED")
PASSWORD = f"pw-{secrets.token_hex(8)}"
OLD_KEY = f"old-{secrets.token_hex(16)}"
NEW_KEY = f"new-{secrets.token_hex(16)}"
NEVER_SHOWN = (PASSWORD, OLD_KEY, NEW_KEY)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SIGNING_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def pw_url(postgres_url: str) -> str:
    """The test database's URL with a password in it (the server ignores it)."""
    return sa.make_url(postgres_url).set(password=PASSWORD).render_as_string(hide_password=False)


@pytest.fixture
def tasks(task_dir: Path) -> Path:
    """``record``: returns its data as it came, a set included (so the result is pickled)."""
    write_task(task_dir, "record", '''
    def exec(self, task):
        return {"processed": True, "value": task.data}
''')  # fmt: skip
    return task_dir


def assert_never_shown(text: str) -> None:
    for secret in NEVER_SHOWN:
        assert secret not in text, f"{secret[:6]}... shows in:\n{text}"


class Host(WorkerHost):
    """A host with a 5 s lease and only the signing environment given here."""

    def __init__(self, url: str, tasks: Path, log: Path, *options: str, **env: str) -> None:
        base = {k: v for k, v in os.environ.items() if k not in SIGNING_ENV}
        super().__init__(url, tasks, log, "--lease", "5", *options, env={**base, **env})


def status(url: str, **env: str) -> str:
    """``nbqueue status`` in a process of its own, with only this signing environment."""
    base = {k: v for k, v in os.environ.items() if k not in SIGNING_ENV}
    done = subprocess.run(
        [sys.executable, "-m", "nbqueue.cli", "status", "--db", url],
        capture_output=True, text=True, timeout=120, env={**base, **env},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def stored(url: str, column: str) -> dict[str, Any]:
    return {uid: value for uid, value in sql(url, f"SELECT uid, {column} FROM tasks")}


def notebook_function() -> Callable[[Task[Any]], str]:
    """``shout``, as if defined in a notebook: shipped by value, not by reference."""

    def shout(task: Task[Any]) -> str:
        return f"{task.data}!"

    return shout


# -- clients ------------------------------------------------------------------------------
def test_a_client_refuses_to_store_unsigned_pickles_on_a_shared_database(
    postgres_url: str, tasks: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NBQUEUE_REQUIRE_SIGNED", "1")
    # (no host: its tasks stay pending, so the client is closed, not waited for)
    with contextlib.closing(Queue(tasks, db=postgres_url, max_workers=0).init()) as client:
        plain = Task("plain", "record", data={"i": 1})
        client.add(plain)  # plain JSON: no signature needed
        refusals = [
            lambda: client.register(notebook_function()),
            lambda: client.submit(notebook_function(), 1),
            lambda: client.add(Task("data", "record", data={1, 2})),
            lambda: client.add(Task("meta", "record", data=1, metadata={"at": (1, 2)})),
            lambda: client.add(Task("user", "record", user_id=b"bytes")),
        ]
        for refused, what in zip(
            refusals,
            ["executor 'shout'", "function 'notebook_function.<locals>.shout'",
             "the data of task 'data'", "the metadata of task 'meta'",
             "the user_id of task 'user'"],
            strict=True,
        ):  # fmt: skip
            with pytest.raises(UnsignedPayloadError) as caught:
                refused()
            message = str(caught.value)
            assert what in message and "NBQUEUE_REQUIRE_SIGNED is set" in message
            assert "NBQUEUE_SECRET" in message and "NBQUEUE_ALLOW_UNSIGNED=1" in message
        assert client.types == ["record"]  # the refused executor was not registered
        assert [t.uid for t in client.tasks] == [plain.uid]
        client.flush(30)
    # nothing already queued is affected; nothing refused was stored
    assert stored(postgres_url, "status") == {plain.uid: "pending"}
    assert sql(postgres_url, "SELECT count(*) FROM tasks_executors")[0][0] == 0

    late = Queue(max_workers=1)  # registered before there was a database
    late.register(notebook_function())
    late.set_database(postgres_url)
    with pytest.raises(UnsignedPayloadError, match="executor 'shout'"):
        late.init()
    late.close()


def test_the_opt_out_stores_unsigned_pickles_with_a_warning(
    postgres_url: str, tasks: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NBQUEUE_REQUIRE_SIGNED", "1")
    monkeypatch.setenv("NBQUEUE_ALLOW_UNSIGNED", "1")
    client = Queue(tasks, db=postgres_url, max_workers=0)
    with pytest.warns(UnsignedPayloadWarning, match="NBQUEUE_ALLOW_UNSIGNED is set"):
        client.init()
    try:
        client.register(notebook_function())
        task = Task("data", "record", data={1, 2})
        client.add(task)
        client.flush(30)
    finally:
        client.close()
    assert bytes(stored(postgres_url, "data_blob")[task.uid])[:1] == b"\x80"  # a bare pickle


def test_with_a_secret_everything_is_stored_signed(
    postgres_url: str, tasks: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NBQUEUE_REQUIRE_SIGNED", "1")
    monkeypatch.setenv("NBQUEUE_SECRET", NEW_KEY)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnsignedPayloadWarning)
        with Queue(tasks, db=postgres_url, max_workers=1) as client:
            client.register(notebook_function())
            task = Task("data", "record", data={1, 2})
            client.add(task)
            assert task.wait(60) == {"processed": True, "value": {1, 2}}
    [(payload,)] = sql(postgres_url, "SELECT payload FROM tasks_executors")
    for blob in (payload, stored(postgres_url, "data_blob")[task.uid],
                 stored(postgres_url, "result_blob")[task.uid]):  # fmt: skip
        assert bytes(blob)[:16] == signing.PREFIX + signing.key_id(NEW_KEY.encode())


def test_a_result_that_may_not_be_stored_unsigned_fails_its_task_in_the_database(
    postgres_url: str, tasks: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NBQUEUE_REQUIRE_SIGNED", "1")
    write_task(tasks, "pair", '''
    def exec(self, task):
        return {"processed": True, "value": (task.data, task.data)}
''')  # fmt: skip
    with Queue(tasks, db=postgres_url, max_workers=1) as client:
        paired, plain = Task("paired", "pair", data=1), Task("plain", "record", data={"i": 1})
        client.add(paired).add(plain)  # JSON in: accepted; a tuple out: not JSON
        client.wait(60)
        # the controller that ran it holds the result; the database could not be given it
        assert paired.result() == {"processed": True, "value": (1, 1)}
    [(state, error, blob)] = sql(
        postgres_url, "SELECT status, error, result_blob FROM tasks WHERE uid = :u", u=paired.uid
    )
    assert state == "failed" and blob is None
    assert error.startswith("UnsignedPayloadError: the result of task 'paired'")
    assert stored(postgres_url, "status")[plain.uid] == "completed"
    with Queue(tasks, db=postgres_url, max_workers=0) as other:  # what everyone else sees
        seen = other.get_task(paired.uid)
        assert seen is not None and seen.status is Status.FAILED
        assert "NBQUEUE_SECRET" in str(seen.error)


# -- hosts --------------------------------------------------------------------------------
def test_a_host_refuses_unsigned_pickles_and_runs_json_tasks(
    postgres_url: str, tasks: Path, tmp_path: Path, hosts: list[Host]
) -> None:
    # a client on this machine without a secret stores bare pickles, as it always could
    with Queue(tasks, db=postgres_url, max_workers=0) as client:
        client.register(notebook_function())
        pickled = Task("pickled", "record", data={"ids": {1, 2}})
        plain = Task("plain", "record", data={"i": 1})
        shouted = Task("shouted", "shout", data="hey")
        client.add(pickled).add(plain).add(shouted)
        host = Host(postgres_url, tasks, tmp_path / "host.log")
        hosts.append(host)
        assert plain.wait(120) == {"processed": True, "value": {"i": 1}}
        for refused, problem in ((pickled, "is unsigned"), (shouted, "refused")):
            with pytest.raises(Exception, match=problem):
                refused.wait(120)
            assert refused.status is Status.FAILED
    [(state, error)] = sql(
        postgres_url, "SELECT status, error FROM tasks WHERE uid = :u", u=pickled.uid
    )
    assert state == "failed"
    assert "is unsigned" in error and "it is served by `nbqueue worker` hosts" in error
    assert "NBQUEUE_SECRET" in error and "NBQUEUE_ALLOW_UNSIGNED=1" in error
    assert stored(postgres_url, "status")[shouted.uid] == "failed"
    assert host.serving() and "unsigned pickles refused" in host.text()
    assert host.stop() == 0, host.text()


@pytest.mark.parametrize("opt_out", ["--allow-unsigned", "NBQUEUE_ALLOW_UNSIGNED=1"])
def test_a_host_that_opts_out_runs_unsigned_pickles_and_warns_at_start_up(
    postgres_url: str, tasks: Path, tmp_path: Path, hosts: list[Host], opt_out: str
) -> None:
    name, _, value = opt_out.partition("=")
    host = (
        Host(postgres_url, tasks, tmp_path / "host.log", opt_out)
        if opt_out.startswith("--")
        else Host(postgres_url, tasks, tmp_path / "host.log", **{name: value})
    )
    hosts.append(host)
    poll(host.serving, timeout=60)
    assert "UnsignedPayloadWarning" in host.text()
    assert "NBQUEUE_ALLOW_UNSIGNED is set" in host.text()
    assert "UNSIGNED pickles stored and accepted (opt-out)" in host.text()
    with Queue(tasks, db=postgres_url, max_workers=0) as client:
        client.register(notebook_function())
        pickled = Task("pickled", "record", data={"ids": {1, 2}})
        shouted = Task("shouted", "shout", data="hey")
        client.add(pickled).add(shouted)
        assert pickled.wait(120) == {"processed": True, "value": {"ids": {1, 2}}}
        assert shouted.wait(120) == {"processed": True, "value": "hey!"}
    assert host.stop() == 0, host.text()


def test_key_rotation_and_the_keys_that_signed_what_is_stored(
    pw_url: str, tasks: Path, tmp_path: Path, hosts: list[Host], monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = signing.fingerprint(OLD_KEY.encode()), signing.fingerprint(NEW_KEY.encode())
    monkeypatch.setenv("NBQUEUE_SECRET", OLD_KEY)  # before the rotation
    with contextlib.closing(Queue(tasks, db=pw_url, max_workers=0).init()) as client:
        client.register(notebook_function())
        before = [Task("old data", "record", data={1}), Task("old fn", "shout", data=(1,))]
        for task in before:
            client.add(task)  # they wait in the database

    # every process: the new key first, the old one still verifying
    rotated = f"{NEW_KEY},{OLD_KEY}"
    host = Host(pw_url, tasks, tmp_path / "host.log", NBQUEUE_SECRET=rotated)
    hosts.append(host)
    monkeypatch.setenv("NBQUEUE_SECRET", rotated)
    with Queue(tasks, db=pw_url, max_workers=0) as client:
        after = Task("new data", "record", data={2})
        client.add(after)
        assert after.wait(120) == {"processed": True, "value": {2}}
        done = [client.get_task(t.uid) for t in before]
        for task in done:
            assert task is not None
            task.wait(120)
        assert [t.result() for t in done] == [  # type: ignore[union-attr]
            {"processed": True, "value": {1}},
            {"processed": True, "value": "(1,)!"},
        ]
    assert f"pickles signed with key {new}, 2 keys verify" in host.text()
    assert host.stop() == 0, host.text()

    report = status(pw_url, NBQUEUE_SECRET=rotated)
    lines = {line.split()[0]: line.split() for line in report.splitlines() if line.strip()}
    # signed by, then how many: task data, results, executors
    assert lines[new][:4] == [new, "1", "2", "0"]
    assert " ".join(lines[new][4:]) == "key 1 of NBQUEUE_SECRET, signs new payloads"
    assert lines[old][:4] == [old, "2", "0", "1"]
    assert " ".join(lines[old][4:]) == "key 2 of NBQUEUE_SECRET"
    assert_never_shown(report + host.text())
    assert "***" in report and "***" in host.text()

    # the old key dropped too early: status says so; its payloads are refused
    report = status(pw_url, NBQUEUE_SECRET=NEW_KEY)
    assert "not a key of NBQUEUE_SECRET here" in report.splitlines()[-1]
    monkeypatch.setenv("NBQUEUE_SECRET", NEW_KEY)
    with (
        pytest.warns(UnsignedPayloadWarning, match="not among the keys"),
        Queue(tasks, db=pw_url, max_workers=0) as client,
    ):
        refused = client.get_task(before[0].uid)
        assert refused is not None and refused.status is Status.FAILED
        assert f"signed with key {old}" in str(refused.error)


# -- secrets never shown --------------------------------------------------------------------
def test_no_password_or_key_shows_in_reprs_logs_errors_or_the_dashboard(
    pw_url: str, tasks: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NBQUEUE_SECRET", f"{NEW_KEY},{OLD_KEY}")
    caplog.set_level("DEBUG")
    shown: list[str] = []
    adapter = SQLAlchemyAdapter(pw_url)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Queue(tasks, db=adapter, max_workers=1) as queue:
            task = Task("t", "record", data={1})
            queue.add(task)
            task.wait(60)
            board = queue.dashboard()  # outside a notebook: the text snapshot
            shown += [repr(queue), str(board), repr(board), board._repr_html_()]
            shown += [repr(adapter), repr(adapter.signer), adapter.signer.summary()]
            shown += [str(queue.status_frame()), repr(task), repr(queue.workers())]
    shown += [str(w.message) for w in caught]
    assert "***" in repr(adapter) and signing.fingerprint(NEW_KEY.encode()) in repr(adapter.signer)

    # a database error, retried (a log line) then raised
    missing = sa.make_url(pw_url).set(database="nbq_no_such_database")
    broken = SQLAlchemyAdapter(
        missing.render_as_string(hide_password=False), retry_attempts=2, retry_max_seconds=5
    )
    with pytest.raises(DatabaseError) as error:
        broken.open()
    broken.close()
    shown.append(str(error.value))
    assert "***" in str(error.value) and "nbq_no_such_database" in str(error.value)
    assert any("retrying" in record.getMessage() for record in caplog.records)

    monkeypatch.delenv("NBQUEUE_SECRET")
    remote = f"postgresql+psycopg://nbq:{PASSWORD}@db.example.invalid/queue"
    for bad, problem in [
        (
            lambda: Queue(db=remote, max_workers=0).register(notebook_function()),
            UnsignedPayloadError,
        ),
        (lambda: Queue(db=remote.replace("/queue", ":port/queue")), ConfigurationError),
        (lambda: Queue(db=remote.replace("postgresql+psycopg", "mysql")), ConfigurationError),
    ]:
        with pytest.raises(problem) as refused:
            bad()
        shown.append(str(refused.value))
        assert "nbq:***@" in str(refused.value)

    shown += [record.getMessage() for record in caplog.records]
    assert_never_shown("\n".join(shown))
