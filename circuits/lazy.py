"""Package faces that import their modules on first use, so that ``circuits --help`` or ``circuits info``
never pay for JAX, Flax or matplotlib they do not touch."""

from __future__ import annotations

import importlib
import sys
from typing import Callable


def lazy_face(package: str, names: dict[str, str], submodules: frozenset[str] = frozenset()
              ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """(``__getattr__``, ``__dir__``) for ``package`` whose public ``names`` map to the submodule (relative to
    the package) that defines each, and whose ``submodules`` are reached as attributes; each is imported the
    first time it is asked for."""

    def __getattr__(name: str):
        if name in names:
            return getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names) | set(submodules))

    return __getattr__, __dir__
