"""Hot-reloaded configuration from a key prefix, validated before use.

The prefix is read into ``{relative key: value}`` (both ``str``), passed to ``schema`` which
parses and validates it into the application's type; a watch on the prefix re-runs that on
every change.  A change that fails validation is reported to ``on_error`` and *not* applied:
the application keeps running on the last good configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from types import TracebackType
from typing import Generic, TypeVar

from raftkv.api import EventType
from raftkv.client import Bytesish, Client, Watcher, to_bytes
from raftkv.errors import InvalidArgument

T = TypeVar("T")


class ConfigWatcher(Generic[T]):
    """Keeps ``value`` equal to ``schema(<prefix as a dict>)`` for the last dict that passed
    ``schema``.  ``on_change(value)`` runs after each good change (and the initial load),
    ``on_error(exc)`` after each rejected one."""

    def __init__(
        self,
        client: Client,
        prefix: Bytesish,
        schema: Callable[[dict[str, str]], T],
        on_change: Callable[[T], object] | None = None,
        on_error: Callable[[Exception], object] | None = None,
    ) -> None:
        self.client = client
        self.prefix = to_bytes(prefix)
        if not self.prefix:
            raise InvalidArgument("ConfigWatcher needs a non-empty prefix")
        self.schema = schema
        self.on_change = on_change
        self.on_error = on_error
        self.raw: dict[str, str] = {}
        self._value: T | None = None
        self._valid = False
        self.revision = 0
        """Store revision of the last change seen (applied or rejected)."""
        self.good_revision = 0
        """Store revision of the configuration in ``value``."""
        self.last_error: Exception | None = None
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    @property
    def value(self) -> T:
        """The last configuration that passed validation; InvalidArgument if none did yet."""
        if not self._valid:
            raise InvalidArgument(f"no valid configuration under {self.prefix!r} yet")
        return self._value  # type: ignore[return-value]

    @property
    def has_value(self) -> bool:
        return self._valid

    def _rel(self, key: bytes) -> str:
        return key[len(self.prefix) :].decode(errors="replace")

    def _evaluate(self, revision: int) -> None:
        self.revision = revision
        try:
            parsed = self.schema(dict(self.raw))
        except Exception as e:  # the schema's own error: report it, keep the last good value
            self.last_error = e
            if self.on_error is not None:
                self.on_error(e)
            return
        self._value, self._valid, self.good_revision = parsed, True, revision
        self.last_error = None
        if self.on_change is not None:
            self.on_change(parsed)

    async def start(self) -> None:
        """Load the prefix (validation errors go to ``on_error``) and start following it."""
        resp = await self.client.get(self.prefix, prefix=True)
        self.raw = {self._rel(kv.key): kv.value.decode(errors="replace") for kv in resp.kvs}
        self._evaluate(resp.header.revision)
        w = self.client.watch(self.prefix, prefix=True, start_revision=resp.header.revision + 1)
        await w.start()
        self._task = asyncio.create_task(self._follow(w), name="config-watcher")

    async def _follow(self, w: Watcher) -> None:
        async with w:
            async for wr in w:
                if not wr.events:
                    continue
                for ev in wr.events:
                    k = self._rel(ev.kv.key)
                    if ev.type == EventType.PUT:
                        self.raw[k] = ev.kv.value.decode(errors="replace")
                    else:
                        self.raw.pop(k, None)
                self._evaluate(wr.revision)
                async with self._changed:
                    self._changed.notify_all()

    async def wait_revision(self, revision: int, timeout: float | None = None) -> None:
        """Wait until the change at ``revision`` (or a later one) has been evaluated."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.revision >= revision)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def __aenter__(self) -> ConfigWatcher[T]:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
