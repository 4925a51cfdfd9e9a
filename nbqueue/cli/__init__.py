"""The ``nbqueue`` command line: one module per command.

- ``nbqueue demo`` (:mod:`nbqueue.cli.demo`) runs the example task files through a queue
  kept in an SQLite file and shows their progress in the terminal;
- ``nbqueue worker`` (:mod:`nbqueue.cli.worker`) joins a shared queue database as a host;
- ``nbqueue status`` (:mod:`nbqueue.cli.status`) prints the status table of a queue database.

``python -m nbqueue.cli`` works too.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import nbqueue
from nbqueue.cli import common, demo, status, worker
from nbqueue.errors import NbqueueError


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nbqueue`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except NbqueueError as exc:
        return common.error(str(exc))
    except KeyboardInterrupt:  # the queue has been shut down on the way out
        print("\nnbqueue: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; each sets ``run`` to its function."""
    parser = argparse.ArgumentParser(
        prog="nbqueue", description="nbqueue: a task queue for Jupyter, from the command line."
    )
    parser.add_argument("--version", action="version", version=f"nbqueue {nbqueue.__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", required=True)
    for command in (demo, status, worker):
        command.add_parser(commands)
    return parser
