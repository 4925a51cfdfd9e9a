"""Typing stubs for a task directory: content, the content hash, when they are rewritten,
and that a type checker accepts them and checks code against them."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import nbqueue
from nbqueue import Queue, TaskExecutor, typegen
from nbqueue.errors import TypeGenerationWarning
from nbqueue.registry import ExecutorSpec, Registry
from nbqueue.typegen import stub

EXAMPLES = Path(__file__).resolve().parent.parent / "tasks"


@pytest.fixture
def examples(task_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the example task files (test-task.py puts its folder on sys.path: undone
    after the test)."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    for path in EXAMPLES.glob("*.py"):
        shutil.copy(path, task_dir)
    return task_dir


def specs_of(directory: Path) -> list[ExecutorSpec]:
    registry = Registry()
    registry.discover(directory)
    return registry.specs()


def test_stub_has_the_types_and_each_executors_data_and_result_types(examples: Path) -> None:
    stub = typegen.generate(examples, specs_of(examples))

    assert stub == examples / "_nbqueue_types.pyi"
    text = stub.read_text()
    ast.parse(text)  # valid Python syntax
    assert 'TaskType: TypeAlias = Literal["compress-image", "test-task"]' in text
    # TypedDicts of the task files are written out (a type checker cannot import them)...
    assert "class CompressImageData(TypedDict):" in text
    assert "    step_seconds: NotRequired[float]" in text  # inherited from a total=False base
    assert "    sizes: list[Size]" in text
    assert "class Size(TypedDict):" in text
    assert "class CompressImageResult(TypedDict):" in text
    assert "class TestTaskResult(TypedDict, total=False):" in text
    # ...importable classes are referenced by their qualified name.
    assert "import _models" in text
    assert "    email: _models.Email" in text
    assert (
        'TaskDataByType = TypedDict("TaskDataByType", {"compress-image": CompressImageData, '
        '"test-task": TestTaskData})'
    ) in text
    assert 'type: Literal["test-task"]' in text
    assert ") -> Task[TestTaskData]: ..." in text


def test_hash_file_is_written_and_unchanged_files_are_not_rewritten(examples: Path) -> None:
    specs = specs_of(examples)
    stub = typegen.generate(examples, specs)
    assert stub is not None
    digest = (examples / ".nbqueue-types.hash").read_text()
    assert len(digest) == 64 and int(digest, 16) >= 0
    before = stub.stat().st_mtime_ns

    assert typegen.generate(examples, specs) is None
    assert stub.stat().st_mtime_ns == before
    assert (examples / ".nbqueue-types.hash").read_text() == digest
    # No temporary files are left behind by the atomic writes.
    assert sorted(p.name for p in examples.iterdir() if not p.name.startswith("__")) == [
        ".nbqueue-types.hash", "_models.py", "_nbqueue_types.pyi", "compress-image.py",
        "test-task.py",
    ]  # fmt: skip


def test_a_changed_or_added_task_file_regenerates(examples: Path) -> None:
    assert typegen.generate(examples, specs_of(examples)) is not None
    digest = (examples / ".nbqueue-types.hash").read_text()

    with (examples / "compress-image.py").open("a") as f:
        f.write("\n# edited\n")
    assert typegen.generate(examples, specs_of(examples)) is not None
    assert (examples / ".nbqueue-types.hash").read_text() != digest

    (examples / "resize.py").write_text(
        "from typing import TypedDict\n"
        "from nbqueue import TaskExecutor\n\n"
        "class ResizeData(TypedDict):\n    factor: float\n\n"
        "class Resize(TaskExecutor[ResizeData, dict[str, int]]):\n"
        "    def exec(self, task):\n        return {'processed': True}\n"
    )
    stub = typegen.generate(examples, specs_of(examples))
    assert stub is not None
    text = stub.read_text()
    assert 'Literal["compress-image", "resize", "test-task"]' in text
    assert "class ResizeData(TypedDict):\n" in text
    assert "ResizeResult: TypeAlias = dict[str, int]" in text


def test_a_deleted_stub_is_regenerated(examples: Path) -> None:
    specs = specs_of(examples)
    stub = typegen.generate(examples, specs)
    assert stub is not None
    stub.unlink()
    assert typegen.generate(examples, specs) == stub
    assert stub.is_file()


def test_queue_init_writes_the_stub(examples: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NBQUEUE_GENERATE_TYPES", raising=False)
    monkeypatch.delenv("ANQUEUE_GENERATE_TYPES", raising=False)
    with Queue(examples, max_workers=1):
        pass
    assert (examples / "_nbqueue_types.pyi").is_file()
    assert (examples / ".nbqueue-types.hash").is_file()


@pytest.mark.parametrize("variable", ["NBQUEUE_GENERATE_TYPES", "ANQUEUE_GENERATE_TYPES"])
def test_generation_disabled_by_environment_writes_nothing(
    examples: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.delenv("NBQUEUE_GENERATE_TYPES", raising=False)
    monkeypatch.setenv(variable, "false")
    before = sorted(os.listdir(examples))
    with Queue(examples, max_workers=1) as queue:
        assert queue.types == ["compress-image", "test-task"]
    after = sorted(p for p in os.listdir(examples) if p != "__pycache__")
    assert after == [p for p in before if p != "__pycache__"]


def test_an_unwritable_stub_location_warns_instead_of_raising(examples: Path) -> None:
    (examples / "_nbqueue_types.pyi").mkdir()  # os.replace onto a directory fails
    with pytest.warns(TypeGenerationWarning, match="could not write the typing stub"):
        assert typegen.generate(examples, specs_of(examples)) is None
    assert not (examples / ".nbqueue-types.hash").exists()
    assert [p.name for p in examples.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write anywhere"
)
def test_a_read_only_directory_warns_and_the_queue_still_starts(examples: Path) -> None:
    examples.chmod(0o555)
    try:
        with pytest.warns(TypeGenerationWarning), Queue(examples, max_workers=1) as q:
            assert q.types == ["compress-image", "test-task"]
    finally:
        examples.chmod(0o755)


def test_types_that_cannot_be_expressed_fall_back_to_any(task_dir: Path) -> None:
    (task_dir / "broken.py").write_text("raise RuntimeError('boom')\n")
    (task_dir / "plain.py").write_text(
        "from nbqueue import TaskExecutor\n\n"
        "class Plain(TaskExecutor):\n"
        "    def exec(self, task):\n        return {'processed': True}\n"
    )
    (task_dir / "odd-keys.py").write_text(
        "from __future__ import annotations\n"
        "import dataclasses\n"
        "from typing import Literal, TypedDict\n"
        "from typing_extensions import NotRequired  # (typing's has it from Python 3.11)\n"
        "from nbqueue import TaskExecutor\n\n"
        "@dataclasses.dataclass\nclass Local:\n    x: int\n\n"
        "OddData = TypedDict('OddData', {'from': str, 'local': Local, 'mode': Literal['a', 1],"
        " 'maybe': NotRequired[int | None]})\n\n"
        "class Odd(TaskExecutor[OddData, tuple[int, ...]]):\n"
        "    def exec(self, task):\n        return {'processed': True}\n"
    )
    stub = typegen.generate(task_dir, specs_of(task_dir))
    assert stub is not None
    text = stub.read_text()
    ast.parse(text)
    assert 'TaskType: TypeAlias = Literal["odd-keys", "plain"]' in text
    assert "# Left out, their files failed to import: broken" in text
    assert "PlainData: TypeAlias = Any" in text and "PlainResult: TypeAlias = Any" in text
    assert (
        'OddData = TypedDict("OddData", {"from": str, "local": Any, "mode": Literal["a", 1], '
        '"maybe": NotRequired[int | None]})'
    ) in text
    assert "OddKeysData: TypeAlias = OddData" in text
    assert "OddKeysResult: TypeAlias = tuple[int, ...]" in text


def test_executor_type_args_are_read_from_the_generic_base() -> None:
    class Data(dict[str, Any]):
        pass

    class Direct(TaskExecutor[Data, int]):
        pass

    class Inherited(Direct):
        pass

    class Bare(TaskExecutor):  # type: ignore[type-arg]
        pass

    assert stub.executor_type_args(Direct) == (Data, int)
    assert stub.executor_type_args(Inherited) == (Data, int)
    assert stub.executor_type_args(Bare) == (Any, Any)
    assert stub.pascal_case("compress-image") == "CompressImage"
    assert stub.pascal_case("3d_render") == "T3dRender"


def test_a_type_checker_checks_user_code_against_the_stub(examples: Path, tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    typegen.generate(examples, specs_of(examples))
    (examples / "user_ok.py").write_text(
        "from typing import cast\n"
        "from _models import Email\n"
        "from _nbqueue_types import CompressImageData, TaskType, TypedTask\n"
        "from nbqueue import Task\n\n"
        "new_task = cast('TypedTask', Task)\n"
        "a = new_task('resize', 'compress-image', priority=2,\n"
        "             data={'image': 'a.png', 'sizes': [{'width': 1, 'height': 2}]})\n"
        "b = new_task('mail', 'test-task', data={'email': Email(to=[], sender='me')})\n"
        "kind: TaskType = 'test-task'\n"
        "data: CompressImageData = {'image': 'x', 'sizes': [], 'step_seconds': 0.1}\n"
    )
    (examples / "user_bad.py").write_text(
        "from typing import cast\n"
        "from _nbqueue_types import TaskType, TypedTask\n"
        "from nbqueue import Task\n\n"
        "new_task = cast('TypedTask', Task)\n"
        "a = new_task('resize', 'compress-image', data={'image': 3, 'sizes': []})\n"
        "b = new_task('mail', 'test-task', data={'email': 'not an Email'})\n"
        "kind: TaskType = 'no-such-type'\n"
    )
    checkout = Path(nbqueue.__file__).resolve().parent.parent
    env = {**os.environ, "MYPYPATH": os.pathsep.join([str(examples), str(checkout)])}
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental",
         "--cache-dir", str(tmp_path / "mypy-cache"), "--follow-imports=silent",
         "_nbqueue_types.pyi", "user_ok.py", "user_bad.py"],
        cwd=examples, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    errors = sorted(
        line.split(":")[0] + ":" + line.split(":")[1]
        for line in run.stdout.splitlines()
        if ": error:" in line
    )
    assert errors == ["user_bad.py:6", "user_bad.py:7", "user_bad.py:8"], run.stdout + run.stderr
