"""Which errors are retried, and how long to wait before the next attempt."""

from __future__ import annotations

import random
import re
from collections.abc import Iterable

from nbqueue import config
from nbqueue.errors import TaskCancelledError, TaskValidationError
from nbqueue.records import ErrorRecord

RetrySchema = Iterable["str | type[BaseException]"]

#: Errors of these classes are never retried, whatever the schema says.
NEVER_RETRIED = frozenset(
    f"{cls.__module__}.{cls.__qualname__}" for cls in (TaskValidationError, TaskCancelledError)
)


def should_retry(error: ErrorRecord, schema: RetrySchema) -> bool:
    """Whether ``error`` may be retried under ``schema``: an empty schema retries any error;
    otherwise a string is a regex searched in ``"ExceptionName: message"`` and a class
    matches the error's class or a base of it. Validation failures and cancellations are
    never retried."""
    if NEVER_RETRIED.intersection(error.classes):
        return False
    rules = list(schema)
    if not rules:
        return True
    text = f"{error.type}: {error.message}"
    for rule in rules:
        if isinstance(rule, str):
            if re.search(rule, text):
                return True
        elif (
            isinstance(rule, type)
            and issubclass(rule, BaseException)
            and f"{rule.__module__}.{rule.__qualname__}" in error.classes
        ):
            return True
    return False


def backoff_seconds(retry_count: int, *, rng: random.Random | None = None) -> float:
    """Delay before attempt ``retry_count`` (1 for the first retry): base * 2**(n-1),
    capped, with +/- jitter so that a burst of failures does not retry in lock-step."""
    delay = min(config.RETRY_BACKOFF_CAP, config.RETRY_BACKOFF_BASE * 2 ** max(0, retry_count - 1))
    jitter = (rng or random).uniform(-config.RETRY_BACKOFF_JITTER, config.RETRY_BACKOFF_JITTER)
    return max(0.0, float(delay * (1 + jitter)))


def validate_schema(schema: object, executor_type: str) -> list[str | type[BaseException]]:
    """Check a retry_schema() return value early, with a message that says what is wrong."""
    from nbqueue.errors import ConfigurationError

    if not isinstance(schema, (list, tuple)):
        raise ConfigurationError(
            f"{executor_type}: retry_schema() must return a list of regex strings or exception "
            f"classes, got {schema!r}"
        )
    for rule in schema:
        if isinstance(rule, str):
            try:
                re.compile(rule)
            except re.error as exc:
                raise ConfigurationError(
                    f"{executor_type}: retry_schema() pattern {rule!r} is not a valid regex: {exc}"
                ) from None
        elif not (isinstance(rule, type) and issubclass(rule, BaseException)):
            raise ConfigurationError(
                f"{executor_type}: retry_schema() entries must be regex strings or exception "
                f"classes, got {rule!r}"
            )
    return list(schema)
