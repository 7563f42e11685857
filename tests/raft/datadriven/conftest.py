"""Registers ``--rewrite`` for the datadriven scripts (the env var RAFTKV_REWRITE=1 works too).

pytest honours an option added here when this directory is on the command line (for
example ``pytest tests/raft/datadriven --rewrite``); from a wider run use the env var.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--rewrite",
        action="store_true",
        default=False,
        dest="datadriven_rewrite",
        help="regenerate the golden output of tests/raft/testdata/*.txt",
    )
