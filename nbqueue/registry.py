"""Finding executors: one file per task type in the task directory, plus executors
registered from a notebook (shipped to workers with cloudpickle)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import re
import sys
import threading
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from nbqueue import serialization
from nbqueue.errors import ExecutorImportError, UnknownTaskTypeError
from nbqueue.executor import TaskExecutor, as_executor, default_type_name

#: How a worker finds an executor: ("file", path) or ("pickle", digest).
ExecutorRef = tuple[str, str]


@dataclasses.dataclass
class ExecutorSpec:
    """One known task type, as the controller sees it."""

    type: str
    ref: ExecutorRef
    executor: TaskExecutor[Any, Any] | None = None  # None when the file failed to import
    payload: bytes | None = None  # cloudpickled executor, for registered ones
    error: str | None = None  # import traceback, for files that failed
    source: Any = None  # the registered object, or the executor class from a file
    #: From a shared database and refused (a bad signature): its tasks are claimed and
    #: failed with ``error``, so that no host runs them.
    refused: bool = False


def module_name(path: Path) -> str:
    """A stable module name for a task file, the same in the controller and every worker, so
    classes defined in task files pickle by reference."""
    stem = re.sub(r"\W", "_", path.stem)
    tag = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    return f"nbqueue_tasks_{stem}_{tag}"


_import_lock = threading.Lock()


def load_task_file(path: Path) -> type[TaskExecutor[Any, Any]]:
    """Import a task file and return the one TaskExecutor subclass it defines. Serialised:
    a worker's task threads may ask for the same file at once, and none may see it
    half-imported."""
    with _import_lock:
        return _load_task_file(path)


def _load_task_file(path: Path) -> type[TaskExecutor[Any, Any]]:
    name = module_name(path)
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return _executor_class(module, path)


def _executor_class(module: ModuleType, path: Path) -> type[TaskExecutor[Any, Any]]:
    found = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, TaskExecutor)
        and obj.__module__ == module.__name__
    ]
    if len(found) != 1:
        names = ", ".join(c.__name__ for c in found) or "none"
        raise ImportError(
            f"{path.name} must define exactly one TaskExecutor subclass (found {names})"
        )
    return found[0]


def task_files(directory: Path) -> list[Path]:
    """The task files of a directory: *.py not starting with '_', sorted by name."""
    return sorted(p for p in directory.glob("*.py") if not p.name.startswith("_"))


class Registry:
    """The task types a queue knows."""

    def __init__(self) -> None:
        self._specs: dict[str, ExecutorSpec] = {}

    @property
    def types(self) -> list[str]:
        """Every known type, including files that failed to import."""
        return sorted(self._specs)

    def specs(self) -> list[ExecutorSpec]:
        return [self._specs[t] for t in self.types]

    def discover(self, directory: Path) -> list[ExecutorSpec]:
        """Load every task file of ``directory``; returns the specs of files that failed
        (their tracebacks are kept, the other types work)."""
        failed = []
        for path in task_files(directory):
            task_type = path.stem
            ref: ExecutorRef = ("file", str(path.resolve()))
            try:
                cls = load_task_file(path)
                spec = ExecutorSpec(task_type, ref, executor=cls(task_type), source=cls)
            except (Exception, SystemExit) as exc:  # reported; the other types keep working
                tb = "".join(traceback.format_exception(exc))
                spec = ExecutorSpec(task_type, ref, error=tb)
                failed.append(spec)
            self._specs[task_type] = spec
        return failed

    def register(self, obj: Any, task_type: str | None = None) -> ExecutorSpec:
        """Register an executor defined here (class, instance or function) under a type."""
        task_type = task_type or default_type_name(obj)
        if not isinstance(task_type, str):
            from nbqueue.errors import ConfigurationError

            raise ConfigurationError(f"type must be a string, got {task_type!r}")
        executor = as_executor(obj, task_type)
        payload = serialization.dumps_by_value(obj, f"executor {task_type!r}")
        spec = ExecutorSpec(
            task_type, ("pickle", serialization.digest(payload)), executor, payload, source=obj
        )
        self._specs[task_type] = spec
        return spec

    def add_shipped(self, task_type: str, digest: str, payload: bytes) -> ExecutorSpec:
        """Register an executor another controller stored in the shared database (its
        payload already verified); a type with a task file here keeps the file."""
        current = self._specs.get(task_type)
        if current is not None and current.ref[0] == "file" and current.error is None:
            return current
        obj = serialization.loads(payload, f"executor {task_type!r} from the database")
        spec = ExecutorSpec(
            task_type, ("pickle", digest), as_executor(obj, task_type), payload, source=obj
        )
        self._specs[task_type] = spec
        return spec

    def refuse(self, task_type: str, digest: str, reason: str) -> ExecutorSpec:
        """Record that the database's executor for this type was refused."""
        spec = ExecutorSpec(task_type, ("pickle", digest), error=reason, refused=True)
        self._specs[task_type] = spec
        return spec

    def digests(self) -> dict[str, str]:
        """The content hash of every registered (pickled) executor, by type."""
        return {t: s.ref[1] for t, s in self._specs.items() if s.ref[0] == "pickle"}

    def get(self, task_type: str) -> ExecutorSpec:
        """The spec of a usable type; raises UnknownTaskTypeError or ExecutorImportError."""
        spec = self._specs.get(task_type)
        if spec is None:
            known = ", ".join(repr(t) for t in self.types) or "none"
            raise UnknownTaskTypeError(
                f"unknown task type {task_type!r}; known types: {known}. Add a file "
                f"{task_type}.py to the task directory or call queue.register(fn, "
                f"type={task_type!r})"
            )
        if spec.refused:
            raise ExecutorImportError(
                f"task type {task_type!r}: its executor in the database was refused: {spec.error}"
            )
        if spec.error is not None:
            raise ExecutorImportError(
                f"task type {task_type!r} is unavailable: its file failed to import:\n{spec.error}"
            )
        return spec


class ExecutorCache:
    """Worker side: executors by reference, each loaded once."""

    def __init__(self) -> None:
        self._by_ref: dict[tuple[str, str, str], TaskExecutor[Any, Any]] = {}
        self._payloads: dict[str, bytes] = {}

    def add_payload(self, digest: str, payload: bytes) -> None:
        self._payloads[digest] = payload

    def has_payload(self, digest: str) -> bool:
        return digest in self._payloads

    def get(self, task_type: str, ref: ExecutorRef) -> TaskExecutor[Any, Any]:
        key = (task_type, *ref)
        executor = self._by_ref.get(key)
        if executor is None:
            kind, value = ref
            try:
                if kind == "file":
                    executor = load_task_file(Path(value))(task_type)
                else:
                    obj = serialization.loads(self._payloads[value], f"executor {task_type!r}")
                    executor = as_executor(obj, task_type)
            except ExecutorImportError:
                raise
            except Exception as exc:
                raise ExecutorImportError(
                    f"executor for task type {task_type!r} failed to load in the worker: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            self._by_ref[key] = executor
        return executor
