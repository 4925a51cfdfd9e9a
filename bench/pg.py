"""The local PostgreSQL of the database-backed systems (nbqueue, pgqueuer, procrastinate).

Each system uses a database of its own on the server of ``BENCH_PG_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/nbqueue_bench``): it drops and re-creates it
before a measurement and drops it at exit, so every run starts on an empty database and
nothing else on the server is touched. The ``postgres`` database of the same server is
used to create and drop them.
"""

from __future__ import annotations

from typing import Any

from bench.common import PG_URL


def _url(name: str, driver: str = "postgresql") -> Any:
    import sqlalchemy

    return sqlalchemy.make_url(PG_URL).set(drivername=driver, database=name)


def url_for(name: str, driver: str = "postgresql") -> str:
    """A URL for database ``name`` on the benchmark's server (``postgresql://``, or
    ``postgresql+psycopg://`` for SQLAlchemy with ``driver="postgresql+psycopg"``)."""
    return str(_url(name, driver).render_as_string(hide_password=False))


def nbqueue_database() -> str:
    """The name of nbqueue's own database (from ``BENCH_PG_URL``)."""
    import sqlalchemy

    return str(sqlalchemy.make_url(PG_URL).database)


def _admin(**kw: Any) -> Any:
    import psycopg

    return psycopg.connect(url_for("postgres"), autocommit=True, **kw)


def answers(timeout: float = 3.0) -> str | None:
    """None when the server answers, else why not."""
    try:
        import psycopg
    except ImportError:
        return 'psycopg is not installed: pip install -e ".[bench]"'
    try:
        with _admin(connect_timeout=max(1, round(timeout))):
            return None
    except psycopg.Error as exc:
        where = _url("postgres").render_as_string(hide_password=True)
        return f"no PostgreSQL at {where} ({str(exc).strip().splitlines()[0]})"


def recreate(name: str) -> None:
    """Drop database ``name`` if it exists and create it empty."""
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop(name: str) -> None:
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def describe() -> str:
    """The server's version and durability settings, for the storage notes."""
    with _admin() as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        settings = {
            k: conn.execute(f"SHOW {k}").fetchone()[0]
            for k in ("fsync", "synchronous_commit", "full_page_writes")
        }
    host = _url("postgres").host or "a local socket"
    return f"PostgreSQL {version} on {host}, " + ", ".join(f"{k}={v}" for k, v in settings.items())
