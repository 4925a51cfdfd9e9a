"""Turning the type objects found at runtime (an executor's ``DataT`` and ``ResultT``) into
stub source: builtins and importable classes by name, TypedDicts from task files written
out, anything that cannot be expressed as ``Any``."""

from __future__ import annotations

import builtins
import collections.abc
import json
import keyword
import sys
import types
import typing
from pathlib import Path
from typing import Any

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


class Renderer:
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
                return f"{self.use_typing('Literal')}[{', '.join(quote(a) for a in args)}]"
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
            items = ", ".join(f"{quote(k)}: {v}" for k, v in fields.items())
            lines = [f"# ``{c.__qualname__}`` of {source}"]
            lines.append(
                f"{name} = TypedDict({quote(name)}, {{{items}}}{'' if total else ', total=False'})"
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


def quote(value: Any) -> str:
    """A literal in the stub; strings in double quotes (JSON escapes are valid Python)."""
    return json.dumps(value) if isinstance(value, str) else repr(value)
