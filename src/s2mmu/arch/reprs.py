"""Hex reprs for the frozen records users see: addresses and raw values read as Arm writes them.

``@hex_repr`` replaces a frozen dataclass's (or a NamedTuple's) ``__repr__`` with one that
prints every int field in hex (``PageAlloc(pa=0x8000001000)``), except the fields named
in ``decimal`` (levels, counts, VMIDs, exception levels). Booleans, enums and nested
records print as usual (nested records through their own repr). Equality, ordering and
hashing are the class's own, untouched: only the text changes.

>>> from dataclasses import dataclass
>>> @hex_repr(decimal=("level",))
... @dataclass(frozen=True)
... class Hit:
...     pa: int
...     level: int
...     ok: bool = True
>>> Hit(0x90003000, 3)
Hit(pa=0x90003000, level=3, ok=True)
>>> Hit(0x90003000, 3) == Hit(0x90003000, 3), len({Hit(1, 3), Hit(1, 3)})
(True, 1)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T", bound=type)


def hex_value(value: object) -> str:
    """Return value's repr with ints (not bools) in hex; negative ints and None as usual."""
    if isinstance(value, int) and not isinstance(value, bool) and type(value) is int:
        return f"{value:#x}" if value >= 0 else repr(value)
    if isinstance(value, tuple) and type(value) is tuple:
        inner = ", ".join(hex_value(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return repr(value)


def _field_names(cls: type) -> list[str]:
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls) if f.repr]
    names: Iterable[str] | None = getattr(cls, "_fields", None)
    if names is None:
        raise TypeError(f"hex_repr needs a dataclass or a NamedTuple, not {cls.__name__}")
    return list(names)


def hex_repr(decimal: Iterable[str] = ()) -> Callable[[T], T]:
    """Return a class decorator giving records a repr with int fields in hex.

    decimal: names of int fields shown in decimal (levels, counts, identifiers).
    """
    keep = frozenset(decimal)

    def decorate(cls: T) -> T:
        names = _field_names(cls)

        def __repr__(self: Any) -> str:
            parts = []
            for name in names:
                value = getattr(self, name)
                text = repr(value) if name in keep else hex_value(value)
                parts.append(f"{name}={text}")
            return f"{type(self).__name__}({', '.join(parts)})"

        cls.__repr__ = __repr__  # type: ignore[assignment]
        return cls

    return decorate
