"""The client's knobs as config objects, the single keyword arguments mapped onto them, and the
names the rest of the code base imports from raftkv.client."""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import pytest

import raftkv
import raftkv.client
from raftkv.client import Client, ClientConfig, Limits, Retries, SyncClient, Timeouts
from raftkv.client.config import KWARG_FIELDS, config_from_kwargs
from raftkv.errors import InvalidArgument
from raftkv.protocol.methods import MAX_REPLY_BYTES

EP = ["127.0.0.1:1"]


def test_the_defaults_are_the_clients_defaults() -> None:
    c = Client(EP)
    assert c.config == ClientConfig()
    assert c.config.timeouts == Timeouts(
        dial=2.0, command=5.0, attempt=None, keepalive_interval=10.0, keepalive_timeout=3.0
    )
    assert c.config.retries == Retries(
        max_redirects=5,
        backoff_base=0.025,
        backoff_cap=1.0,
        breaker_threshold=3,
        breaker_cooldown=5.0,
    )
    assert c.config.limits == Limits(write_window=64, max_frame=MAX_REPLY_BYTES)
    assert c.config.cluster_id == 0 and c.config.auto_sync_interval is None


def test_config_objects_are_frozen() -> None:
    cfg = ClientConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.cluster_id = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.timeouts.command = 1.0  # type: ignore[misc]


def test_a_config_is_what_the_client_uses() -> None:
    cfg = ClientConfig(
        timeouts=Timeouts(command=9.0, attempt=1.0),
        retries=Retries(max_redirects=2, breaker_threshold=7),
        limits=Limits(write_window=8),
        cluster_id=42,
    )
    c = Client(EP, config=cfg)
    assert c.config is cfg
    assert (c.command_timeout, c.attempt_timeout, c.dial_timeout) == (9.0, 1.0, 2.0)
    assert (c.max_redirects, c.write_window, c.cluster_id) == (2, 8, 42)
    assert c.breaker(EP[0]).threshold == 7


# every single keyword argument, a non-default value, and where it must land
KWARGS: dict[str, Any] = {
    "dial_timeout": 0.7,
    "command_timeout": 7.0,
    "attempt_timeout": 0.9,
    "keepalive_interval": None,
    "keepalive_timeout": 1.5,
    "max_redirects": 1,
    "backoff_base": 0.5,
    "backoff_cap": 2.0,
    "breaker_threshold": 9,
    "breaker_cooldown": 0.25,
    "write_window": 16,
    "max_frame": 1 << 20,
    "cluster_id": 99,
    "auto_sync_interval": 30.0,
}


def test_every_keyword_argument_maps_onto_the_config() -> None:
    assert set(KWARGS) == set(KWARG_FIELDS)
    c = Client(EP, **KWARGS)
    for name, value in KWARGS.items():
        group, attr = KWARG_FIELDS[name]
        holder = getattr(c.config, group) if group else c.config
        assert getattr(holder, attr) == value, name
        assert getattr(c, name) == value, name  # still readable under the old name


def test_a_keyword_argument_overrides_the_same_knob_of_the_config() -> None:
    cfg = ClientConfig(timeouts=Timeouts(command=9.0, dial=1.0), cluster_id=5)
    c = Client(EP, config=cfg, command_timeout=3.0)
    assert c.config.timeouts == Timeouts(command=3.0, dial=1.0)
    assert c.config.cluster_id == 5
    assert cfg.timeouts.command == 9.0  # the given config is not changed


def test_none_is_a_value_not_a_default() -> None:
    c = Client(EP, config=ClientConfig(timeouts=Timeouts(attempt=1.0)), attempt_timeout=None)
    assert c.attempt_timeout is None
    assert Client(EP, keepalive_interval=None).keepalive_interval is None


def test_unknown_keywords_are_refused() -> None:
    with pytest.raises(TypeError, match="bogus"):
        config_from_kwargs(None, {"bogus": 1})


@pytest.mark.parametrize(
    "make",
    [
        lambda: Timeouts(dial=0),
        lambda: Timeouts(command=-1.0),
        lambda: Timeouts(attempt=0.0),
        lambda: Timeouts(keepalive_interval=0.0),
        lambda: Timeouts(keepalive_timeout=0.0),
        lambda: Retries(max_redirects=-1),
        lambda: Retries(backoff_base=-0.1),
        lambda: Retries(breaker_threshold=0),
        lambda: Retries(breaker_cooldown=-1.0),
        lambda: Limits(write_window=0),
        lambda: Limits(max_frame=0),
        lambda: ClientConfig(auto_sync_interval=0.0),
        lambda: ClientConfig(cluster_id=-1),
        lambda: Client(EP, write_window=0),
        lambda: Client(EP, breaker_threshold=0),
        lambda: Client(EP, keepalive_interval=-1.0),
        lambda: Client(EP, auto_sync_interval=0),
        lambda: Client([]),
        lambda: Client(["no-port"]),
    ],
)
def test_bad_knobs_fail_at_construction(make: Any) -> None:
    with pytest.raises(InvalidArgument):
        make()


def test_sync_client_takes_a_config() -> None:
    with SyncClient(EP, config=ClientConfig(timeouts=Timeouts(command=4.0))) as c:
        assert c.aio.command_timeout == 4.0


NAMES_USED_ELSEWHERE = {
    # raftkv/__init__.py (lazily, from raftkv.client.client and raftkv.client.sync)
    "raftkv.client.client": ["Client", "WatchFilter", "WatchResponse", "Watcher", "_Conn"],
    "raftkv.client.sync": ["SyncClient", "SyncWatcher"],
    # cli/, jepsen_like/, raftkv/recipes/, raftkv/bench/, raftkv/testing.py, tests/
    "raftkv.client": [
        "DEFAULT_ENDPOINT",
        "BreakerState",
        "Bytesish",
        "CircuitBreaker",
        "Client",
        "EndpointHealth",
        "EndpointStatus",
        "HashKVResponse",
        "Member",
        "MemberAddResponse",
        "SnapshotInfo",
        "SyncClient",
        "SyncWatcher",
        "WatchFilter",
        "WatchResponse",
        "Watcher",
        "key_range",
        "op_delete",
        "op_get",
        "op_put",
        "to_bytes",
        "ClientConfig",
        "Timeouts",
        "Retries",
        "Limits",
    ],
}


def test_the_names_other_code_imports_are_still_there() -> None:
    for module, names in NAMES_USED_ELSEWHERE.items():
        mod = importlib.import_module(module)
        for name in names:
            assert hasattr(mod, name), f"{module}.{name}"
    for name in raftkv.__all__:
        if name in ("api", "errors"):  # the modules raftkv re-exports beside the client
            continue
        assert getattr(raftkv, name) is getattr(raftkv.client, name)


def test_every_client_module_declares_all() -> None:
    for name in (
        "client",
        "config",
        "connection",
        "router",
        "snapshot",
        "sync",
        "values",
        "watcher",
        "writes",
    ):
        mod = importlib.import_module(f"raftkv.client.{name}")
        assert isinstance(mod.__all__, list), name
        for exported in mod.__all__:
            assert hasattr(mod, exported), f"{name}.{exported}"
    assert set(raftkv.client.__all__) <= set(dir(raftkv.client))


PUBLIC_METHODS = [
    "put",
    "get",
    "range",
    "delete",
    "txn",
    "compact",
    "lease_grant",
    "lease_revoke",
    "lease_time_to_live",
    "lease_leases",
    "lease_keep_alive_once",
    "lease_keep_alive",
    "watch",
    "status",
    "health",
    "hash_kv",
    "member_list",
    "sync_endpoints",
    "member_add",
    "member_remove",
    "member_promote",
    "move_leader",
    "snapshot_save",
    "close",
]


def test_every_public_method_has_a_docstring() -> None:
    from raftkv.client import SyncWatcher, Watcher

    for cls in (Client, SyncClient, Watcher, SyncWatcher):
        for name in dir(cls):
            if name.startswith("_") and name not in ("__aenter__", "__anext__", "__next__"):
                continue
            attr = getattr(cls, name)
            if callable(attr) or isinstance(attr, property):
                assert (attr.__doc__ or "").strip(), f"{cls.__name__}.{name}"
    for name in PUBLIC_METHODS:
        assert getattr(Client, name).__doc__, name
        assert getattr(SyncClient, name).__doc__, name
