"""Service discovery with client-side load balancing, and an instance that dies.

    python examples/service_discovery.py

starts 3 instance processes (this file with ``--instance NAME``); each serves a one-line TCP
"hello" on a free port and registers itself as ``/services/hello/<NAME>`` with a 2-second
lease (raftkv.recipes.ServiceRegistry).  The parent discovers the service (a cache kept
current by a watch), spreads 9 calls over the instances round-robin, SIGKILLs one instance,
waits until its registration expires and vanishes from the cache, and calls again.

Endpoints: ``--endpoints`` or ``RAFTKV_ENDPOINTS`` (default 127.0.0.1:2379).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections import Counter

from raftkv.client import Client
from raftkv.recipes import RoundRobin, ServiceInstance, ServiceRegistry

SERVICE = "hello"
TTL = 2


async def instance(endpoints: list[str], name: str) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"hello from {name}\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with Client(endpoints) as c:
        inst = await ServiceRegistry(c).register(
            SERVICE, f"127.0.0.1:{port}", {"pid": str(os.getpid())}, ttl=TTL, instance_id=name
        )
        print(f"{name} registered at 127.0.0.1:{port}", flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        async with inst, server:  # leaving deregisters (revokes the lease) at once
            lost = asyncio.ensure_future(inst.session.done.wait())
            await asyncio.wait(
                (lost, asyncio.ensure_future(stop.wait())), return_when="FIRST_COMPLETED"
            )


async def call(inst: ServiceInstance) -> str:
    host, port = inst.address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    line = await reader.readline()
    writer.close()
    return line.decode().strip()


async def parent(endpoints: list[str]) -> int:
    names = ["a", "b", "c"]
    procs = {
        n: await asyncio.create_subprocess_exec(
            sys.executable,
            os.path.abspath(__file__),
            "--instance",
            n,
            "--endpoints",
            ",".join(endpoints),
        )
        for n in names
    }
    try:
        async with Client(endpoints) as c, await ServiceRegistry(c).discover(SERVICE) as d:
            await d.wait_for(lambda xs: {i.id for i in xs} >= set(names), timeout=15)
            lb = RoundRobin(d)
            picks = [lb.pick() for _ in range(9)]
            replies = [await call(p) for p in picks if p is not None]
            print("9 calls:", dict(Counter(replies)))
            loop = asyncio.get_running_loop()
            procs["b"].send_signal(signal.SIGKILL)
            await procs["b"].wait()
            t0 = loop.time()
            print("killed instance b (SIGKILL): its lease is no longer renewed")
            await d.wait_for(lambda xs: "b" not in {i.id for i in xs}, timeout=TTL + 5)
            print(f"b vanished from discovery after {loop.time() - t0:.1f}s (TTL {TTL}s)")
            replies = [await call(p) for p in (lb.pick() for _ in range(6)) if p is not None]
            print("6 calls:", dict(Counter(replies)))
            ok = all("from b" not in r for r in replies) and len(set(replies)) == 2
            return 0 if ok else 1
    finally:
        for p in procs.values():
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
                await p.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--endpoints", default=os.environ.get("RAFTKV_ENDPOINTS", "127.0.0.1:2379"))
    ap.add_argument("--instance", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    endpoints = [e for e in args.endpoints.split(",") if e]
    if args.instance is not None:
        asyncio.run(instance(endpoints, args.instance))
        return 0
    return asyncio.run(parent(endpoints))


if __name__ == "__main__":
    sys.exit(main())
