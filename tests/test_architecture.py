"""The layer rules of docs/architecture.md, enforced by reading imports with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

IO: tuple[str, ...] = (
    "asyncio",
    "socket",
    "selectors",
    "sqlite3",
    "aiosqlite",
    "threading",
    "subprocess",
    "time",
)
"""What a sans-IO layer must not import: it is driven, it never waits, reads a clock or does I/O."""

# The layer table of docs/architecture.md.  Layer (module prefix; the longest prefix wins) ->
# the raftkv layers it may import.  Anything of raftkv not listed is refused.
ALLOWED: dict[str, tuple[str, ...]] = {
    "raftkv.errors": (),
    "raftkv.api": ("raftkv.errors",),
    "raftkv.raft": ("raftkv.errors",),
    "raftkv.protocol": ("raftkv.api", "raftkv.errors"),
    "raftkv.state": ("raftkv.api", "raftkv.errors", "raftkv.protocol"),
    "raftkv.server.storage": ("raftkv.errors", "raftkv.raft"),
    "raftkv.server.transport": ("raftkv.errors", "raftkv.protocol", "raftkv.raft"),
    "raftkv.server": (
        "raftkv.api",
        "raftkv.errors",
        "raftkv.protocol",
        "raftkv.raft",
        "raftkv.state",
    ),
    # A follower forwards calls to the leader as a client of it (see raftkv.server.forward).
    "raftkv.server.forward": ("raftkv.api", "raftkv.errors", "raftkv.protocol", "raftkv.client"),
    "raftkv.client": ("raftkv.api", "raftkv.errors", "raftkv.protocol"),
    "raftkv.recipes": ("raftkv.api", "raftkv.errors", "raftkv.client"),
    "raftkv.testing": ("raftkv.errors", "raftkv.raft", "raftkv.server"),
    "raftkv.bench": (
        "raftkv.api",
        "raftkv.errors",
        "raftkv.protocol",
        "raftkv.raft",
        "raftkv.server",
        "raftkv.client",
        "raftkv.testing",
    ),
    "raftkv": ("raftkv.client", "raftkv.api", "raftkv.errors"),
}
SANS_IO: tuple[str, ...] = ("raftkv.raft", "raftkv.state", "raftkv.protocol", "raftkv.server.apply")
"""Layers (and single modules) that do no I/O.  ``raftkv.server.apply`` is the apply step the
node and the simulator share: it must stay runnable from a seed."""

SEALED_OUTSIDE: tuple[str, ...] = ("raftkv", "cli", "jepsen_like", "tests")
"""Where the core is sealed: no module here outside ``raftkv/raft`` reads the Raft state
behind a ``RawNode`` (its ``.raft`` attribute); they use ``RawNode.status()`` and its
properties.  ``tests/raft`` is exempt: it is the core's own white-box suite (the datadriven
interpreter and the scenario tests inspect progress, timeouts and the unstable log)."""

SEAL_EXEMPT: tuple[str, ...] = ("raftkv/raft/", "tests/raft/")

SEAL_PENDING: dict[str, int] = {}
"""Known accesses still to be replaced (file -> how many); the count may only go down."""


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


def layer_of(mod: str) -> str:
    """The longest layer prefix of ``mod`` in :data:`ALLOWED`."""
    return max((name for name in ALLOWED if matches(mod, name)), key=len)


def violations(mod: str, imports: list[str]) -> list[str]:
    """What ``mod`` imports against the layer table: its own layer and the layers below it
    (``raftkv.server`` uses ``raftkv.server.storage``) are always open; sibling sublayers and
    the parent are not, unless listed."""
    layer = layer_of(mod)
    out: list[str] = []
    for imp in imports:
        if matches(imp, "raftkv") and imp != "raftkv":
            target = layer_of(imp)
            below = target == layer or (layer != "raftkv" and matches(target, layer))
            if not below and not any(matches(imp, a) for a in ALLOWED[layer]):
                out.append(f"{mod} imports {imp}: layer {layer} may use {ALLOWED[layer]}")
        if any(matches(mod, s) for s in SANS_IO) and any(matches(imp, b) for b in IO):
            out.append(f"{mod} imports {imp}: {layer} is sans-IO")
    return out


@pytest.mark.parametrize("path", sources(), ids=lambda p: module_name(p))
def test_layer_imports(path: Path) -> None:
    mod = module_name(path)
    assert violations(mod, imports_of(path)) == []


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
    """The import check can fail: a core module that imports asyncio is reported, and so is
    a client module that imports the server, or a storage module that imports the state."""
    bad = tmp_path / "bad.py"
    bad.write_text("import asyncio\nfrom time import monotonic\n")
    assert len(violations("raftkv.raft.log", imports_of(bad))) == 2
    assert violations("raftkv.client.client", ["raftkv.server.node"])
    assert violations("raftkv.client.client", ["raftkv.raft.types"])
    assert violations("raftkv.server.storage.sqlite", ["raftkv.state.fsm"])
    assert violations("raftkv.server.storage.sqlite", ["raftkv.server.transport.peer"])
    assert violations("raftkv.protocol.wire", ["raftkv.raft.types"])
    assert not violations("raftkv.server.node", ["raftkv.server.storage.sqlite", "raftkv.state"])


def raft_accesses(path: Path) -> list[int]:
    """Line numbers where ``path`` reads an attribute named ``raft`` of anything but the
    ``raftkv`` package itself (``raftkv.raft.X`` names the module, not a core)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr == "raft"
        and not (isinstance(node.value, ast.Name) and node.value.id == "raftkv")
    ]


def sealed_sources() -> list[Path]:
    out: list[Path] = []
    for top in SEALED_OUTSIDE:
        for p in sorted((ROOT / top).rglob("*.py")):
            rel = p.relative_to(ROOT).as_posix()
            if not rel.startswith(SEAL_EXEMPT):
                out.append(p)
    return out


def test_nothing_outside_the_core_reads_the_raft_behind_a_rawnode() -> None:
    found: dict[str, list[int]] = {}
    for p in sealed_sources():
        lines = raft_accesses(p)
        rel = p.relative_to(ROOT).as_posix()
        if len(lines) > SEAL_PENDING.get(rel, 0):
            found[rel] = lines
    assert found == {}, "use RawNode.status() or its properties, not rawnode.raft"


def test_the_seal_check_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import raftkv.raft\nt = node.rn.raft.term\nx = raftkv.raft.Status\n")
    assert raft_accesses(bad) == [2]
    assert any(p.name == "node.py" for p in sealed_sources())
    assert not any("tests/raft/" in p.as_posix() for p in sealed_sources())


def test_nothing_reads_another_objects_pending_table() -> None:
    """A ``_pending`` table (the node's proposals, the client's requests, the storage's
    queued saves) is read only by its owner (``self._pending``); metrics and tests read
    ``Node.pending_proposals`` or ``Node.proposals`` (its ``peak``)."""
    for p in sealed_sources():
        tree = ast.parse(p.read_text(), filename=str(p))
        for n in ast.walk(tree):
            if isinstance(n, ast.Attribute) and n.attr == "_pending":
                assert isinstance(n.value, ast.Name) and n.value.id == "self", (
                    f"{p.relative_to(ROOT).as_posix()}:{n.lineno}"
                )
