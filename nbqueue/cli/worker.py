"""``nbqueue worker``: join a shared queue database as a host that runs its tasks (the
serving itself is :func:`nbqueue.host.serve`). Every option may also come from an
environment variable, read through :mod:`nbqueue.config`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from nbqueue import config
from nbqueue.cli import common


def add_parser(commands: Any) -> None:
    """Add ``worker`` to the subcommands."""
    parser = commands.add_parser(
        "worker",
        help="run tasks from a shared queue database (a worker host)",
        description="Join a shared queue: claim ready tasks from the database, run them in "
        "worker processes here, write progress and results back. SIGTERM or Ctrl-C drains "
        "(finishes what runs, hands back the rest); a second Ctrl-C stops at once. Every "
        "option can also come from an environment variable.",
    )
    parser.add_argument("--db", metavar="URL", help="queue database ($NBQUEUE_DB)")
    parser.add_argument(
        "--tasks",
        type=Path,
        metavar="DIR",
        help="task directory ($NBQUEUE_TASKS; executors registered in a notebook come "
        "from the database)",
    )
    parser.add_argument(
        "--processes",
        type=common.positive_int,
        metavar="N",
        help="worker processes ($NBQUEUE_PROCESSES, default: one per CPU)",
    )
    parser.add_argument(
        "--concurrency",
        type=common.positive_int,
        metavar="N",
        help="tasks at once per process ($NBQUEUE_CONCURRENCY, default "
        f"{config.DEFAULT_HOST_CONCURRENCY})",
    )
    parser.add_argument(
        "--name",
        help="this host's name in the database ($NBQUEUE_WORKER_NAME, default HOSTNAME-PID)",
    )
    parser.add_argument(
        "--lease",
        type=float,
        metavar="SECONDS",
        help="lease on a claimed task, renewed while it runs ($NBQUEUE_LEASE_SECONDS, "
        f"default {config.DEFAULT_LEASE_SECONDS:g}): a dead host's tasks are claimed again "
        "after it",
    )
    parser.add_argument(
        "--allow-unsigned",
        action="store_true",
        help=f"the opt-out (${config.ALLOW_UNSIGNED_ENV}=1): accept unsigned pickles from "
        "the database, refused by default. Anyone who can write to the database can then run "
        f"any code on this host; set ${config.SECRET_ENV} instead",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """``nbqueue worker``: serve until SIGTERM or Ctrl-C."""
    from nbqueue import host

    db = args.db or config.host_db()
    if not db:
        return common.error("a database is needed: --db URL or NBQUEUE_DB")
    tasks = args.tasks or config.host_tasks()
    if tasks is not None and not Path(tasks).is_dir():
        return common.error(f"--tasks {tasks} is not a directory")
    lease = config.host_lease_seconds() if args.lease is None else args.lease
    if not lease > 0:
        return common.error(f"--lease must be more than zero seconds, got {lease:g}")
    return host.serve(
        db,
        None if tasks is None else Path(tasks),
        processes=args.processes or config.host_processes(),
        concurrency=args.concurrency or config.host_concurrency(),
        name=args.name or config.host_name() or config.default_controller_name(),
        lease_seconds=lease,
        allow_unsigned=args.allow_unsigned,
    )
