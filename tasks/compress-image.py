"""Example executor "compress-image": makes one resized copy of an image per requested size,
reporting progress after each (the seed's CompressImageTask; the "compression" is
simulated with ``task.sleep``, a cancellation point)."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any, TypedDict

from nbqueue import Task, TaskExecutor, TaskResult


class Size(TypedDict):
    width: int
    height: int


class _CompressImageOptions(TypedDict, total=False):
    #: Simulated work per size, in seconds (default 0.2).
    step_seconds: float


class CompressImageData(_CompressImageOptions):
    image: str
    sizes: list[Size]


class CompressImageResult(TaskResult[None]):
    files: list[str]


class CompressImageTask(TaskExecutor[CompressImageData, CompressImageResult]):
    def retry_schema(self) -> list[str | type[BaseException]]:
        return []

    def validation_schema(self) -> list[Any]:
        return [has_image, has_sizes]

    def exec(self, task: Task[CompressImageData]) -> CompressImageResult:
        assert task.data is not None
        image, sizes = task.data["image"], task.data["sizes"]
        step = task.data.get("step_seconds", 0.2)
        source = PurePosixPath(image)
        files = []
        for i, size in enumerate(sizes):
            task.sleep(step)  # the simulated compression
            files.append(f"{source.stem}-{size['width']}x{size['height']}{source.suffix}")
            task.update_progress((i + 1) * 100 / len(sizes))
        return {"processed": True, "files": files}


def has_image(task: Task[Any]) -> bool:
    """data["image"] is a file name."""
    return isinstance(task.data, dict) and isinstance(task.data.get("image"), str)


def has_sizes(task: Task[Any]) -> bool:
    """data["sizes"] is a non-empty list of {"width", "height"}."""
    sizes = task.data.get("sizes") if isinstance(task.data, dict) else None
    return (
        isinstance(sizes, list)
        and len(sizes) > 0
        and all(isinstance(s, dict) and {"width", "height"} <= s.keys() for s in sizes)
    )
