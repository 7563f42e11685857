"""Workloads: what the clients do during a run, their final reads, and their checks.

``register`` (linearizable CAS registers), ``set`` (CAS-added unique elements), ``append``
(Elle list-append transactions), ``watch`` (writers and per-member watchers), ``lease``
(leased keys under faults), ``lock`` / ``lock-unfenced`` (a counter under the mutex recipe,
with and without fencing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from jepsen_like.workloads.base import Workload


def _register() -> Workload:
    from jepsen_like.workloads.register import Register

    return Register()


def _set() -> Workload:
    from jepsen_like.workloads.set import SetWorkload

    return SetWorkload()


def _append() -> Workload:
    from jepsen_like.workloads.append import Append

    return Append()


def _watch() -> Workload:
    from jepsen_like.workloads.watch import WatchWorkload

    return WatchWorkload()


def _lease() -> Workload:
    from jepsen_like.workloads.lease import LeaseWorkload

    return LeaseWorkload()


def _lock() -> Workload:
    from jepsen_like.workloads.lock import LockWorkload

    return LockWorkload(fenced=True)


def _lock_unfenced() -> Workload:
    from jepsen_like.workloads.lock import LockWorkload

    return LockWorkload(fenced=False)


WORKLOADS: Final[dict[str, Callable[[], Workload]]] = {
    "register": _register,
    "set": _set,
    "append": _append,
    "watch": _watch,
    "lease": _lease,
    "lock": _lock,
    "lock-unfenced": _lock_unfenced,
}


def make_workload(name: str) -> Workload:
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r} (known: {', '.join(WORKLOADS)})")
    return WORKLOADS[name]()
