"""Typing stubs for a task directory: the task types as a ``Literal`` and each executor's
data and result types, read from its ``TaskExecutor[DataT, ResultT]`` parameters.

``Queue.init()`` calls :func:`generate` unless ``NBQUEUE_GENERATE_TYPES=false``. The stub,
``_nbqueue_types.pyi``, is rewritten only when the task files change: a content hash of
them is kept in ``.nbqueue-types.hash`` next to it.
"""

from __future__ import annotations

import builtins
import collections.abc
import hashlib
import json
import keyword
import os
import re
import sys
import tempfile
import types
import typing
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbqueue import executor as executor_module
from nbqueue.errors import TypeGenerationWarning

if TYPE_CHECKING:
    from nbqueue.registry import ExecutorSpec

STUB_NAME = "_nbqueue_types.pyi"
HASH_NAME = ".nbqueue-types.hash"
#: Part of the hash, so a new nbqueue that writes stubs differently rewrites old ones.
FORMAT_VERSION = "1"

#: Modules whose names are written unqualified (from typing / typing_extensions).
_TYPING_MODULES = {"typing", "typing_extensions"}
_UNION_TYPES: tuple[Any, ...] = (typing.Union, types.UnionType)
_LITERAL_VALUE_TYPES = (str, int, bytes, bool, type(None))
#: Names the stub itself defines or imports; a TypedDict written out never takes one.
_STUB_NAMES = {
    "Task", "TaskType", "TypedTask", "TaskDataByType", "TaskResultByType", "Any", "Literal",
    "Protocol", "TypedDict", "overload", "NotRequired", "Required", "TypeAlias", "Never",
    "collections", "datetime", "nbqueue",
}  # fmt: skip


def generate(directory: Path, specs: list[ExecutorSpec]) -> Path | None:
    """Write ``<directory>/_nbqueue_types.pyi`` for the executors of ``specs`` loaded from
    task files, unless the task files are unchanged since the last run. Returns the stub's
    path when it was written, None when it was up to date or could not be written (a
    read-only directory gets a :class:`TypeGenerationWarning`, never an exception)."""
    directory = Path(directory)
    stub, hash_file = directory / STUB_NAME, directory / HASH_NAME
    file_specs = sorted((s for s in specs if s.ref[0] == "file"), key=lambda s: s.type)
    try:
        digest = content_hash(directory, file_specs)
        if stub.is_file() and _read_text(hash_file) == digest:
            return None
        _write_atomic(stub, render(file_specs))
        _write_atomic(hash_file, digest)
    except OSError as exc:
        warnings.warn(
            f"nbqueue: could not write the typing stub for {directory} ({exc}); the queue "
            "works without it. Set NBQUEUE_GENERATE_TYPES=false to skip type generation",
            TypeGenerationWarning,
            stacklevel=3,
        )
        return None
    return stub


def content_hash(directory: Path, specs: Iterable[ExecutorSpec]) -> str:
    """SHA-256 over the names and bytes of the directory's ``*.py`` files (helper modules
    included: they may define the types), plus which types imported, since a file that
    failed because of a missing package gives a different stub once the package is there."""
    h = hashlib.sha256(f"nbqueue-types {FORMAT_VERSION}\0".encode())
    for path in sorted(directory.glob("*.py")):
        h.update(path.name.encode() + b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    for spec in specs:
        h.update(f"{spec.type}={'ok' if spec.source is not None else 'failed'}\0".encode())
    return h.hexdigest()


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and os.replace, so a reader (or a second queue starting at
    the same time) never sees half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# -- reading an executor's type parameters ---------------------------------------------------
def executor_type_args(cls: type) -> tuple[Any, Any]:
    """``(DataT, ResultT)`` from the ``TaskExecutor[DataT, ResultT]`` base of ``cls`` (or of
    one of its bases); ``(Any, Any)`` when it was not parametrised."""
    for klass in cls.__mro__:
        for base in klass.__dict__.get("__orig_bases__", ()):
            if typing.get_origin(base) is executor_module.TaskExecutor:
                args = typing.get_args(base)
                if len(args) == 2:
                    return args[0], args[1]
    return Any, Any


def pascal_case(task_type: str) -> str:
    """``"compress-image"`` -> ``"CompressImage"`` (a name for the type's aliases)."""
    words = [w for w in re.split(r"[^0-9a-zA-Z]+", task_type) if w]
    name = "".join(w[0].upper() + w[1:] for w in words) or "Task"
    return name if name.isidentifier() and not name[0].isdigit() else f"T{name}"


# -- rendering ---------------------------------------------------------------------------------
class _Renderer:
    """Turns runtime type objects into stub source. Classes defined in task files cannot be
    imported by a type checker (the files are loaded under generated module names), so the
    TypedDicts among them are written out; other classes are imported from their module,
    and anything that cannot be expressed becomes ``Any``."""

    def __init__(self, reserved: dict[str, Any], task_modules: set[str]) -> None:
        #: The generated module names the task files were loaded under.
        self.task_modules = task_modules
        self.typing_names: set[str] = set()
        self.ext_names: set[str] = set()
        self.modules: set[str] = set()
        self.blocks: list[str] = []
        self._local: dict[Any, str] = {}
        #: Names the stub defines; a reserved alias name may only go to the class it aliases.
        self._reserved = reserved
        self._used: set[str] = _STUB_NAMES | set(dir(builtins))

    def use_typing(self, name: str) -> str:
        """``name`` from typing, imported by the stub."""
        self.typing_names.add(name)
        return name

    def use_ext(self, name: str) -> str:
        """``name`` from typing_extensions (stubs are never run, so any Python works)."""
        self.ext_names.add(name)
        return name

    def claim(self, wanted: str, owner: Any) -> str:
        name, n = wanted, 1
        while name in self._used or (name in self._reserved and self._reserved[name] is not owner):
            n += 1
            name = f"{wanted}_{n}"
        self._used.add(name)
        return name

    def expr(self, tp: Any) -> str:
        """Stub source for the type ``tp``."""
        if tp is None or tp is type(None):
            return "None"
        if tp is Any or isinstance(tp, (typing.TypeVar, str, typing.ForwardRef)):
            return self.use_typing("Any")  # unparametrised, or an annotation that did not resolve
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is typing.Annotated:
            return self.expr(args[0])
        if _requiredness(origin) is not None:
            return self.expr(args[0])
        if origin in _UNION_TYPES:
            return " | ".join(dict.fromkeys(self.expr(a) for a in args))
        if origin is typing.Literal:
            if all(isinstance(a, _LITERAL_VALUE_TYPES) for a in args):
                return f"{self.use_typing('Literal')}[{', '.join(_quote(a) for a in args)}]"
            return self.use_typing("Any")
        if origin is collections.abc.Callable:
            return self._callable(args)
        if isinstance(origin, type):
            base = self.cls(origin)
            if not args or base == "Any" or base in self._local.values():
                return base
            return f"{base}[{', '.join(self._arg(a) for a in args)}]"
        if isinstance(tp, type):
            return self.cls(tp)
        return self.use_typing("Any")

    def _arg(self, tp: Any) -> str:
        if tp is Ellipsis:
            return "..."
        if isinstance(tp, (list, tuple)):  # the parameter list of a Callable
            return f"[{', '.join(self.expr(a) for a in tp)}]"
        return self.expr(tp)

    def _callable(self, args: tuple[Any, ...]) -> str:
        self.modules.add("collections.abc")
        if len(args) != 2:
            return f"collections.abc.Callable[..., {self.use_typing('Any')}]"
        return f"collections.abc.Callable[{self._arg(args[0])}, {self.expr(args[1])}]"

    def cls(self, c: type) -> str:
        """A class: builtins by name, importable classes qualified, TypedDicts from task
        files written out, anything else ``Any``."""
        if c.__module__ == "builtins":
            return c.__qualname__
        if c in self._local:
            return self._local[c]
        if c.__module__ in _TYPING_MODULES and c.__qualname__.isidentifier():
            return self.use_typing(c.__qualname__)
        if c.__module__ not in self.task_modules and _importable(c):
            self.modules.add(c.__module__)
            return f"{c.__module__}.{c.__qualname__}"
        if _is_typeddict(c):
            return self._typeddict(c)
        return self.use_typing("Any")

    def _typeddict(self, c: Any) -> str:
        name = self.claim(c.__name__, c)
        self._local[c] = name  # before the fields, for self-referencing TypedDicts
        try:
            hints = typing.get_type_hints(c, include_extras=True)
        except Exception:  # an annotation that does not resolve here: keep the keys, as Any
            hints = dict.fromkeys(c.__annotations__, Any)
        total = bool(getattr(c, "__total__", True))
        required = set(getattr(c, "__required_keys__", hints if total else ()))
        fields = {}
        for key, hint in hints.items():
            # An explicit Required/NotRequired wins: with `from __future__ import annotations`
            # Python 3.10 and 3.11 put NotRequired keys in __required_keys__.
            explicit = _requiredness(typing.get_origin(hint))
            if explicit is not None:
                required.discard(key)
                if explicit:
                    required.add(key)
            text = self.expr(hint)
            if total and key not in required:
                text = f"{self.use_ext('NotRequired')}[{text}]"
            elif not total and key in required:
                text = f"{self.use_ext('Required')}[{text}]"
            fields[key] = text
        source = _origin(c.__module__)
        self.use_typing("TypedDict")
        if all(k.isidentifier() and not keyword.iskeyword(k) for k in fields):
            lines = [f"class {name}(TypedDict{'' if total else ', total=False'}):"]
            lines.append(f'    """``{c.__qualname__}`` of {source}."""')
            lines.extend(f"    {k}: {v}" for k, v in fields.items())
        else:  # keys that are not identifiers need the functional form
            items = ", ".join(f"{_quote(k)}: {v}" for k, v in fields.items())
            lines = [f"# ``{c.__qualname__}`` of {source}"]
            lines.append(
                f"{name} = TypedDict({_quote(name)}, {{{items}}}{'' if total else ', total=False'})"
            )
        self.blocks.append("\n".join(lines))
        return name


def _requiredness(origin: Any) -> bool | None:
    """True for Required[...], False for NotRequired[...] (from typing or
    typing_extensions), None for anything else."""
    for module in (typing, sys.modules.get("typing_extensions")):
        if module is None:
            continue
        if origin is not None and origin is getattr(module, "Required", None):
            return True
        if origin is not None and origin is getattr(module, "NotRequired", None):
            return False
    return None


def _is_typeddict(c: type) -> bool:
    """typing.is_typeddict, also for typing_extensions.TypedDict classes."""
    return typing.is_typeddict(c) or (
        issubclass(c, dict) and hasattr(c, "__required_keys__") and hasattr(c, "__total__")
    )


def _origin(module_name: str) -> str:
    """Where a class came from, for the stub's comments: the task file name, not the
    generated module name."""
    path = getattr(sys.modules.get(module_name), "__file__", None)
    return Path(path).name if path else module_name


def _importable(c: type) -> bool:
    """True when ``c`` can be imported from ``c.__module__`` under its name: not from
    __main__, not defined in a function."""
    module, qualname = c.__module__, c.__qualname__
    if module == "__main__" or "<" in qualname:
        return False
    if not all(part.isidentifier() for part in module.split(".")):
        return False
    obj: Any = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj is c


def render(specs: list[ExecutorSpec]) -> str:
    """The stub source for the task files of ``specs`` (those that imported)."""
    loaded = [s for s in specs if s.source is not None]
    params = {s.type: executor_type_args(s.source) for s in loaded}
    aliases = {
        s.type: (f"{pascal_case(s.type)}Data", f"{pascal_case(s.type)}Result") for s in loaded
    }
    reserved: dict[str, Any] = {}
    for task_type, (data_alias, result_alias) in aliases.items():
        reserved.setdefault(data_alias, params[task_type][0])
        reserved.setdefault(result_alias, params[task_type][1])
    r = _Renderer(reserved, {s.source.__module__ for s in loaded})
    type_alias = r.use_ext("TypeAlias")

    if loaded:
        literal = ", ".join(_quote(s.type) for s in loaded)
        sections = [f"TaskType: {type_alias} = {r.use_typing('Literal')}[{literal}]"]
    else:
        sections = [f"TaskType: {type_alias} = {r.use_ext('Never')}"]
    sections[0] += '\n"""The task types of this folder, one per task file."""'
    failed = [s.type for s in specs if s.source is None]
    if failed:
        sections[0] += f"\n# Left out, their files failed to import: {', '.join(failed)}"

    data_names: dict[str, str] = {}
    result_names: dict[str, str] = {}
    for spec in loaded:
        first_block = len(r.blocks)
        lines = []
        for alias, tp, names in (
            (aliases[spec.type][0], params[spec.type][0], data_names),
            (aliases[spec.type][1], params[spec.type][1], result_names),
        ):
            text = r.expr(tp)
            if text != alias:
                alias = r.claim(alias, tp)
                lines.append(f"{alias}: {type_alias} = {text}")
            names[spec.type] = alias
        heading = f"# -- {spec.type} ({spec.type}.py: {spec.source.__qualname__}) ".ljust(88, "-")
        sections.append("\n\n".join([heading, *r.blocks[first_block:], *lines]))

    r.use_typing("TypedDict")
    mappings = []
    for name, names, what in (
        ("TaskDataByType", data_names, "data"),
        ("TaskResultByType", result_names, "result"),
    ):
        items = ", ".join(f"{_quote(t)}: {n}" for t, n in names.items())
        mappings.append(f"# The {what} type of each task type.")
        mappings.append(f"{name} = TypedDict({_quote(name)}, {{{items}}})")
    sections.append("\n".join(mappings))
    sections.append(_typed_task(r, loaded, data_names))

    header = [
        "# Generated by nbqueue from the task files in this folder. Do not edit: it is",
        "# rewritten when they change. To use it, put this folder on your type checker's",
        '# search path (mypy: mypy_path, pyright: extraPaths) and import "_nbqueue_types".',
        "",
    ]
    header.extend(f"import {m}" for m in sorted(r.modules))
    header.append("from nbqueue import Task")
    header.append(f"from typing import {', '.join(sorted(r.typing_names))}")
    if r.ext_names:
        header.append(f"from typing_extensions import {', '.join(sorted(r.ext_names))}")
    return "\n\n".join(["\n".join(header), *sections]) + "\n"


def _quote(value: Any) -> str:
    """A literal in the stub; strings in double quotes (JSON escapes are valid Python)."""
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _typed_task(r: _Renderer, loaded: list[ExecutorSpec], data_names: dict[str, str]) -> str:
    """A Protocol describing ``nbqueue.Task`` with one overload per task type, so that
    ``new_task = cast("TypedTask", Task)`` checks each task's type name against its data."""
    any_ = r.use_typing("Any")
    r.modules.update({"collections.abc", "datetime"})
    lines = [
        f"class TypedTask({r.use_typing('Protocol')}):",
        '    """``nbqueue.Task`` with each task type\'s data type: '
        '``new_task = cast("TypedTask", Task)``."""',
    ]
    for spec in loaded:
        data = data_names[spec.type]
        if len(loaded) > 1:
            lines.append(f"    @{r.use_typing('overload')}")
        params = [
            "self",
            "name: str",
            f"type: {r.use_typing('Literal')}[{_quote(spec.type)}]",
            "description: str | None = ...",
            "priority: int = ...",
            "max_retries: int | None = ...",
            "delay: float | datetime.timedelta = ...",
            "timeout: float | datetime.timedelta | None = ...",
            "run_at: datetime.datetime | None = ...",
            f"data: {data} | None = ...",
            f"user_id: {any_} = ...",
            f"metadata: collections.abc.Mapping[str, {any_}] | None = ...",
            "*",
            "uid: str | None = ...",
        ]
        lines.append("    def __call__(")
        lines.extend(f"        {p}," for p in params)
        lines.append(f"    ) -> Task[{data}]: ...")
    if not loaded:
        lines.append("    pass")
    return "\n".join(lines)
