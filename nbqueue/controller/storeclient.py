"""The one interface between a controller and its database thread: what the thread
reports (claims answered, rows other controllers changed, executors found, leases lost,
rows refused, the database lost) and the little it asks (which leases to renew, which
executors and tasks are known)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from nbqueue.errors import DatabaseError
    from nbqueue.store import Row

#: (type, digest, payload or None, refusal message or None) of executors found in the database
Shipped = tuple[str, str, "bytes | None", "str | None"]


class StoreClient(Protocol):
    """What the database thread tells the controller (each called on the controller's loop
    unless said otherwise)."""

    def leased(self) -> list[str]:
        """The uids this controller holds leases on (called on the database thread)."""

    def known_executors(self) -> dict[str, str]:
        """type -> digest (or "file") of the executors known here (database thread)."""

    def claimed(self, rows: list[Row], won: list[str], asked: int, more: bool) -> None:
        """The answer to a claim request: rows claimed by best-first, uids won by name;
        ``more``: rows this controller wrote were left for the next batch (new tasks a
        claim may find once they are written)."""

    def synced(self, rows: list[Row]) -> None:
        """Rows other controllers and hosts changed."""

    def unknown(self, uids: list[str]) -> list[str]:
        """Which of these tasks the controller needs whole rows of: those it does not have
        (called on the database thread)."""

    def executors_found(self, found: list[Shipped]) -> None:
        """Executors registered in a notebook elsewhere, read from the database."""

    def leases_lost(self, uids: list[str]) -> None:
        """Leases that expired under this controller: stop those tasks here."""

    def unstorable(self, uid: str, error: Exception) -> None:
        """The database refused this task's row: fail the task (its row is not written)."""

    def database_failed(self, error: DatabaseError) -> None:
        """The database is lost or damaged: nothing more can be written (called on the
        database thread)."""
