"""The committed etcd proto modules are what scripts/gen_etcd_protos.py makes of the sources."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "raftkv" / "server" / "etcd" / "proto"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_etcd_protos", ROOT / "scripts" / "gen_etcd_protos.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_modules_are_up_to_date(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (a dev dependency) is not installed")
    from importlib.metadata import version

    tools = version("grpcio-tools")
    written = _script().generate(tmp_path)
    assert written, "the generator wrote nothing"
    for fresh in written:
        committed = PROTO_DIR / fresh.name
        assert committed.exists(), (
            f"{committed.name} is not committed: run scripts/gen_etcd_protos.py"
        )
        assert committed.read_text() == fresh.read_text(), (
            f"{committed.name} is stale: run scripts/gen_etcd_protos.py and commit the result "
            f"(generated here with grpcio-tools {tools}; pyproject pins the one to use)"
        )
    generated = {p.name for p in PROTO_DIR.glob("*_pb2*")}
    assert generated == {p.name for p in written}, "a generated module has no source any more"


UPSTREAM_STYLE = """syntax = "proto3";
package etcdserverpb;

import "gogoproto/gogo.proto";
import "etcd/mvcc/mvccpb/kv.proto";
import "google/api/annotations.proto";

option (gogoproto.marshaler_all) = true;

service KV {
  rpc Range(RangeRequest) returns (RangeResponse) {
      option (google.api.http) = {
        post: "/v3/kv/range"
        body: "*"
        additional_bindings {
            post: "/v3/kv/range2"
            body: "*"
        }
    };
  }
}

message RangeRequest {
  bytes key = 1 [(gogoproto.nullable) = false];
}
"""


def test_clean_proto_drops_gogoproto_and_http_options() -> None:
    out = _script().clean_proto(UPSTREAM_STYLE)
    assert "gogoproto" not in out
    assert "google.api" not in out and "annotations.proto" not in out
    assert 'import "raftkv/server/etcd/proto/kv.proto";' in out
    assert "rpc Range(RangeRequest) returns (RangeResponse) {" in out
    assert "post:" not in out and "additional_bindings" not in out
    assert "bytes key = 1;" in out


def test_field_numbers_are_etcds() -> None:
    from raftkv.server.etcd.proto import kv_pb2, rpc_pb2

    def numbers(msg: type) -> dict[str, int]:
        return {f.name: f.number for f in msg.DESCRIPTOR.fields}  # type: ignore[attr-defined]

    assert numbers(kv_pb2.KeyValue) == {
        "key": 1,
        "create_revision": 2,
        "mod_revision": 3,
        "version": 4,
        "value": 5,
        "lease": 6,
    }
    assert numbers(rpc_pb2.Compare)["range_end"] == 64
    assert numbers(rpc_pb2.WatchResponse)["events"] == 11
    assert numbers(rpc_pb2.StatusResponse)["isLearner"] == 10
    assert rpc_pb2.DESCRIPTOR.package == "etcdserverpb"
    assert set(rpc_pb2.DESCRIPTOR.services_by_name) == {
        "KV",
        "Watch",
        "Lease",
        "Cluster",
        "Maintenance",
        "Auth",
    }
