"""One registry type for datasets, protocols and methods: named entries, loud lookups.

A registry knows nothing of its plugins. Each plugin module registers itself with its
kind's decorator (``register_dataset``, ``register_protocol``, ``register_method``); the
package that owns the kind imports its built-in plugin modules in its ``__init__`` (one
line each), so a lookup always sees them and no module imports its plugins back. The
name given to the decorator is the plugin's only name: the decorator stamps it on the
registered class (``cls.name``), and nothing writes it a second time.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

from crossreid.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._entries[name] = entry
        return entry

    def decorator(self, name: str, make: Callable[[T], object] | None = None) -> Callable[[T], T]:
        """``@registry.decorator(name)``: register the decorated object (or ``make(obj)``), return it.
        A decorated class gets ``name`` as its ``name`` attribute; one that writes its own is an error."""
        def wrap(obj: T) -> T:
            if isinstance(obj, type):
                if "name" in vars(obj):
                    raise ValueError(f"{self.kind} {name!r}: {obj.__name__} sets its own 'name'; remove it, "
                                     "the registration names it")
                obj.name = name  # type: ignore[attr-defined]
            self.add(name, make(obj) if make else obj)  # type: ignore[arg-type]
            return obj
        return wrap

    def get(self, name: str) -> T:
        """The entry; an unknown name is a UserError naming the closest known one."""
        if name not in self._entries:
            close = difflib.get_close_matches(str(name), list(self._entries), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(self.names())}"
            raise UserError(f"unknown {self.kind} {name!r}; {hint}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
