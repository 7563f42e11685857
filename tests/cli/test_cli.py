"""The etcdctl-like commands, driven through click's CliRunner against a fake cluster."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from raftkv_cli.context import parse_duration
from raftkv_cli.main import cli
from tests.cli.conftest import ThreadedFake


def run(fake: ThreadedFake | None, *args: str, env: dict[str, str] | None = None) -> Result:
    pre = ["--endpoints", fake.endpoints] if fake is not None else []
    return CliRunner().invoke(cli, [*pre, "--command-timeout", "3s", *args], env=env)


def ok(fake: ThreadedFake, *args: str) -> str:
    r = run(fake, *args)
    assert r.exit_code == 0, r.output + (r.stderr if r.stderr_bytes else "")
    return r.stdout


def _dead_addr() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_parse_duration() -> None:
    assert parse_duration("2s") == 2.0
    assert parse_duration("500ms") == 0.5
    assert parse_duration("1.5") == 1.5
    assert parse_duration("1m") == 60.0
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_put_then_get_simple(fake: ThreadedFake) -> None:
    assert ok(fake, "put", "foo", "bar") == "OK\n"
    assert ok(fake, "put", "foo", "baz", "--prev-kv") == "OK\nfoo\nbar\n"
    assert ok(fake, "get", "foo") == "foo\nbaz\n"
    assert ok(fake, "get", "nothing") == ""


def test_get_flags(fake: ThreadedFake) -> None:
    for k in ("a1", "a2", "a3", "b1"):
        ok(fake, "put", k, k.upper())
    assert ok(fake, "get", "a", "--prefix") == "a1\nA1\na2\nA2\na3\nA3\n"
    assert ok(fake, "get", "a", "--prefix", "--keys-only") == "a1\na2\na3\n"
    assert ok(fake, "get", "a", "--prefix", "--print-value-only") == "A1\nA2\nA3\n"
    assert ok(fake, "get", "a", "--prefix", "--count-only") == "3\n"
    assert ok(fake, "get", "a", "--prefix", "--limit", "2", "--keys-only") == "a1\na2\n"
    assert ok(fake, "get", "a2", "b2", "--keys-only") == "a2\na3\nb1\n"
    assert ok(fake, "get", "a2", "--from-key", "--keys-only") == "a2\na3\nb1\n"
    assert ok(fake, "get", "a", "--prefix", "--keys-only", "--order", "DESCEND") == "a3\na2\na1\n"
    assert ok(fake, "get", "a1", "--consistency", "s") == "a1\nA1\n"
    # history: --rev reads the first value back
    ok(fake, "put", "a1", "new")
    rev_before = json.loads(ok(fake, "-w", "json", "get", "a1"))["kvs"][0]["create_revision"]
    assert ok(fake, "get", "a1", "--rev", str(rev_before), "--print-value-only") == "A1\n"
    r = run(fake, "get", "a", "--prefix", "b")
    assert r.exit_code != 0 and "only one of" in r.output


def test_get_json_is_one_document_with_base64_bytes(fake: ThreadedFake) -> None:
    ok(fake, "put", "k\u00e9", "v")
    doc = json.loads(ok(fake, "-w", "json", "get", "k\u00e9"))
    assert doc["count"] == 1
    kv = doc["kvs"][0]
    assert base64.b64decode(kv["key"]).decode() == "k\u00e9"
    assert base64.b64decode(kv["value"]) == b"v"
    assert doc["header"]["revision"] == kv["mod_revision"]


def test_get_table(fake: ThreadedFake) -> None:
    ok(fake, "put", "k", "v")
    out = ok(fake, "-w", "table", "get", "k")
    lines = out.splitlines()
    assert lines[0].startswith("+-") and "KEY" in lines[1] and "VALUE" in lines[1]
    assert "| k " in lines[3] and "| v " in lines[3]


def test_del(fake: ThreadedFake) -> None:
    for k in ("p1", "p2", "q"):
        ok(fake, "put", k, "x" + k)
    assert ok(fake, "del", "p", "--prefix", "--prev-kv") == "2\np1\nxp1\np2\nxp2\n"
    assert ok(fake, "del", "nothing") == "0\n"
    assert ok(fake, "get", "", "--prefix", "--keys-only") == "q\n"


def test_endpoints_from_the_environment(fake: ThreadedFake) -> None:
    r = run(None, "put", "k", "env", env={"RAFTKV_ENDPOINTS": fake.endpoints})
    assert r.exit_code == 0 and r.stdout == "OK\n"


def test_failure_is_one_error_line_and_nonzero_exit() -> None:
    r = CliRunner().invoke(
        cli, ["--endpoints", _dead_addr(), "--command-timeout", "300ms", "get", "k"]
    )
    assert r.exit_code == 1
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: range did not complete within 0.3s")
    assert "ConnectionLost" not in lines[0] and "('127.0.0.1'" not in lines[0]


def test_server_error_is_reported(fake: ThreadedFake) -> None:
    r = run(fake, "member", "remove", "abc")
    assert r.exit_code == 1
    assert r.stderr == "Error: member abc not found\n"


def test_member_list_formats(fake: ThreadedFake) -> None:
    simple = ok(fake, "member", "list").splitlines()
    members = fake.cluster.members
    assert simple[0] == (
        f"{members[0].id:x}, started, n1, {members[0].as_member().peer_addr}, "
        f"{members[0].addr}, false"
    )
    assert len(simple) == 3
    tab = ok(fake, "-w", "table", "member", "list").splitlines()
    assert "ID" in tab[1] and "IS LEARNER" in tab[1]
    assert len(tab) == 3 + 3 + 1
    doc = json.loads(ok(fake, "-w", "json", "member", "list"))
    assert [m["name"] for m in doc["members"]] == ["n1", "n2", "n3"]


def test_member_add_prints_how_to_start_it(fake: ThreadedFake) -> None:
    out = ok(
        fake,
        "member",
        "add",
        "n4",
        "--peer-addr",
        "127.0.0.1:9004",
        "--client-addr",
        "127.0.0.1:9104",
        "--learner",
    )
    assert "added to cluster 7 as a learner" in out
    assert "--initial-cluster n1=" in out and ",n4=127.0.0.1:" in out
    assert "--initial-cluster-state existing --cluster-id 7" in out
    assert "--listen-client 127.0.0.1:9104" in out


def test_move_leader_takes_a_hex_id(fake: ThreadedFake) -> None:
    target = fake.cluster.members[2]
    assert ok(fake, "move-leader", f"{target.id:x}") == f"Leadership transferred to {target.id:x}\n"
    assert fake.call(lambda: fake.cluster.leader) is target


def test_endpoint_status_table_has_every_column(fake: ThreadedFake) -> None:
    ok(fake, "put", "k", "v")
    lines = ok(fake, "-w", "table", "endpoint", "status").splitlines()
    header = lines[1]
    for col in (
        "ENDPOINT",
        "ID",
        "VERSION",
        "DB SIZE",
        "IS LEADER",
        "IS LEARNER",
        "RAFT TERM",
        "RAFT INDEX",
        "RAFT APPLIED INDEX",
        "REVISION",
        "HASH",
    ):
        assert col in header
    rows = lines[3:-1]
    assert len(rows) == 3
    assert [("true" in r.split("|")[5]) for r in rows] == [True, False, False]
    simple = ok(fake, "endpoint", "status").splitlines()
    assert simple[0].startswith(fake.cluster.members[0].addr + ", ")
    doc = json.loads(ok(fake, "-w", "json", "endpoint", "status"))
    assert [d["endpoint"] for d in doc] == fake.cluster.endpoints


def test_endpoint_status_reports_a_dead_endpoint(fake: ThreadedFake) -> None:
    dead = _dead_addr()
    eps = f"{fake.cluster.members[0].addr},{dead}"
    r = CliRunner().invoke(
        cli, ["--endpoints", eps, "--command-timeout", "1s", "endpoint", "status"]
    )
    assert r.exit_code == 1
    assert r.stdout.startswith(fake.cluster.members[0].addr)
    assert f"Failed to get the status of endpoint {dead}" in r.stderr


def test_endpoint_health(fake: ThreadedFake) -> None:
    out = ok(fake, "endpoint", "health")
    assert out.count("is healthy: successfully committed proposal") == 3
    fake.call(lambda: fake.cluster.set_leader(None))
    r = run(fake, "endpoint", "health")
    assert r.exit_code == 1
    assert "is unhealthy" in r.stderr and "Error: unhealthy cluster" in r.stderr


def test_snapshot_save(fake: ThreadedFake, tmp_path: Path) -> None:
    data = os.urandom(3000)
    for m in fake.cluster.members:
        m.snapshot_data = data
    out = ok(fake, "snapshot", "save", str(tmp_path / "s.db"))
    assert out.startswith(f"Snapshot saved at {tmp_path / 's.db'}")
    assert (tmp_path / "s.db").read_bytes() == data


def test_compact(fake: ThreadedFake) -> None:
    for i in range(3):
        ok(fake, "put", "k", str(i))
    assert ok(fake, "compact", "3") == "compacted revision 3\n"
    r = run(fake, "get", "k", "--rev", "2")
    assert r.stderr == ("Error: required revision has been compacted (compact revision 3)\n")


def test_watch_replays_from_a_revision(fake: ThreadedFake) -> None:
    ok(fake, "put", "w1", "a")
    ok(fake, "put", "x", "ignored")
    ok(fake, "del", "w1")
    out = ok(fake, "watch", "w", "--prefix", "--rev", "1", "--max-events", "2")
    assert out == "PUT\nw1\na\nDELETE\nw1\n\n"


def test_lease_commands(fake: ThreadedFake) -> None:
    out = ok(fake, "lease", "grant", "60")
    assert out.startswith("lease ") and out.endswith(" granted with TTL(60s)\n")
    lid = out.split()[1]
    ok(fake, "put", "lk", "v", "--lease", lid)
    assert ok(fake, "lease", "list") == f"found 1 leases\n{lid}\n"
    assert ok(fake, "lease", "timetolive", lid, "--keys").endswith("attached keys([lk])\n")
    assert ok(fake, "lease", "revoke", lid) == f"lease {lid} revoked\n"
    assert ok(fake, "get", "lk") == ""


def test_member_update_alarm_and_defrag(fake: ThreadedFake) -> None:
    members = fake.cluster.members
    out = ok(fake, "member", "update", f"{members[1].id:x}", "--peer-addr", "127.0.0.1:1")
    assert out == f"Member {members[1].id:x} updated in cluster\n"
    assert ok(fake, "alarm", "list") == ""
    members[0].alarms.append("CORRUPT")
    assert ok(fake, "alarm", "list") == f"memberID:{members[0].id:x} alarm:CORRUPT\n"
    out = ok(fake, "defrag").splitlines()
    assert out == [f"Finished defragmenting member[{m.addr}] (8192 -> 4096 bytes)" for m in members]
    first = json.loads(ok(fake, "-w", "json", "defrag").splitlines()[0])
    assert first == {"endpoint": members[0].addr, "size_before": 8192, "size_after": 4096}


def test_keys_and_values_that_are_not_utf8_pass_through_as_bytes(fake: ThreadedFake) -> None:
    # what Python makes of argv bytes b"odd\xff\xfekey": surrogate escapes
    key = os.fsdecode(b"odd\xff\xfekey")
    assert ok(fake, "put", key, os.fsdecode(b"v\xff")) == "OK\n"
    r = run(fake, "get", key)
    assert r.exit_code == 0, r.output
    assert r.stdout_bytes == b"odd\xff\xfekey\nv\xff\n"
    assert run(fake, "get", os.fsdecode(b"odd\xff"), "--prefix", "--keys-only").stdout_bytes == (
        b"odd\xff\xfekey\n"
    )
    assert ok(fake, "--hex", "get", key) == "\\x6f\\x64\\x64\\xff\\xfe\\x6b\\x65\\x79\n\\x76\\xff\n"
    assert ok(fake, "del", key) == "1\n"


def test_simple_output_is_byte_for_byte(fake: ThreadedFake) -> None:
    value = os.fsdecode(b"\x1b[31mred\x1b[0m\x00nul\xc3\xa9")
    ok(fake, "put", "k", value)
    r = run(fake, "get", "k", "--print-value-only")
    assert r.stdout_bytes == b"\x1b[31mred\x1b[0m\x00nul\xc3\xa9\n"


def test_table_cells_escape_control_bytes_and_count_widths(fake: ThreadedFake) -> None:
    ok(fake, "put", "k", os.fsdecode(b"\x1b[31mred\x00"))
    ok(fake, "put", "k2", "\u65e5\u672c")  # two wide characters: four columns
    lines = ok(fake, "-w", "table", "get", "k", "--prefix").splitlines()
    assert "\x1b" not in "".join(lines) and "\x00" not in "".join(lines)
    assert "| \\x1b[31mred\\x00 |" in lines[3]
    assert "| \u65e5\u672c" + " " * 11 + " |" in lines[4]


def test_global_options_after_the_command(fake: ThreadedFake) -> None:
    r = CliRunner().invoke(cli, ["member", "list", "-w", "table", "--endpoints", fake.endpoints])
    assert r.exit_code == 0, r.output
    assert "IS LEARNER" in r.stdout.splitlines()[1]
    ok(fake, "put", "k", "v")
    doc = json.loads(ok(fake, "get", "k", "--write-out=json", "--dial-timeout", "1s"))
    assert doc["count"] == 1


def test_endpoints_with_http_scheme(fake: ThreadedFake) -> None:
    eps = ",".join("http://" + e for e in fake.cluster.endpoints)
    r = CliRunner().invoke(cli, ["--endpoints", eps, "put", "k", "v"])
    assert r.exit_code == 0 and r.stdout == "OK\n", r.output
    r = CliRunner().invoke(cli, ["--endpoints", "https://127.0.0.1:2379", "get", "k"])
    assert r.exit_code != 0 and "TLS is not supported yet" in r.output


def test_lease_grant_refuses_a_ttl_that_is_not_positive(fake: ThreadedFake) -> None:
    for args in (["0"], ["--", "-5"]):
        r = run(fake, "lease", "grant", *args)
        assert r.exit_code == 2 and "is not a positive number of seconds" in r.stderr, r.output
    assert ok(fake, "lease", "list") == "found 0 leases\n"


def test_put_without_value_reads_stdin(fake: ThreadedFake) -> None:
    big = os.urandom(200_000)
    r = CliRunner().invoke(cli, ["--endpoints", fake.endpoints, "put", "big"], input=big)
    assert r.exit_code == 0 and r.stdout == "OK\n", r.output
    assert run(fake, "get", "big", "--print-value-only").stdout_bytes == big + b"\n"
    r = CliRunner().invoke(cli, ["--endpoints", fake.endpoints, "put", "empty"], input=b"")
    assert r.exit_code == 2 and "VALUE argument or the value on stdin" in r.stderr


def test_ctrl_c_ends_watch_and_keep_alive_with_status_130(
    fake: ThreadedFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    from raftkv.client.sync import SyncClient

    cancelled: list[bool] = []

    class Interrupted:
        def __iter__(self) -> Interrupted:
            return self

        def __next__(self) -> object:
            raise KeyboardInterrupt

        def cancel(self) -> None:
            cancelled.append(True)

    monkeypatch.setattr(SyncClient, "watch", lambda *a, **k: Interrupted())
    monkeypatch.setattr(SyncClient, "lease_keep_alive", lambda *a, **k: Interrupted())
    r = run(fake, "watch", "k")
    assert r.exit_code == 130 and cancelled == [True]
    r = run(fake, "lease", "keep-alive", "1")
    assert r.exit_code == 130


def test_argv_bytes_reach_the_store_unchanged(fake: ThreadedFake) -> None:
    """The real thing: a process whose argv is not UTF-8 (``$'odd\\xff\\xfekey'`` in bash)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "RAFTKV_ENDPOINTS": fake.endpoints,
    }
    cmd = [sys.executable, "-m", "raftkv_cli.main"]
    p = subprocess.run([*cmd, "put", b"odd\xff\xfekey", b"\x1b[1m"], env=env, capture_output=True)
    assert p.returncode == 0 and p.stdout == b"OK\n", p.stderr
    p = subprocess.run([*cmd, "get", b"odd\xff\xfekey"], env=env, capture_output=True)
    assert p.stdout == b"odd\xff\xfekey\n\x1b[1m\n", p.stderr
