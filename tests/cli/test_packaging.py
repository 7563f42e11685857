"""The wheel's package list: the folder cli/ installs as ``raftkv_cli`` and nothing is left out."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def _packages_on_disk() -> set[str]:
    """Every folder with an ``__init__.py`` under raftkv/, cli/ and jepsen_like/, named as
    installed (cli/ as raftkv_cli)."""
    names = set()
    for top, installed in (("raftkv", "raftkv"), ("cli", "raftkv_cli"), ("jepsen_like", None)):
        for init in sorted((ROOT / top).rglob("__init__.py")):
            parts = init.parent.relative_to(ROOT).parts
            names.add(".".join((installed or parts[0], *parts[1:])))
    return names


def test_cli_folder_installs_as_raftkv_cli() -> None:
    assert SETUPTOOLS["package-dir"] == {"raftkv_cli": "cli"}
    assert PYPROJECT["project"]["scripts"] == {"raftkv": "raftkv_cli.main:main"}


def test_no_generic_top_level_package() -> None:
    tops = {p.split(".")[0] for p in SETUPTOOLS["packages"]}
    assert tops == {"raftkv", "raftkv_cli", "jepsen_like"}


def test_every_package_folder_is_listed() -> None:
    assert set(SETUPTOOLS["packages"]) == _packages_on_disk()
