"""Registries by name with aliases.

The CLI, presets and the advisor all resolve ``"gptq"`` or ``"Q4_K_M"`` through
the same lookup, and an unknown name lists what is registered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from lowbit.errors import LowbitError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name → object map with aliases and helpful errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        """Decorator registering an object under ``name`` (and ``aliases``)."""

        def deco(obj: T) -> T:
            self.add(name, obj, *aliases)
            return obj

        return deco

    def add(self, name: str, obj: T, *aliases: str) -> None:
        """Register ``obj`` under ``name``; names are case-insensitive."""
        key = name.lower()
        if key in self._items or key in self._aliases:
            raise ValueError(f"{self.kind} '{name}' registered twice")
        self._items[key] = obj
        for alias in aliases:
            self._aliases[alias.lower()] = key

    def canonical(self, name: str) -> str:
        """The registered name that ``name`` (or an alias) resolves to."""
        key = name.lower()
        key = self._aliases.get(key, key)
        if key not in self._items:
            raise LowbitError(f"unknown {self.kind} '{name}'; registered: {', '.join(self.names())}")
        return key

    def get(self, name: str) -> T:
        """The object registered under ``name`` or one of its aliases."""
        return self._items[self.canonical(name)]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name.lower() in self._items or name.lower() in self._aliases)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
