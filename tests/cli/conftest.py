"""A fake cluster on its own event-loop thread, so the blocking CLI can talk to it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from tests.client.fakes import FakeCluster

T = TypeVar("T")


class ThreadedFake:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.cluster = FakeCluster(3)
        self.run(self.cluster.__aenter__())

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the fake's loop thread (the fake is not thread-safe)."""

        async def wrap() -> T:
            return fn()

        result: T = self.run(wrap())
        return result

    @property
    def endpoints(self) -> str:
        return ",".join(self.cluster.endpoints)

    def close(self) -> None:
        self.run(self.cluster.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def fake() -> Iterator[ThreadedFake]:
    f = ThreadedFake()
    try:
        yield f
    finally:
        f.close()
