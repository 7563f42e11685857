"""Hot-reloaded, validated configuration (raftkv.recipes.ConfigWatcher).

    python examples/hot_config.py            # a scripted demo: good, changed, bad, fixed
    python examples/hot_config.py --follow   # print each change until Ctrl-C; edit it with
                                             #   raftkv put /config/demo/workers 8
                                             #   raftkv put /config/demo/mode turbo  (rejected)

The configuration is every key under ``/config/demo/``; ``parse`` turns it into a frozen
``AppConfig`` or raises.  A rejected change is reported and the application keeps running on
the last good configuration.

Endpoints: ``--endpoints`` or ``RAFTKV_ENDPOINTS`` (default 127.0.0.1:2379).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from dataclasses import dataclass

from raftkv.client import Client
from raftkv.recipes import ConfigWatcher

PREFIX = "/config/demo/"


@dataclass(frozen=True, slots=True)
class AppConfig:
    workers: int
    mode: str


def parse(raw: dict[str, str]) -> AppConfig:
    """Validate and parse the raw keys; any exception rejects the change."""
    workers = int(raw.get("workers", "1"))
    if not 1 <= workers <= 64:
        raise ValueError(f"workers must be 1..64, got {workers}")
    mode = raw.get("mode", "safe")
    if mode not in ("safe", "fast"):
        raise ValueError(f"mode must be safe or fast, got {mode!r}")
    return AppConfig(workers, mode)


async def run(endpoints: list[str], follow: bool) -> int:
    async with Client(endpoints) as c:
        if not follow:
            await c.delete(PREFIX, prefix=True)
            await c.put(PREFIX + "workers", "4")
        cw: ConfigWatcher[AppConfig] = ConfigWatcher(
            c,
            PREFIX,
            parse,
            on_change=lambda cfg: print(f"applied  {cfg}", flush=True),
            on_error=lambda e: print(f"rejected ({e}); keeping the last good one", flush=True),
        )
        async with cw:
            if follow:
                stop = asyncio.Event()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    asyncio.get_running_loop().add_signal_handler(sig, stop.set)
                await stop.wait()
                return 0
            for key, value in (("mode", "fast"), ("workers", "1000"), ("workers", "16")):
                print(f"put {PREFIX}{key} = {value}", flush=True)
                r = await c.put(PREFIX + key, value)
                await cw.wait_revision(r.header.revision, timeout=5)
            print(f"final    {cw.value}")
            return 0 if cw.value == AppConfig(16, "fast") else 1


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--endpoints", default=os.environ.get("RAFTKV_ENDPOINTS", "127.0.0.1:2379"))
    ap.add_argument("--follow", action="store_true", help="Print changes until Ctrl-C.")
    args = ap.parse_args()
    return asyncio.run(run([e for e in args.endpoints.split(",") if e], args.follow))


if __name__ == "__main__":
    sys.exit(main())
