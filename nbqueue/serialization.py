"""Turning values into bytes and back: task data, results, executors.

Plain ``pickle`` is tried first (fast); values it cannot handle, and values that refer to
``__main__`` (classes and functions defined in a notebook, which a worker could not import),
go through cloudpickle, which pickles them by value.

Unpickling runs code, so whoever can write to a shared database can run code on every
controller and worker host that reads from it. Pickles stored in a database are therefore
signed with HMAC-SHA256 when ``NBQUEUE_SECRET`` is set (:func:`sign`, :func:`verify`), and
unsigned or mis-signed ones are refused before they are unpickled. The signed format is::

    b"nbqsig1:" (8 bytes: magic and format version) + HMAC-SHA256(secret, prefix + data)
    (32 bytes) + data

A pickle (protocol 2 and later) starts with the byte 0x80, so a signed blob can never be
mistaken for an unsigned one.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
import warnings
from typing import TYPE_CHECKING, Any

import cloudpickle

from nbqueue import config
from nbqueue.errors import SerializationError, SignatureError, UnsignedPayloadWarning

if TYPE_CHECKING:
    import sqlalchemy as sa

__all__ = [
    "PROTOCOL",
    "SIGNATURE_PREFIX",
    "SignatureError",
    "UnsignedPayloadWarning",
    "digest",
    "dumps",
    "dumps_by_value",
    "loads",
    "sign",
    "sign_for_storage",
    "verify",
    "verify_from_storage",
    "warn_if_unsigned",
]

PROTOCOL = pickle.HIGHEST_PROTOCOL
#: Starts every signed blob: magic and format version.
SIGNATURE_PREFIX = b"nbqsig1:"
_MAC_BYTES = hashlib.sha256().digest_size  # 32
_SAME_EVERYWHERE = (
    f"{config.SECRET_ENV} must be set to the same value on every controller and worker host "
    "that shares the database"
)
_LOCAL_HOSTS = frozenset({"", "localhost", "127.0.0.1", "::1", "[::1]"})


def dumps(value: Any, what: str = "value") -> bytes:
    """Pickle ``value``; raises SerializationError naming ``what`` when it cannot be."""
    try:
        data = pickle.dumps(value, PROTOCOL)
        if b"__main__" not in data:
            return data
    except Exception:
        pass
    try:
        return cloudpickle.dumps(value, PROTOCOL)  # type: ignore[no-any-return]
    except Exception as exc:
        raise SerializationError(
            f"{what} cannot be pickled ({type(exc).__name__}: {exc}); use plain Python objects, "
            "numpy arrays or DataFrames, or objects whose class is importable"
        ) from exc


def loads(data: bytes, what: str = "value") -> Any:
    """Unpickle bytes made by :func:`dumps`."""
    try:
        return pickle.loads(data)
    except Exception as exc:
        raise SerializationError(
            f"{what} cannot be unpickled ({type(exc).__name__}: {exc})"
        ) from exc


def dumps_by_value(obj: Any, what: str) -> bytes:
    """cloudpickle ``obj`` by value (for executors defined in a notebook)."""
    try:
        return cloudpickle.dumps(obj, PROTOCOL)  # type: ignore[no-any-return]
    except Exception as exc:
        raise SerializationError(f"{what} cannot be pickled ({type(exc).__name__}: {exc})") from exc


def digest(data: bytes) -> str:
    """Content hash used to cache shipped executors in workers."""
    return hashlib.sha256(data).hexdigest()[:32]


# -- signed pickles -----------------------------------------------------------------------
def sign(data: bytes, secret: bytes) -> bytes:
    """``data`` with a signature: SIGNATURE_PREFIX + HMAC-SHA256 + data."""
    if not isinstance(secret, bytes) or not secret:
        raise TypeError("secret must be non-empty bytes")
    mac = hmac.new(secret, SIGNATURE_PREFIX + data, hashlib.sha256).digest()
    return SIGNATURE_PREFIX + mac + bytes(data)


def verify(blob: bytes, secret: bytes | None, what: str) -> bytes:
    """The data inside ``blob``, after checking its signature; raises SignatureError,
    naming ``what``, when ``blob`` is refused. With a secret, only blobs signed with it
    pass. Without one (None), unsigned blobs pass and signed ones are refused: this
    process could not tell a genuine signature from a forged one."""
    blob = bytes(blob)
    signed = blob.startswith(SIGNATURE_PREFIX)
    if secret is None:
        if signed:
            raise SignatureError(
                f"{what} is signed, but {config.SECRET_ENV} is not set in this process, so "
                f"the signature cannot be checked; refusing it. {_SAME_EVERYWHERE}."
            )
        return blob
    if not signed:
        raise SignatureError(
            f"{what} is unsigned, but {config.SECRET_ENV} is set: refusing to unpickle it. "
            f"It was written by a process without {config.SECRET_ENV}, or by someone else; "
            f"{_SAME_EVERYWHERE}."
        )
    start = len(SIGNATURE_PREFIX)
    mac, data = blob[start : start + _MAC_BYTES], blob[start + _MAC_BYTES :]
    expected = hmac.new(secret, SIGNATURE_PREFIX + data, hashlib.sha256).digest()
    if len(mac) != _MAC_BYTES or not hmac.compare_digest(mac, expected):
        raise SignatureError(
            f"{what} is mis-signed: its HMAC does not match {config.SECRET_ENV}. It was "
            f"signed with a different secret or has been tampered with; refusing to unpickle "
            f"it. {_SAME_EVERYWHERE}."
        )
    return data


def sign_for_storage(data: bytes) -> bytes:
    """``data`` as it is stored in a database: signed when NBQUEUE_SECRET is set, else as
    it is."""
    key = config.secret()
    return data if key is None else sign(data, key)


def verify_from_storage(blob: bytes, what: str) -> bytes:
    """:func:`verify` with the current NBQUEUE_SECRET (or none)."""
    return verify(blob, config.secret(), what)


def warn_if_unsigned(url: str | None) -> None:
    """Warn (UnsignedPayloadWarning) when pickles would be stored unsigned in a database
    that other machines can reach: NBQUEUE_SECRET is unset and ``url`` is neither None (in
    memory), SQLite, nor a PostgreSQL server on localhost or a unix socket."""
    if url is None or config.secret() is not None:
        return
    import sqlalchemy as sa  # here: keep this module light for worker processes

    try:
        parsed = sa.make_url(url)
    except Exception:
        return  # not a URL: opening the database reports that
    if _is_local(parsed):
        return
    shown = parsed.render_as_string(hide_password=True)
    warnings.warn(
        f"nbqueue: {config.SECRET_ENV} is not set, so task data, results and executors are "
        f"stored in {shown} as UNSIGNED pickles. Unpickling runs code: anyone who can write "
        "to this database can run any code on every controller and worker host that reads "
        f"from it. Set {config.SECRET_ENV} to the same long random value on every "
        'controller and host before starting them (make one with: python -c "import '
        'secrets; print(secrets.token_hex(32))"); payloads are then signed (HMAC-SHA256) '
        "and unsigned or mis-signed ones are refused.",
        UnsignedPayloadWarning,
        stacklevel=2,
    )


def _is_local(url: sa.URL) -> bool:
    """SQLite, or PostgreSQL on this machine (loopback or a unix socket)."""
    backend = url.get_backend_name()
    if backend == "sqlite":
        return True
    if backend != "postgresql":
        return False
    hosts = [url.host or ""]
    query_host = url.query.get("host")
    if query_host:  # libpq: ?host=/run/postgresql (a socket), or a list of hosts
        values = query_host if isinstance(query_host, tuple) else (query_host,)
        hosts = [h for value in values for h in str(value).split(",")]
        if url.host:
            hosts.append(url.host)
    return all(h.strip().lower() in _LOCAL_HOSTS or h.strip().startswith("/") for h in hosts)
