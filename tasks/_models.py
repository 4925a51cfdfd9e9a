"""Domain classes shared by the example task files (the leading underscore keeps task
discovery from treating this file as a task type).

Task files import this module as ``_models`` after putting their own folder on
``sys.path`` (see test-task.py), so an ``Email`` pickles by reference as ``_models.Email``
and unpickles in any worker that has imported that task file.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Email:
    """An email to send (the seed's ``Email`` model)."""

    to: list[str]
    sender: str
    cc: list[str] = dataclasses.field(default_factory=list)
    subject: str = ""
    body: str = ""
