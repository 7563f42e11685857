"""In-process clusters for the recipe tests (raftkv.testing.LocalCluster)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from raftkv.client import Client
from raftkv.testing import LocalCluster


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    """One member: the recipes only see the client API, and one member starts fastest."""
    async with LocalCluster(1, tmp_path / "c") as c:
        yield c


@pytest.fixture
async def client(cluster: LocalCluster) -> AsyncIterator[Client]:
    async with Client(cluster.endpoints, command_timeout=10.0) as c:
        yield c
