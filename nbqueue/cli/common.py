"""What the commands share: how errors are reported and how numbers are read."""

from __future__ import annotations

import argparse
import sys


def error(message: str, status: int = 2) -> int:
    """Print ``nbqueue: error: message`` on stderr; returns ``status`` (the exit status)."""
    print(f"nbqueue: error: {message}", file=sys.stderr)
    return status


def positive_int(text: str) -> int:
    """An argparse type: a whole number of 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value
