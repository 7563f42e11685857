"""Coordination recipes on top of the client: sessions, locks, elections, service discovery,
load balancing and hot configuration (model: etcd's ``clientv3/concurrency``).  See
docs/recipes.md.  Only :mod:`raftkv.client.client`, :mod:`raftkv.api`, :mod:`raftkv.errors` and
:mod:`raftkv.protocol.methods` are used: recipes are plain clients of the public API."""

from raftkv.errors import LockLost
from raftkv.recipes.config import ConfigWatcher
from raftkv.recipes.election import Election, Leader, leader_of, observe
from raftkv.recipes.mutex import LockToken, Mutex, RWMutex, try_lock, unlock
from raftkv.recipes.queue import Barrier, Queue
from raftkv.recipes.registry import (
    ConsistentHash,
    Discovery,
    Instance,
    InstanceSource,
    PickFirst,
    Random,
    RoundRobin,
    ServiceInstance,
    ServiceRegistry,
)
from raftkv.recipes.session import Session

__all__ = [
    "Barrier",
    "ConfigWatcher",
    "ConsistentHash",
    "Discovery",
    "Election",
    "Instance",
    "InstanceSource",
    "Leader",
    "LockLost",
    "LockToken",
    "Mutex",
    "PickFirst",
    "Queue",
    "RWMutex",
    "Random",
    "RoundRobin",
    "ServiceInstance",
    "ServiceRegistry",
    "Session",
    "leader_of",
    "observe",
    "try_lock",
    "unlock",
]
