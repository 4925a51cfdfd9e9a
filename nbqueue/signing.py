"""Signing the pickles a database stores, and the rule that says when they must be signed.

Unpickling runs code: whoever can put a pickle into a database can run code on every
controller and worker host that reads it. So each database adapter has a :class:`Signer`,
made once from its URL and the environment (:func:`for_database`), that seals every pickle
on its way into the database and opens it -- checks it -- before anything is unpickled:

- With keys (NBQUEUE_SECRET, comma-separated: the first signs, every one verifies), pickles
  are signed with HMAC-SHA256, and only those signed with one of the keys are accepted.
- Without keys, on a *shared* database -- one that is not on this machine, any database an
  ``nbqueue worker`` host serves, or any database at all with NBQUEUE_REQUIRE_SIGNED=1 -- no
  pickle is stored (:class:`UnsignedPayloadError`) and none is accepted
  (:class:`SignatureError`). Values that are plain JSON are never pickled: they need no
  signature and keep working.
- Without keys, on a local database (an SQLite file, PostgreSQL on loopback or a unix
  socket), pickles are stored and accepted as they are.
- NBQUEUE_ALLOW_UNSIGNED=1 (``nbqueue worker --allow-unsigned``) is the explicit opt-out:
  unsigned pickles are stored and accepted, and a warning says so at start-up.

The signed format (the ``nbqsig1:`` blobs of earlier versions are still read)::

    b"nbqsig2:" + key id (8 bytes) + HMAC-SHA256(key, b"nbqsig2:" + key id + data) + data
    b"nbqsig1:" + HMAC-SHA256(key, b"nbqsig1:" + data) + data

The key id names a key without revealing it (the HMAC of a fixed label), so that the right
key is found at once; a key is shown as its fingerprint, the first 8 hex digits of its key
id, never as itself. A pickle (protocol 2 and later) starts with the byte 0x80, so a signed
blob is never mistaken for an unsigned one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import warnings
from typing import TYPE_CHECKING

from nbqueue import config
from nbqueue.errors import (
    ConfigurationError,
    SignatureError,
    UnsignedPayloadError,
    UnsignedPayloadWarning,
)

if TYPE_CHECKING:
    import sqlalchemy as sa

__all__ = [
    "PLAIN",
    "PREFIX",
    "PREFIX_V1",
    "Signer",
    "fingerprint",
    "for_database",
    "is_local",
    "key_id",
    "sign",
]

#: Starts every blob signed now: magic and format version.
PREFIX = b"nbqsig2:"
#: Starts the blobs of the first format (no key id), still read.
PREFIX_V1 = b"nbqsig1:"
KEY_ID_BYTES = 8
_MAC_BYTES = hashlib.sha256().digest_size  # 32
_KEY_ID_LABEL = b"nbqueue key id"
_SAME_EVERYWHERE = (
    f"{config.SECRET_ENV} must be set to the same value on every controller and worker host "
    "that shares the database"
)
_HOW_TO_FIX = (
    f"Set {config.SECRET_ENV} to the same long random value on every controller and worker "
    'host (make one with: python -c "import secrets; print(secrets.token_hex(32))"), or '
    f"opt out explicitly with {config.ALLOW_UNSIGNED_ENV}=1"
)


def key_id(key: bytes) -> bytes:
    """The public name of ``key`` stored in the blobs it signs: HMAC-SHA256(key, a fixed
    label), first 8 bytes. It reveals nothing of the key that its signatures do not."""
    return hmac.new(key, _KEY_ID_LABEL, hashlib.sha256).digest()[:KEY_ID_BYTES]


def fingerprint(key: bytes) -> str:
    """How ``key`` is shown: the first 8 hex digits of its key id."""
    return _shown(key_id(key))


def _shown(kid: bytes) -> str:
    return kid.hex()[:8]


def sign(data: bytes, key: bytes) -> bytes:
    """``data`` signed with ``key``: PREFIX + key id + HMAC-SHA256 + data."""
    if not isinstance(key, bytes) or not key:
        raise ConfigurationError("a key must be non-empty bytes")
    head = PREFIX + key_id(key)
    return head + hmac.new(key, head + data, hashlib.sha256).digest() + bytes(data)


@dataclasses.dataclass(frozen=True)
class Signer:
    """Seals the pickles stored in one database and opens those read from it.

    ``keys``: the first signs, every one verifies (never shown: ``repr`` and every message
    name a key by its fingerprint). ``shared``: why the database counts as shared (then
    unsigned pickles are refused, unless ``allow_unsigned``), or None for a local one.
    ``allow_unsigned``: the explicit opt-out. ``where``: the database, as messages show it
    (no password).
    """

    keys: tuple[bytes, ...] = dataclasses.field(default=(), repr=False)
    shared: str | None = None
    allow_unsigned: bool = False
    where: str = "the database"
    _by_id: dict[bytes, bytes] = dataclasses.field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        if not isinstance(self.keys, tuple) or not all(
            isinstance(k, bytes) and k for k in self.keys
        ):
            raise ConfigurationError("keys must be a tuple of non-empty bytes")
        self._by_id.update((key_id(k), k) for k in self.keys)

    def __repr__(self) -> str:
        keys = ", ".join(self.fingerprints) or "no keys"
        rule = "unsigned refused" if self.required else "unsigned accepted"
        where = f"shared ({self.shared})" if self.shared else "local"
        return f"<Signer {keys}; {self.where}, {where}: {rule}>"

    @property
    def fingerprints(self) -> list[str]:
        """The fingerprint of each key, in order (the first signs)."""
        return [fingerprint(k) for k in self.keys]

    @property
    def required(self) -> bool:
        """True when unsigned pickles are refused: a shared database, and no opt-out."""
        return self.shared is not None and not self.allow_unsigned

    # -- storing --------------------------------------------------------------------------
    def ensure_storable(self, what: str) -> None:
        """Raise UnsignedPayloadError, naming ``what`` and the fix, when a pickle may not be
        stored here: no key to sign it, and the database is shared (no opt-out)."""
        if not self.keys and self.required:
            raise UnsignedPayloadError(
                f"{what} would be stored in {self.where} as an unsigned pickle, and that "
                f"database is shared ({self.shared}): anyone who can write to it could swap "
                "the pickle for one that runs code on every controller and host that reads "
                f"it. Nothing was stored. {_HOW_TO_FIX}."
            )

    def seal(self, data: bytes, what: str) -> bytes:
        """``data`` (a pickle) as it is stored: signed with the first key; as it is when
        there is none and that is allowed; else UnsignedPayloadError (see
        :meth:`ensure_storable`)."""
        if self.keys:
            return sign(data, self.keys[0])
        self.ensure_storable(what)
        return bytes(data)

    # -- reading --------------------------------------------------------------------------
    def open(self, blob: bytes, what: str) -> bytes:
        """The pickle inside ``blob`` once its signature is checked; SignatureError, naming
        ``what``, when it is refused -- it must then not be unpickled."""
        blob = bytes(blob)
        if blob.startswith(PREFIX):
            return self._open_v2(blob, what)
        if blob.startswith(PREFIX_V1):
            return self._open_v1(blob, what)
        if self.allow_unsigned or (not self.keys and not self.required):
            return blob
        if self.keys:
            raise SignatureError(
                f"{what} is unsigned, but {config.SECRET_ENV} is set: refusing to unpickle "
                f"it. It was written by a process without {config.SECRET_ENV}, or by someone "
                f"else; {_SAME_EVERYWHERE}."
            )
        raise SignatureError(
            f"{what} is unsigned, and {self.where} is shared ({self.shared}): refusing to "
            "unpickle it, since anyone who can write to the database could have put it "
            f"there. {_SAME_EVERYWHERE}; or opt out explicitly with "
            f"{config.ALLOW_UNSIGNED_ENV}=1."
        )

    def _open_v2(self, blob: bytes, what: str) -> bytes:
        kid, key, data, valid = self._check_v2(blob)
        if key is None:
            raise SignatureError(f"{what} is signed with key {_shown(kid)}, {self._missing()}")
        if not valid:
            raise SignatureError(
                f"{what} is mis-signed: its HMAC does not match key {_shown(kid)} of "
                f"{config.SECRET_ENV}. It has been tampered with; refusing to unpickle it. "
                f"{_SAME_EVERYWHERE}."
            )
        return data

    def _check_v2(self, blob: bytes) -> tuple[bytes, bytes | None, bytes, bool]:
        """(key id, our key with that id or None, data, whether the HMAC matches)."""
        head = len(PREFIX) + KEY_ID_BYTES
        kid, mac, data = (
            blob[len(PREFIX) : head],
            blob[head : head + _MAC_BYTES],
            blob[head + _MAC_BYTES :],
        )
        key = self._by_id.get(kid)
        if key is None:
            return kid, None, data, False
        expected = hmac.new(key, blob[:head] + data, hashlib.sha256).digest()
        return kid, key, data, len(mac) == _MAC_BYTES and hmac.compare_digest(mac, expected)

    def _open_v1(self, blob: bytes, what: str) -> bytes:
        if not self.keys:
            raise SignatureError(f"{what} is signed, {self._missing()}")
        if self._v1_key(blob) is None:
            raise SignatureError(
                f"{what} is mis-signed: its HMAC does not match {config.SECRET_ENV}. It was "
                "signed with a different secret or has been tampered with; refusing to "
                f"unpickle it. {_SAME_EVERYWHERE}."
            )
        return blob[len(PREFIX_V1) + _MAC_BYTES :]

    def _v1_key(self, blob: bytes) -> bytes | None:
        """The key that signed a blob of the first format (no key id: each is tried)."""
        start = len(PREFIX_V1)
        mac, data = blob[start : start + _MAC_BYTES], blob[start + _MAC_BYTES :]
        for key in self.keys:
            expected = hmac.new(key, PREFIX_V1 + data, hashlib.sha256).digest()
            if len(mac) == _MAC_BYTES and hmac.compare_digest(mac, expected):
                return key
        return None

    def _missing(self) -> str:
        if not self.keys:
            return (
                f"but {config.SECRET_ENV} is not set in this process, so the signature "
                f"cannot be checked; refusing it. {_SAME_EVERYWHERE}."
            )
        return (
            f"which is not among the keys of {config.SECRET_ENV} here "
            f"({', '.join(self.fingerprints)}); refusing to unpickle it. {_SAME_EVERYWHERE} "
            "(during a key rotation: the new key first, then the old ones, comma-separated)."
        )

    def label(self, blob: bytes) -> str:
        """What signed ``blob``, for ``nbqueue status``: a key's fingerprint, ``unsigned``,
        ``mis-signed`` (checked when the key is one of ours), or ``unknown key`` (a blob of
        the first format that none of our keys verifies). Nothing is unpickled."""
        blob = bytes(blob)
        if blob.startswith(PREFIX):
            kid, key, _, valid = self._check_v2(blob)
            return "mis-signed" if key is not None and not valid else _shown(kid)
        if blob.startswith(PREFIX_V1):
            key = self._v1_key(blob)
            return "unknown key" if key is None else fingerprint(key)
        return "unsigned"

    # -- saying so ------------------------------------------------------------------------
    def summary(self) -> str:
        """One line on how pickles are treated here (for ``nbqueue worker``'s start-up)."""
        if self.keys:
            more = f", {len(self.keys)} keys verify" if len(self.keys) > 1 else ""
            unsigned = "; UNSIGNED ones accepted (opt-out)" if self.allow_unsigned else ""
            return f"pickles signed with key {self.fingerprints[0]}{more}{unsigned}"
        if self.required:
            return (
                f"unsigned pickles refused ({config.SECRET_ENV} is not set: only JSON data "
                "and task-file executors work)"
            )
        return "UNSIGNED pickles stored and accepted" + (
            " (opt-out)" if self.allow_unsigned else f" (a local database, no {config.SECRET_ENV})"
        )

    def warn_if_opted_out(self, stacklevel: int = 2) -> None:
        """Warn (UnsignedPayloadWarning) when the opt-out is in use."""
        if not self.allow_unsigned:
            return
        writes = "" if self.keys else "stored and "
        warnings.warn(
            f"nbqueue: {config.ALLOW_UNSIGNED_ENV} is set: unsigned pickles are {writes}"
            f"accepted in {self.where}. Unpickling runs code: anyone who can write to this "
            "database can run any code on every controller and worker host that reads from "
            f"it. Unset it and set {config.SECRET_ENV} to the same long random value on "
            "every controller and host to have payloads signed (HMAC-SHA256) and unsigned "
            "ones refused.",
            UnsignedPayloadWarning,
            stacklevel=stacklevel + 1,
        )


#: No keys, a local database: pickles are stored and read as they are (and signed ones are
#: refused: they cannot be checked). What ``nbqueue.rows`` uses when given no signer.
PLAIN = Signer()


def for_database(url: str | None, *, host: bool = False, allow_unsigned: bool = False) -> Signer:
    """The signer for the database at ``url`` (None: one in this process only), from the
    environment: the keys of NBQUEUE_SECRET; shared when ``host`` (an ``nbqueue worker``),
    when NBQUEUE_REQUIRE_SIGNED=1, or when the database is not on this machine; unsigned
    pickles allowed when ``allow_unsigned`` (``--allow-unsigned``) or
    NBQUEUE_ALLOW_UNSIGNED=1."""
    shared = None
    if host:
        shared = "it is served by `nbqueue worker` hosts"
    elif config.require_signed():
        shared = f"{config.REQUIRE_SIGNED_ENV} is set"
    elif url is not None and not is_local(url):
        shared = "it is not on this machine"
    return Signer(
        config.secret_keys(),
        shared=shared,
        allow_unsigned=allow_unsigned or config.allow_unsigned(),
        where=_masked(url),
    )


def _masked(url: str | None) -> str:
    if url is None:
        return "a database in this process"
    import sqlalchemy as sa  # here: keep this module light for worker processes

    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "the database"  # not a URL: opening it reports that


def is_local(url: str | sa.URL) -> bool:
    """True for a database only this machine can write to: an SQLite file, or PostgreSQL
    on loopback addresses or unix sockets only (libpq's PGHOST and PGHOSTADDR count when
    the URL names no host; a service file, PGSERVICE, is not looked into). Anything else,
    and anything that is not a URL, is shared."""
    import sqlalchemy as sa

    try:
        parsed = sa.make_url(url)
    except Exception:
        return False
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return True
    if backend != "postgresql":
        return False
    query = parsed.query
    if "service" in query:
        return False
    hosts = [parsed.host or ""]
    for name in ("host", "hostaddr"):  # libpq: a list of hosts, sockets, addresses
        value = query.get(name)
        values = value if isinstance(value, tuple) else () if value is None else (value,)
        hosts += [h for v in values for h in str(v).split(",")]
    named = [h.strip() for h in hosts if h.strip()]
    if not named:  # libpq falls back on its environment, then the default unix socket
        environment = config.libpq_environment()
        if environment.get("PGSERVICE"):
            return False
        named = [
            h.strip()
            for name in ("PGHOST", "PGHOSTADDR")
            for h in environment.get(name, "").split(",")
            if h.strip()
        ]
    return all(_local_host(h) for h in named)


def _local_host(host: str) -> bool:
    if host.startswith(("/", "@")) or host.lower() == "localhost":  # sockets, loopback
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
