"""The layer rules of docs/architecture.md, enforced by reading imports with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# layer (module prefix) -> module prefixes it must never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "raftkv.raft": (
        "asyncio",
        "socket",
        "sqlite3",
        "aiosqlite",
        "time",
        "threading",
        "selectors",
        "msgpack",
        "raftkv.storage",
        "raftkv.transport",
        "raftkv.node",
        "raftkv.server",
        "raftkv.client",
        "raftkv.fsm",
        "raftkv.mvcc",
        "raftkv.lease",
    ),
    "raftkv.mvcc": (
        "asyncio",
        "time",
        "socket",
        "sqlite3",
        "aiosqlite",
        "threading",
        "raftkv.node",
        "raftkv.server",
        "raftkv.client",
    ),
    "raftkv.lease": (
        "asyncio",
        "time",
        "socket",
        "sqlite3",
        "aiosqlite",
        "threading",
        "raftkv.node",
        "raftkv.server",
        "raftkv.client",
    ),
    "raftkv.fsm": (
        "asyncio",
        "time",
        "socket",
        "sqlite3",
        "aiosqlite",
        "threading",
        "raftkv.node",
        "raftkv.server",
        "raftkv.client",
    ),
    "raftkv.storage": ("raftkv.transport", "raftkv.fsm", "raftkv.server", "raftkv.client"),
    "raftkv.transport": ("raftkv.storage", "raftkv.fsm", "raftkv.server", "raftkv.client"),
    "raftkv.node": ("raftkv.server", "raftkv.client"),
    "raftkv.server": ("raftkv.client",),
    "raftkv.client": (
        "raftkv.server",
        "raftkv.node",
        "raftkv.storage",
        "raftkv.transport",
        "raftkv.raft",
        "raftkv.fsm",
        "raftkv.mvcc",
    ),
    "raftkv.recipes": (
        "raftkv.server",
        "raftkv.node",
        "raftkv.storage",
        "raftkv.transport",
        "raftkv.raft",
        "raftkv.fsm",
        "raftkv.mvcc",
    ),
}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return out


def matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def sources() -> list[Path]:
    return sorted((ROOT / "raftkv").rglob("*.py"))


def test_there_are_sources_to_check() -> None:
    names = {module_name(p) for p in sources()}
    assert "raftkv.raft.raft" in names and "raftkv.raft.rawnode" in names


@pytest.mark.parametrize("path", sources(), ids=lambda p: module_name(p))
def test_layer_imports(path: Path) -> None:
    mod = module_name(path)
    for layer, banned in FORBIDDEN.items():
        if not matches(mod, layer):
            continue
        for imp in imports_of(path):
            for b in banned:
                assert not matches(imp, b), f"{mod} imports {imp}: layer {layer} must not use {b}"


def test_core_uses_only_injected_randomness() -> None:
    """The core may name ``random.Random`` (the injected generator) and nothing else of it."""
    for path in sorted((ROOT / "raftkv" / "raft").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "random":
                raise AssertionError(f"{path.name}: 'from random import ...' is not allowed")
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "random"
            ):
                assert node.attr == "Random", f"{path.name}: random.{node.attr} is global state"


def test_checker_catches_a_violation(tmp_path: Path) -> None:
    """The import check can fail: a core module that imports asyncio is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("import asyncio\nfrom time import monotonic\n")
    found = [i for i in imports_of(bad) if any(matches(i, b) for b in FORBIDDEN["raftkv.raft"])]
    assert found == ["asyncio", "time"]
