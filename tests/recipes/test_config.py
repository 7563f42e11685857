"""ConfigWatcher: load, validate, hot-reload, keep the last good value."""

from __future__ import annotations

from dataclasses import dataclass

from raftkv.client import Client
from raftkv.recipes import ConfigWatcher


@dataclass(frozen=True, slots=True)
class Conf:
    workers: int
    mode: str


def parse(d: dict[str, str]) -> Conf:
    workers = int(d["workers"])
    if workers < 1:
        raise ValueError("workers must be >= 1")
    if d.get("mode", "fast") not in ("fast", "safe"):
        raise ValueError(f"bad mode {d.get('mode')!r}")
    return Conf(workers, d.get("mode", "fast"))


async def test_hot_reload_keeps_last_good_value(client: Client) -> None:
    await client.put("/cfg/app/workers", "4")
    changes: list[Conf] = []
    errors: list[Exception] = []
    async with ConfigWatcher(
        client, "/cfg/app/", parse, on_change=changes.append, on_error=errors.append
    ) as cw:
        assert cw.value == Conf(4, "fast")
        r = await client.put("/cfg/app/mode", "safe")
        await cw.wait_revision(r.header.revision, timeout=3)
        assert cw.value == Conf(4, "safe")
        r = await client.put("/cfg/app/workers", "zero")  # invalid: rejected
        await cw.wait_revision(r.header.revision, timeout=3)
        assert cw.value == Conf(4, "safe") and cw.good_revision < r.header.revision
        assert len(errors) == 1 and isinstance(cw.last_error, ValueError)
        r = await client.put("/cfg/app/workers", "8")  # valid again
        await cw.wait_revision(r.header.revision, timeout=3)
        assert cw.value == Conf(8, "safe") and cw.last_error is None
        r = await client.delete("/cfg/app/workers")  # a required key removed: rejected
        await cw.wait_revision(r.header.revision, timeout=3)
        assert cw.value == Conf(8, "safe") and len(errors) == 2
    assert changes == [Conf(4, "fast"), Conf(4, "safe"), Conf(8, "safe")]


async def test_invalid_at_start_has_no_value_until_fixed(client: Client) -> None:
    errors: list[Exception] = []
    async with ConfigWatcher(client, "/cfg/b/", parse, on_error=errors.append) as cw:
        assert not cw.has_value and len(errors) == 1
        r = await client.put("/cfg/b/workers", "2")
        await cw.wait_revision(r.header.revision, timeout=3)
        assert cw.value == Conf(2, "fast")
