"""Retry decisions and back-off."""

from __future__ import annotations

import random

import pytest

from nbqueue import ConfigurationError, TaskCancelledError, TaskValidationError, config
from nbqueue.retry import backoff_seconds, should_retry, validate_schema
from nbqueue.task import ErrorRecord


def rec(error: BaseException) -> ErrorRecord:
    return ErrorRecord.from_exception(error)


def test_empty_schema_retries_any_error() -> None:
    assert should_retry(rec(ValueError("x")), [])


def test_regex_matches_name_and_message() -> None:
    assert should_retry(rec(ConnectionError("timeout while reading")), [r"timeout"])
    assert should_retry(rec(ConnectionError("x")), [r"^ConnectionError:"])
    assert not should_retry(rec(ValueError("timeout")), [r"^ConnectionError"])


def test_class_matches_subclasses() -> None:
    assert should_retry(rec(ConnectionRefusedError("x")), [ConnectionError])
    assert not should_retry(rec(KeyError("x")), [ConnectionError])


def test_validation_and_cancellation_are_never_retried() -> None:
    assert not should_retry(rec(TaskValidationError("x")), [])
    assert not should_retry(rec(TaskCancelledError("x")), [r".*"])


def test_backoff_doubles_and_is_capped() -> None:
    rng = random.Random(1)
    delays = [backoff_seconds(n, rng=rng) for n in range(1, 20)]
    base, cap, jitter = (
        config.RETRY_BACKOFF_BASE,
        config.RETRY_BACKOFF_CAP,
        config.RETRY_BACKOFF_JITTER,
    )
    for n, delay in enumerate(delays, start=1):
        nominal = min(cap, base * 2 ** (n - 1))
        assert nominal * (1 - jitter) <= delay <= nominal * (1 + jitter)


@pytest.mark.parametrize("schema", ["not a list", [3], ["("]])
def test_bad_schema_is_reported(schema: object) -> None:
    with pytest.raises(ConfigurationError, match="retry_schema"):
        validate_schema(schema, "t")
