"""Keys: a task's key names its work. While a task with key K has not failed and was not
cancelled, it holds K: submitting K again gives that task, and a Task added with K follows
it (a follower mirrors its state, so that the object the user holds is up to date)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nbqueue.records import Status

if TYPE_CHECKING:
    from nbqueue.future import Owner
    from nbqueue.task import Task

#: What a follower mirrors of the task it follows.
MIRRORED = (
    "status", "progress", "retry_count", "started_at", "finished_at", "worker", "errors",
    "output", "_value", "_result_bytes", "_failure",
)  # fmt: skip


class Keys:
    """The key holders of one queue, and the tasks that follow them (lock held)."""

    def __init__(self) -> None:
        self._holders: dict[str, Task[Any]] = {}
        self._followers: dict[str, list[Task[Any]]] = {}  # uid -> tasks added under its key

    def holder(self, key: str | None) -> Task[Any] | None:
        """The task holding ``key``, if any."""
        return None if key is None else self._holders.get(key)

    def hold(self, task: Task[Any]) -> None:
        """``task`` joined the queue: it holds its key unless it failed or was cancelled."""
        if task.key is not None and task.status not in (Status.FAILED, Status.CANCELLED):
            self._holders[task.key] = task

    def release(self, task: Task[Any]) -> None:
        """``task`` failed or was cancelled: its key is free for new work."""
        if task.key is not None and self._holders.get(task.key) is task:
            del self._holders[task.key]

    def follow(self, holder: Task[Any], follower: Task[Any], owner: Owner) -> None:
        """``follower`` was added under ``holder``'s key: it becomes a view of it."""
        follower.uid, follower.created_at, follower._owner = holder.uid, holder.created_at, owner
        self._followers.setdefault(holder.uid, []).append(follower)
        _mirror(holder, follower)

    def mirror(self, task: Task[Any]) -> None:
        """``task`` changed: bring its followers up to date."""
        if self._followers:
            for follower in self._followers.get(task.uid, ()):
                _mirror(task, follower)

    def forget(self, task: Task[Any]) -> None:
        """``task`` was removed from the queue, with its followers."""
        self.release(task)
        for follower in self._followers.pop(task.uid, []):
            follower._owner = None


def _mirror(source: Task[Any], follower: Task[Any]) -> None:
    for name in MIRRORED:
        setattr(follower, name, getattr(source, name))
    if follower.status.finished:
        follower._settle()
