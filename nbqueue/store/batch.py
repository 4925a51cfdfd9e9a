"""One write transaction: what :meth:`DatabaseAdapter.write` is asked to do
(:class:`ClaimRequest`), what it answers (:class:`WriteResult`), and the checked plan a
backend carries out (:class:`Plan`)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from nbqueue import checks
from nbqueue.store import columns, rowcheck
from nbqueue.store.columns import Row

#: What claimed rows are ordered by (best first): read even when not asked for.
ORDER_COLUMNS = ("priority", "created_at")


@dataclasses.dataclass(frozen=True)
class ClaimRequest:
    """What :meth:`DatabaseAdapter.write` claims for ``owner`` (leases of ``lease_seconds``),
    after its saves and deletes: these ``uids`` when they are ready, then up to ``limit``
    of the best ready rows (only of ``types`` when given), read back with only ``columns``
    (and uid and updated_at; every column when None). Checked when made."""

    owner: str
    lease_seconds: float
    uids: tuple[str, ...] = ()
    limit: int = 0
    types: tuple[str, ...] | None = None
    columns: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        rowcheck.check_owner(self.owner)
        fix = object.__setattr__  # normalised once, here: the dataclass is frozen
        fix(self, "lease_seconds", rowcheck.lease(self.lease_seconds))
        fix(self, "uids", tuple(rowcheck.uids(self.uids)))
        fix(self, "limit", checks.integer(self.limit, "limit", minimum=0))
        if self.types is not None:
            fix(self, "types", tuple(rowcheck.strings(self.types, "types")))
        fix(self, "columns", rowcheck.read_columns(self.columns))


@dataclasses.dataclass(frozen=True)
class WriteResult:
    """What :meth:`DatabaseAdapter.write` did: the ``updated_at`` it stamped, the claimed
    uids it ``won`` (in the order asked), the next best rows it ``claimed`` (best first),
    and how many rows it ``deleted``."""

    updated_at: dt.datetime
    won: list[str] = dataclasses.field(default_factory=list)
    claimed: list[Row] = dataclasses.field(default_factory=list)
    deleted: int = 0


@dataclasses.dataclass(frozen=True)
class Plan:
    """A checked write for a backend to carry out in one transaction, in this order: upsert
    ``complete`` rows, update existing rows from ``partial`` ones, delete ``delete``, claim
    ``claim_uids``, claim ``claim_limit`` more, reading ``claim_columns`` of them.
    ``claim_values`` are the columns a claim sets (``None`` when nothing is claimed); ``now``
    is the clock in epoch seconds."""

    now: float
    updated_at: dt.datetime
    complete: list[Row]
    partial: list[Row]
    delete: list[str]
    claim_uids: list[str]
    claim_limit: int
    claim_types: list[str] | None
    claim_columns: tuple[str, ...] | None
    claim_values: Row | None
    #: The columns the caller asked for (claim_columns adds what ordering the rows needs).
    claim_shown: tuple[str, ...] | None

    @property
    def empty(self) -> bool:
        return not (self.complete or self.partial or self.delete or self.claim_uids) and (
            self.claim_limit == 0
        )

    def describe(self) -> str:
        """What it does, for messages: "save 3 row(s), claim 1 task(s)"."""
        parts = []
        if self.complete or self.partial:
            parts.append(f"save {len(self.complete) + len(self.partial)} row(s)")
        if self.delete:
            parts.append(f"delete {len(self.delete)} row(s)")
        if self.claim_uids:
            parts.append(f"claim {len(self.claim_uids)} task(s)")
        if self.claim_limit:
            parts.append(f"claim the next {self.claim_limit} task(s)")
        return ", ".join(parts) or "do nothing"


def plan(
    now: float,
    rows: Iterable[Mapping[str, Any]],
    delete: Iterable[str],
    claim: ClaimRequest | None,
) -> Plan:
    """Check everything and split it up. Rows with the same uid are merged, in order (a
    later row's values win). RowRejectedError names every bad row."""
    if claim is not None and not isinstance(claim, ClaimRequest):
        raise checks.fail("claim", "a ClaimRequest or None", claim)
    updated_at = columns.utc_from_epoch(now)
    merged: dict[str, Row] = {}
    for row in rowcheck.checked_rows(rows):
        merged.setdefault(row["uid"], {}).update(row)
    complete: list[Row] = []
    partial: list[Row] = []
    for row in merged.values():
        row["updated_at"] = updated_at
        (complete if row.keys() >= columns.REQUIRED else partial).append(row)
    values = None
    if claim is not None:
        values = {
            "status": columns.RUNNING,
            "lease_owner": claim.owner,
            "lease_expires_at": columns.utc_from_epoch(now + claim.lease_seconds),
            "updated_at": updated_at,
        }
    limit = 0 if claim is None or claim.types == () else claim.limit
    shown = None if claim is None else claim.columns
    return Plan(
        now=now,
        updated_at=updated_at,
        complete=complete,
        partial=partial,
        delete=rowcheck.uids(delete),
        claim_uids=[] if claim is None else list(claim.uids),
        claim_limit=limit,
        claim_types=None if claim is None or claim.types is None else list(claim.types),
        claim_columns=None if shown is None else rowcheck.read_columns(shown + ORDER_COLUMNS),
        claim_values=values,
        claim_shown=shown,
    )
