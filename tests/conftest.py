"""Shared fixtures: every test ends with no child process left behind."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa
from hosts import WorkerHost

POSTGRES_ENV = "NBQUEUE_TEST_POSTGRES_URL"


def _children() -> list[psutil.Process]:
    """Live descendants, except multiprocessing's resource tracker: one per interpreter,
    started by the first spawn and gone when the interpreter exits."""
    alive = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(
                child.cmdline()
            ):
                alive.append(child)
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.fixture(autouse=True)
def no_leftover_children() -> Iterator[None]:
    """Fail a test that leaves a child process running (after a bounded grace period)."""
    before = {p.pid for p in _children()}
    yield
    deadline = time.monotonic() + 10
    while True:
        left = [p for p in _children() if p.pid not in before]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for p in left:
        p.kill()
    assert not left, f"child processes left behind: {[p.cmdline() for p in left]}"


@pytest.fixture
def task_dir(tmp_path: Path) -> Path:
    """An empty task directory."""
    d = tmp_path / "tasks"
    d.mkdir()
    return d


@pytest.fixture
def marker_dir(tmp_path: Path) -> Path:
    """A directory where tasks leave side effects for the test to observe."""
    d = tmp_path / "markers"
    d.mkdir()
    return d


def _unavailable(reason: str) -> None:
    """Skip the PostgreSQL tests -- but on CI, fail them: there they must run."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; on CI the PostgreSQL storage tests must run", pytrace=False)
    pytest.skip(f"{reason}; PostgreSQL storage tests skipped")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[sa.Engine]:
    """An AUTOCOMMIT engine on the database NBQUEUE_TEST_POSTGRES_URL names."""
    url = os.environ.get(POSTGRES_ENV, "")
    if not url:
        _unavailable(
            f"{POSTGRES_ENV} is not set (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/"
            "postgres)"
        )
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect():
            pass
    except Exception as exc:
        engine.dispose()
        shown = engine.url.render_as_string(hide_password=True)
        first_line = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        _unavailable(f"PostgreSQL at {shown} ({POSTGRES_ENV}) is unreachable: {first_line}")
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_url(postgres_server: sa.Engine) -> Iterator[str]:
    """A fresh database for one test."""
    name = f"nbq_test_{uuid.uuid4().hex[:12]}"
    with postgres_server.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_server.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with postgres_server.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def hosts() -> Iterator[list[WorkerHost]]:
    """The ``nbqueue worker`` hosts a test starts (append them): killed at its end."""
    started: list[WorkerHost] = []
    yield started
    for host in started:
        host.kill()
