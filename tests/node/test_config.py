"""NodeConfig: every setting is checked, by name; the fixed modes are typed; test switches
are kept apart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from raftkv.server.config import ClusterState, CompactionMode, NodeConfig, TestSwitches
from raftkv.server.node import Node, tcp_transport_factory


def config(tmp_path: Path, **over: Any) -> NodeConfig:
    base: dict[str, Any] = {
        "name": "n1",
        "data_dir": tmp_path,
        "client_addr": "127.0.0.1:2379",
        "peer_addr": "127.0.0.1:2380",
        "initial_cluster": {"n1": "127.0.0.1:2380"},
    }
    return NodeConfig(**{**base, **over})


def test_defaults_are_valid_and_modes_are_typed(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    cfg.validate()
    assert cfg.initial_cluster_state is ClusterState.NEW
    assert cfg.auto_compaction_mode is CompactionMode.OFF
    assert cfg.test == TestSwitches() and cfg.unsafe == frozenset()


def test_the_cli_strings_are_accepted(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        initial_cluster_state="existing",
        cluster_id=7,
        auto_compaction_mode="periodic",
    )
    cfg.validate()
    assert cfg.initial_cluster_state is ClusterState.EXISTING
    assert cfg.auto_compaction_mode is CompactionMode.PERIODIC
    assert cfg.initial_cluster_state == "existing"  # still compares as the string


def test_test_switches_are_grouped_and_unsafe_is_readable(tmp_path: Path) -> None:
    cfg = config(tmp_path, test=TestSwitches(unsafe=frozenset({"stale_reads"}), rng_seed=3))
    cfg.validate()
    assert "stale_reads" in cfg.unsafe
    with pytest.raises(AttributeError):
        cfg.unsafe = frozenset()  # type: ignore[misc]


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("name", ""),
        ("client_addr", "nowhere"),
        ("peer_addr", "127.0.0.1:99999"),
        ("initial_cluster", {}),
        ("initial_cluster", {"n2": "127.0.0.1:2480"}),
        ("initial_cluster_state", "sometimes"),
        ("cluster_token", ""),
        ("cluster_id", 0),
        ("tick_interval", 0),
        ("tick_interval", float("nan")),
        ("heartbeat_tick", 0),
        ("election_tick", 1),
        ("snapshot_count", 0),
        ("snapshot_catchup_entries", -1),
        ("max_size_per_msg", 0),
        ("max_inflight_msgs", 0),
        ("max_pending_proposals", 0),
        ("request_timeout", -1.0),
        ("lease_interval", 0.0),
        ("auto_compaction_mode", "hourly"),
        ("auto_compaction_retention", -5.0),
        ("auto_compaction_interval", 0),
        ("max_reply_bytes", 0),
        ("max_client_connections", 0),
        ("client_idle_timeout", -1.0),
        ("client_handshake_timeout", 0),
        ("max_peer_connections", 0),
        ("peer_handshake_timeout", float("inf")),
        ("fsm_factory", None),
    ],
)
def test_a_bad_setting_is_named(tmp_path: Path, setting: str, value: Any) -> None:
    cfg = config(tmp_path, **{setting: value})
    with pytest.raises(ValueError, match=f"^{setting}: "):
        cfg.validate()


def test_election_tick_must_exceed_heartbeat_tick(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^election_tick: must be greater than heartbeat_tick"):
        config(tmp_path, election_tick=3, heartbeat_tick=3).validate()


def test_joining_needs_a_cluster_id(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^cluster_id: is required"):
        config(tmp_path, initial_cluster_state="existing").validate()


def test_unknown_test_switches_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^test\.unsafe: unknown switches \['fast'\]"):
        config(tmp_path, test=TestSwitches(unsafe=frozenset({"fast"}))).validate()
    with pytest.raises(ValueError, match=r"^test\.mutations: "):
        config(tmp_path, test=TestSwitches(mutations=frozenset({"nope"}))).validate()


async def test_node_start_validates_before_touching_the_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "member"
    with pytest.raises(ValueError, match=r"^tick_interval: "):
        await Node.start(config(data, tick_interval=0), tcp_transport_factory)
    assert not data.exists()
