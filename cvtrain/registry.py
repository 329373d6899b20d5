"""A name -> entry map filled by importing a fixed list of modules on first use: the shape
shared by the model registry (:mod:`cvtrain.models.registry`) and the dataset registry
(:mod:`cvtrain.data.registry`), after timm's ``register_model`` / ``create_model``.

The modules are listed rather than discovered, so that registration order (and so the
job schema, whose unions are generated from the registries) is stable.
"""

from __future__ import annotations

import importlib
from typing import Generic, TypeVar

from cvtrain.errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries of one ``kind`` ("model", "dataset"), registered by importing ``modules``."""

    def __init__(self, kind: str, modules: tuple[str, ...]):
        self.kind = kind
        self.modules = modules
        self._entries: dict[str, T] = {}
        self._loaded = False

    def add(self, name: str, entry: T) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} registered twice")  # a bug, not input
        self._entries[name] = entry

    def all(self) -> dict[str, T]:
        """Every entry, in registration order."""
        if not self._loaded:
            self._loaded = True
            for module in self.modules:
                importlib.import_module(module)
        return dict(self._entries)

    def get(self, name: str) -> T:
        """The entry named ``name``; an unknown name lists the known ones."""
        entries = self.all()
        if name not in entries:
            raise UsageError(f"unknown {self.kind} {name!r}; expected one of: "
                             f"{', '.join(sorted(entries))}")
        return entries[name]
