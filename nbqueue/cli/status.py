"""``nbqueue status``: every task of a queue database (SQLite or PostgreSQL), with the
count per status, the worker hosts serving it, and which key signed the stored pickles.

Nothing stored is unpickled here, and no key or password is shown: the database is shown
with its password masked, a key by its fingerprint (``nbqueue.signing``)."""

from __future__ import annotations

import argparse
from collections import Counter
from typing import TYPE_CHECKING, Any

from nbqueue import config
from nbqueue.ui import figures, frame, text

if TYPE_CHECKING:
    from nbqueue.signing import Signer
    from nbqueue.store import Row

#: The stored pickles counted per key: (column of the tasks table, or None for the
#: executors table; heading).
PAYLOADS = (("data_blob", "task data"), ("result_blob", "results"), (None, "executors"))


def add_parser(commands: Any) -> None:
    """Add ``status`` to the subcommands."""
    parser = commands.add_parser(
        "status",
        help="print the status table of a queue database",
        description="Print every task of a queue database (SQLite or PostgreSQL): counts per "
        "status, then one row per task, the worker hosts, and how many stored pickles each "
        f"key signed (keys shown by fingerprint; ${config.SECRET_ENV} tells which are ours).",
    )
    parser.add_argument("--db", required=True, metavar="URL", help="the queue's database URL")
    parser.add_argument("--table", default="tasks", help="the tasks table (default: tasks)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """``nbqueue status``."""
    from nbqueue import rows, store

    adapter = store.make_adapter(args.db, table=args.table)
    assert adapter is not None
    signer = adapter.signer
    try:
        stored = adapter.load()
        hosts = adapter.load_hosts()
        executors = list(adapter.executor_blobs().values())
    finally:
        adapter.close()
    stored.sort(key=lambda row: row["created_at"])
    signatures = signature_table(stored, executors, signer)
    # states only: the pickles are left out (their signatures are counted above)
    states = [{**row, "data_blob": None, "result_blob": None} for row in stored]
    tasks = [rows.task_or_placeholder(row, inputs=False)[0] for row in states]
    snapshots = [t.get_status() for t in tasks]
    counts = figures.summarize(snapshots).counts_text
    print(f"{len(tasks)} task(s) in {signer.where} table {args.table!r}: {counts}")
    if tasks:
        print(text.status_table(frame.status_frame(snapshots)))
    print(f"\n{len(hosts)} worker host(s)")
    if hosts:
        print(text.hosts_table(hosts))
    print(f"\n{signatures}")
    return 0


def signature_table(stored: list[Row], executors: list[bytes], signer: Signer) -> str:
    """How many stored pickles each key signed (task data, results, newest executor of
    each type), a row per key fingerprint, then ``unsigned`` and the refused kinds."""
    import pandas

    counts: dict[str, Counter[str]] = {heading: Counter() for _, heading in PAYLOADS}
    for column, heading in PAYLOADS:
        blobs = executors if column is None else [r[column] for r in stored if r.get(column)]
        counts[heading].update(signer.label(blob) for blob in blobs)
    labels = sorted({label for found in counts.values() for label in found}, key=_order(signer))
    if not labels:
        return "stored pickles: none (every value is plain JSON)"
    table = pandas.DataFrame(
        {
            "signed by": labels,
            **{heading: [found[label] for label in labels] for heading, found in counts.items()},
            "": [_note(label, signer) for label in labels],
        }
    )
    return "stored pickles, by the key that signed them:\n" + table.to_string(index=False)


def _order(signer: Signer) -> Any:
    ours = signer.fingerprints

    def key(label: str) -> tuple[int, int, str]:
        if label in ours:
            return (0, ours.index(label), label)
        return (2 if label in ("unsigned", "mis-signed", "unknown key") else 1, 0, label)

    return key


def _note(label: str, signer: Signer) -> str:
    ours = signer.fingerprints
    if label in ours:
        index = ours.index(label)
        return f"key {index + 1} of {config.SECRET_ENV}" + (
            ", signs new payloads" if index == 0 else ""
        )
    if label == "unsigned":
        return "refused by hosts unless they opt out"
    if label == "mis-signed":
        return "refused: tampered with"
    if not signer.keys:
        return f"(no {config.SECRET_ENV} here to check it)"
    if label == "unknown key":
        return f"refused: signed by no key of {config.SECRET_ENV} here (nbqsig1)"
    return f"not a key of {config.SECRET_ENV} here"
