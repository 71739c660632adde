"""The registry of domain modules: which exist, and what each contributes (routers, CLI, demo, benches).

A module is a sub-package of `citybrain` with the standard shape (models, schemas, service, api).
Optional parts are found by name: `api.router`, `cli.app`, `demo.seed`, `bench.BENCHES`, `migrations/`.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

# Order matters: foundations first (demo seeding and router registration follow it).
MODULES: tuple[str, ...] = (
    "audit",
    "identity",
    "geo",
    "iot",
    "cases",
    "data",
    "ops",
    "ai",
    "video",
    "services",
    "web",
    "sim",
)

PACKAGE_DIR = Path(__file__).parent


def installed() -> list[str]:
    """The modules present in this installation."""
    return [m for m in MODULES if (PACKAGE_DIR / m / "__init__.py").exists()]


def module_paths() -> list[Path]:
    """The folders of the installed modules."""
    return [PACKAGE_DIR / m for m in installed()]


def part(module: str, name: str) -> ModuleType | None:
    """Import `citybrain.<module>.<name>` if that file exists, else None."""
    if not (PACKAGE_DIR / module / "__init__.py").exists():
        return None
    if importlib.util.find_spec(f"citybrain.{module}.{name}") is None:
        return None
    return importlib.import_module(f"citybrain.{module}.{name}")


def parts(name: str) -> Iterator[tuple[str, ModuleType]]:
    """Every installed module's part `name`, in registry order."""
    for module in installed():
        mod = part(module, name)
        if mod is not None:
            yield module, mod


def import_models():  # -> MetaData
    """Import every module's models so the metadata is complete; return it."""
    from citybrain.db import Base

    importlib.import_module("citybrain.bus")
    for _module, _mod in parts("models"):
        pass
    return Base.metadata
