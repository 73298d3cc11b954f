"""Read a module's imports from its source (ast; nothing is imported), for the
tests that check layer rules (tests/unit/test_layers.py, tests/raft/test_core_rules.py)."""

from __future__ import annotations

import ast
import pathlib
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parents[1]


@dataclass(frozen=True, slots=True)
class Import:
    module: str  # as written: "transport.messages" for `from transport.messages import X`
    names: tuple[str, ...]  # what it binds, dotted: "transport.messages.X"; `from cairn import aio` -> "cairn.aio"
    type_only: bool  # under `if TYPE_CHECKING:`
    line: int


def imports(path: pathlib.Path) -> list[Import]:
    """Every import in the file, at any depth (function-level ones too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    type_checking_nodes: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                for sub in ast.walk(child):
                    type_checking_nodes.add(id(sub))
    found = []
    for node in ast.walk(tree):
        type_only = id(node) in type_checking_nodes
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, (alias.name,), type_only, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: use absolute imports"
            names = tuple(f"{node.module}.{alias.name}" for alias in node.names)
            found.append(Import(node.module, names, type_only, node.lineno))
    return found


def imported_modules(path: pathlib.Path) -> set[str]:
    """The modules the file imports, dotted; `from cairn import aio` names the
    module cairn.aio (a name that is not one of the project's modules names
    the module it comes from: `from cairn.client import Client` -> cairn.client)."""
    modules = set()
    for found in imports(path):
        if found.names != (found.module,):  # from X import names
            submodules = [name for name in found.names if _is_project_module(name)]
            modules.update(submodules)
            if len(submodules) < len(found.names):
                modules.add(found.module)
        else:
            modules.add(found.module)
    return modules


def _is_project_module(name: str) -> bool:
    base = ROOT / name.replace(".", "/")
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def within(name: str, packages) -> bool:
    """Whether dotted `name` is one of `packages` or inside one of them."""
    return any(name == package or name.startswith(package + ".") for package in packages)


def python_files(folder: str) -> list[pathlib.Path]:
    """The project's Python files under folder."""
    return sorted((ROOT / folder).rglob("*.py"))


def relative(path: pathlib.Path) -> str:
    return path.relative_to(ROOT).as_posix()
