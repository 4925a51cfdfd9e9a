"""Finding executors: one file per task type in the task directory, plus executors
registered from a notebook (shipped to workers with cloudpickle)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import re
import sys
import threading
import traceback
import warnings
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from types import CodeType, ModuleType
from typing import TYPE_CHECKING, Any

from nbqueue import checks, config, serialization, shared, tracebacks
from nbqueue.errors import (
    ConfigurationError,
    ExecutorImportError,
    ExecutorImportWarning,
    UnknownTaskTypeError,
)
from nbqueue.executor import CallExecutor, TaskExecutor, as_executor, default_type_name

if TYPE_CHECKING:
    from nbqueue.task import Task

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
    #: Code objects of a shipped executor by name (for tracebacks), made on first use.
    code: dict[str, list[CodeType]] | None = None


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
        #: queue.put() objects: their pickles by content hash, while their handle lives
        self._shared: dict[str, bytes] = {}
        self._handles: weakref.WeakValueDictionary[str, shared.Shared] = (
            weakref.WeakValueDictionary()
        )
        self._calls: weakref.WeakKeyDictionary[Any, ExecutorSpec] = weakref.WeakKeyDictionary()

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

    def load_directory(self, directory: Path) -> dict[str, str]:
        """:meth:`discover`, then write the directory's typing stubs (unless turned off,
        see config.generate_types_enabled). Warns of each file that failed to import and
        returns their tracebacks by task type."""
        errors = {spec.type: spec.error or "" for spec in self.discover(directory)}
        for task_type, error in errors.items():
            warnings.warn(
                f"nbqueue: task type {task_type!r} is unavailable, its file failed to "
                f"import:\n{error}",
                ExecutorImportWarning,
                stacklevel=3,  # Queue.init()'s caller
            )
        if config.generate_types_enabled():
            from nbqueue import typegen  # (only then: it imports much of typing's world)

            typegen.generate(directory, self.specs())
        return errors

    def register(self, obj: Any, task_type: str | None = None) -> ExecutorSpec:
        """Register an executor defined here (class, instance or function) under a type."""
        if task_type is None:
            task_type = default_type_name(obj)
        checks.text(task_type, "type", max_length=checks.MAX_TYPE_LENGTH)
        executor = as_executor(obj, task_type)
        payload = serialization.dumps_by_value(obj, f"executor {task_type!r}")
        spec = ExecutorSpec(
            task_type, ("pickle", serialization.digest(payload)), executor, payload, source=obj
        )
        self._specs[task_type] = spec
        return spec

    def register_call(self, fn: Callable[..., Any]) -> ExecutorSpec:
        """The executor of a function given to ``Queue.submit``: its type is the function's
        name and content hash (``fit@3fa2b1c9``), so that different functions of the same
        name never stand in for each other. Pickled once per function object."""
        if not callable(fn):
            raise ConfigurationError(f"submit() takes a callable, got {fn!r}")
        try:
            spec = self._calls.get(fn)
        except TypeError:  # not weakly referenceable (a builtin): pickled every time
            spec = None
        if spec is not None and self._specs.get(spec.type) is spec:
            return spec
        name = getattr(fn, "__qualname__", None) or type(fn).__name__
        executor = CallExecutor(fn)  # pickled as the executor: a worker knows what it is
        payload = serialization.dumps_by_value(executor, f"function {name!r}")
        digest = serialization.digest(payload)
        task_type = f"{name[: checks.MAX_TYPE_LENGTH - 9]}@{digest[:8]}"
        spec = self._specs.get(task_type)
        if spec is None or spec.ref != ("pickle", digest):
            executor.task_type = task_type
            spec = ExecutorSpec(task_type, ("pickle", digest), executor, payload, source=fn)
            self._specs[task_type] = spec
        with contextlib.suppress(TypeError):
            self._calls[fn] = spec
        return spec

    def code_index(self, task_type: str) -> dict[str, list[CodeType]]:
        """Where the code of a shipped executor came from (see tracebacks.code_index),
        made on first use."""
        spec = self._specs.get(task_type)
        if spec is None or spec.source is None or spec.ref[0] != "pickle":
            return {}
        if spec.code is None:
            spec.code = tracebacks.code_index(spec.source)
        return spec.code

    def share(self, obj: Any) -> shared.Shared:
        """Keep ``obj`` to send to workers once each (``Queue.put``); its handle."""
        payload = serialization.dumps(obj, "the object given to put()")
        digest = serialization.digest(payload)
        handle = self._handles.get(digest)
        if handle is None:
            handle = shared.Shared(digest, payload)
            self._shared[digest] = payload
            self._handles[digest] = handle
            shared.provide(digest, obj)
            weakref.finalize(handle, self._unshare, digest)
        return handle

    def _unshare(self, digest: str) -> None:
        self._shared.pop(digest, None)
        shared.forget(digest)

    def shared_payloads(self, digests: Iterable[str]) -> tuple[tuple[str, bytes], ...]:
        """The pickles of these shared objects (a task that uses them carries them to its
        worker); ConfigurationError for a handle this queue does not hold."""
        try:
            return tuple((digest, self._shared[digest]) for digest in sorted(digests))
        except KeyError as missing:
            raise ConfigurationError(
                f"the shared object {str(missing.args[0])[:8]} was not put into this queue "
                "(or its handle is gone): call this queue's put() and use that handle"
            ) from None

    def prepare(self, task: Task[Any]) -> None:
        """The task's inputs pickled once, for its workers (with the objects it shares)."""
        with shared.collecting() as needed:
            task._payload = serialization.dumps(
                (task.data, task.metadata, task.user_id), f"data of task {task.name!r}"
            )
        if needed:
            task._shared = self.shared_payloads(needed)

    def claimable(self) -> list[str]:
        """The types whose tasks this controller may claim: every type but task files that
        failed to import (executors refused from the database included: their tasks are
        claimed to be failed, so that nobody waits for them)."""
        return [t for t, s in sorted(self._specs.items()) if s.error is None or s.refused]

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
