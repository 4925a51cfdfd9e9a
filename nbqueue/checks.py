"""Argument checks, in one place: each returns the value in the form nbqueue keeps, or raises
:class:`~nbqueue.errors.ConfigurationError` naming the argument and what it got.

Everything a store or the worker pipe cannot carry is refused here, at the call that
received it, rather than later in a background thread: text with NUL characters or lone
surrogates (neither PostgreSQL nor UTF-8 can hold them), numbers that are NaN, infinite or
beyond 64 bits.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from pathlib import Path
from typing import Any

from nbqueue.errors import ConfigurationError

#: The range of a 64-bit signed integer, what a database BIGINT holds.
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
#: Longest texts the database columns hold: a task's uid, its type, its key, a name
#: (worker, host, lease owner).
MAX_UID_LENGTH = 64
MAX_TYPE_LENGTH = 255
MAX_KEY_LENGTH = 1000
MAX_NAME_LENGTH = 255
#: The longest finite number of seconds nbqueue accepts for a delay, timeout or lease
#: (about 31 years): far beyond any real use, and still a valid datetime when added to now.
MAX_SECONDS = 1e9


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def fail(what: str, expected: str, value: Any) -> ConfigurationError:
    """The error for argument ``what``: it must be ``expected`` and was ``value``."""
    return ConfigurationError(f"{what} must be {expected}, got {_show(value)}")


def text(value: Any, what: str, *, max_length: int | None = None, allow_empty: bool = False) -> str:
    """A string that can be stored anywhere: no NUL, no lone surrogate, at most
    ``max_length`` characters, non-empty unless ``allow_empty``."""
    if not isinstance(value, str) or (not value and not allow_empty):
        raise fail(what, _text_expected(max_length, allow_empty), value)
    if max_length is not None and len(value) > max_length:
        raise fail(what, _text_expected(max_length, allow_empty), value)
    if "\x00" in value:
        raise fail(what, f"{_text_expected(max_length, allow_empty)} without NUL characters", value)
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            expected = _text_expected(max_length, allow_empty)
            raise fail(what, f"{expected} of valid Unicode (no lone surrogates)", value) from None
    return value


def _text_expected(max_length: int | None, allow_empty: bool) -> str:
    expected = "a string" if allow_empty else "a non-empty string"
    if max_length is not None:
        expected += f" of at most {max_length} characters"
    return expected


def integer(value: Any, what: str, *, minimum: int = INT64_MIN, maximum: int = INT64_MAX) -> int:
    """An int (not a bool) within ``minimum``..``maximum`` (by default what BIGINT holds)."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        if minimum == INT64_MIN and maximum == INT64_MAX:
            expected = "an int within 64 bits"
        elif maximum == INT64_MAX:
            expected = f"an int >= {minimum}"
        else:
            expected = f"an int from {minimum} to {maximum}"
        raise fail(what, expected, value)
    return value


def number(value: Any, what: str, *, minimum: float | None = 0.0, above: bool = False) -> float:
    """A finite real number >= ``minimum`` (> when ``above``; any when None), as a float."""
    expected = "a finite number"
    if minimum is not None:
        expected += f" {'>' if above else '>='} {minimum:g}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail(what, expected, value)
    try:
        result = float(value)
    except OverflowError:
        raise fail(what, expected, value) from None
    if not math.isfinite(result):
        raise fail(what, expected, value)
    if minimum is not None and (result < minimum or (above and result == minimum)):
        raise fail(what, expected, value)
    return result


def seconds(value: Any, what: str, *, allow_zero: bool = True) -> float:
    """A duration: seconds as a number or a ``datetime.timedelta``, finite, at most
    MAX_SECONDS, and more than zero unless ``allow_zero``."""
    if isinstance(value, dt.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _seconds_error(what, allow_zero, value)
    try:
        result = float(value)
    except OverflowError:
        raise _seconds_error(what, allow_zero, value) from None
    if not (0.0 <= result <= MAX_SECONDS) or (result == 0.0 and not allow_zero):
        raise _seconds_error(what, allow_zero, value)
    return result


def _seconds_error(what: str, allow_zero: bool, value: Any) -> ConfigurationError:
    low = "zero or more" if allow_zero else "more than zero"
    expected = f"a number of seconds or a datetime.timedelta, {low} and at most {MAX_SECONDS:g}"
    return fail(what, expected, value)


def timeout(value: Any, what: str = "timeout") -> float | None:
    """A wait's timeout: None (wait as long as it takes) or seconds >= 0."""
    if value is None:
        return None
    return seconds(value, what, allow_zero=True)


def moment(value: Any, what: str, *, allow_naive: bool = True) -> dt.datetime:
    """An aware UTC datetime from a datetime (a naive one is local time, as
    ``datetime.now()`` gives, unless ``allow_naive`` is False: then it is refused), within
    the years a database can store."""
    if not isinstance(value, dt.datetime):
        raise fail(what, "a datetime.datetime", value)
    if not allow_naive and value.utcoffset() is None:
        raise fail(what, "a timezone-aware datetime.datetime", value)
    try:
        result = value.astimezone(dt.timezone.utc)
    except (OverflowError, ValueError, OSError):
        raise fail(what, "a datetime between the years 1970 and 9999", value) from None
    if result.year < 1970 or result.year > 9998:
        raise fail(what, "a datetime between the years 1970 and 9999", value)
    return result


def directory(value: Any, what: str) -> Path | None:
    """None, or a path (a string or os.PathLike) to a directory that exists."""
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise fail(what, "a path to a directory, or None", value)
    path = Path(value)
    if not path.is_dir():
        raise ConfigurationError(
            f"{what} {str(value)!r} is not a directory (it is resolved from the working "
            f"directory, {os.getcwd()!r})"
        )
    return path


def utc(value: dt.datetime) -> dt.datetime:
    """A datetime read back from storage as aware UTC: a naive one there is UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)
