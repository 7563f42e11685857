"""``raftkv txn``: the etcdctl grammar (pure parse tests), the JSON form, and the etcd-API CLI
commands end to end against a real in-process cluster (raftkv.testing.LocalCluster)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from raftkv import SyncClient
from raftkv.api import (
    ALL_KEYS,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    PutRequest,
    RangeRequest,
    SortOrder,
    SortTarget,
    TxnRequest,
)
from raftkv.testing import LocalCluster
from raftkv_cli.main import cli
from raftkv_cli.txn import (
    TxnParseError,
    argify,
    parse_compare,
    parse_request,
    parse_txn,
    txn_from_json,
)
from tests.cli.conftest import ThreadedFake

# --- compares -------------------------------------------------------------------------------

_OPS = {
    "=": CompareResult.EQUAL,
    "!=": CompareResult.NOT_EQUAL,
    "<": CompareResult.LESS,
    ">": CompareResult.GREATER,
}
_INT_TARGETS = {
    "ver": CompareTarget.VERSION,
    "version": CompareTarget.VERSION,
    "c": CompareTarget.CREATE,
    "create": CompareTarget.CREATE,
    "m": CompareTarget.MOD,
    "mod": CompareTarget.MOD,
}


@pytest.mark.parametrize("op", list(_OPS))
@pytest.mark.parametrize("name", list(_INT_TARGETS))
def test_integer_compares(name: str, op: str) -> None:
    assert parse_compare(f'{name}("key") {op} "17"') == Compare(
        b"key", _INT_TARGETS[name], _OPS[op], 17
    )


@pytest.mark.parametrize("op", list(_OPS))
@pytest.mark.parametrize("name", ["val", "value"])
def test_value_compares(name: str, op: str) -> None:
    assert parse_compare(f'{name}("key") {op} "17"') == Compare(
        b"key", CompareTarget.VALUE, _OPS[op], b"17"
    )


@pytest.mark.parametrize("op", list(_OPS))
def test_lease_compare_takes_a_hex_id(op: str) -> None:
    assert parse_compare(f'lease("key") {op} "694d71ddacfda227"') == Compare(
        b"key", CompareTarget.LEASE, _OPS[op], 0x694D71DDACFDA227
    )


def test_compare_quoting() -> None:
    c = parse_compare(r'val("a\"b) = \\c") = "x\ny\t\xff\u00e9\101"')
    assert c.key == b'a"b) = \\c'
    assert c.value == b"x\ny\t\xff\xc3\xa9A"
    raw = parse_compare("  val( `k\\n` )!=`v w`  ")
    assert (raw.key, raw.value, raw.result) == (b"k\\n", b"v w", CompareResult.NOT_EQUAL)


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ('vals("k") = "v"', "unknown compare target 'vals'"),
        ('val("k") == "v"', "unknown compare operator '=='"),
        ('val("k") <> "v"', "unknown compare operator '<>'"),
        ('ver("k") = "x1"', "'x1' is not a decimal integer"),
        ('lease("k") = "xyz"', "'xyz' is not a hexadecimal lease id"),
        ('val(k) = "v"', "malformed comparison"),
        ('val("k") = v', "malformed comparison"),
        ('val("k" = "v"', "malformed comparison"),
        (r'val("\q") = "v"', "invalid escape \\q"),
    ],
)
def test_bad_compares_are_refused(line: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=None) as e:
        parse_compare(line)
    assert fragment in str(e.value)


# --- requests -------------------------------------------------------------------------------


def test_put_lines() -> None:
    assert parse_request("put k v") == PutRequest(b"k", b"v")
    assert parse_request('put "a key" "a \\"value\\""') == PutRequest(b"a key", b'a "value"')
    assert parse_request("put k 'it s' --prev-kv") == PutRequest(b"k", b"it s", prev_kv=True)
    assert parse_request("put k v --lease=1f") == PutRequest(b"k", b"v", lease=31)
    assert parse_request("put k v --lease 1f") == PutRequest(b"k", b"v", lease=31)
    assert parse_request("put k --ignore-value --ignore-lease") == PutRequest(
        b"k", b"", ignore_value=True, ignore_lease=True
    )
    assert parse_request('put "\\xff\\x00" v') == PutRequest(b"\xff\x00", b"v")
    assert parse_request("put k -- -1") == PutRequest(b"k", b"-1")


def test_get_lines() -> None:
    assert parse_request("get k") == RangeRequest(b"k")
    assert parse_request("get a c") == RangeRequest(b"a", b"c")
    assert parse_request("get a --prefix") == RangeRequest(b"a", b"b")
    assert parse_request("get a --from-key") == RangeRequest(b"a", ALL_KEYS)
    assert parse_request(
        "get a --prefix --rev=4 --limit 2 --keys-only --order DESCEND --sort-by MODIFY"
    ) == RangeRequest(
        b"a",
        b"b",
        limit=2,
        revision=4,
        sort_order=SortOrder.DESCEND,
        sort_target=SortTarget.MOD,
        keys_only=True,
    )
    assert parse_request("get a --count-only --sort-by value") == RangeRequest(
        b"a", count_only=True, sort_order=SortOrder.ASCEND, sort_target=SortTarget.VALUE
    )


def test_del_lines() -> None:
    assert parse_request("del k") == DeleteRangeRequest(b"k")
    assert parse_request("del a c --prev-kv") == DeleteRangeRequest(b"a", b"c", prev_kv=True)
    assert parse_request("del a --prefix") == DeleteRangeRequest(b"a", b"b")
    assert parse_request("del a --from-key") == DeleteRangeRequest(b"a", ALL_KEYS)


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("delete k", "unknown request 'delete'"),
        ("put k", "put needs a KEY and a VALUE"),
        ("put k v extra", "unexpected extra argument"),
        ("get k --bogus", "No such option"),
        ("get k --rev x", "'x' is not a valid integer"),
        ("get a b --prefix", "only one of RANGE_END, --prefix, --from-key"),
        ("get k --order UP", "bad order 'UP'"),
        ("put k v --lease zz", "not a hexadecimal lease id"),
        ('put "k v', "unterminated quote at column 5"),
        ("put k v --help", "No such option"),
    ],
)
def test_bad_requests_are_refused(line: str, fragment: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_request(line)
    assert fragment in str(e.value)


def test_argify_splits_like_etcdctl() -> None:
    assert argify("  put  k1 \"v 1\" 'v \\2'  --lease=1 ") == [
        b"put",
        b"k1",
        b"v 1",
        b"v \\2",
        b"--lease=1",
    ]
    assert argify("") == []


# --- whole transactions ---------------------------------------------------------------------

_TEXT = """mod("key1") > "0"
val("key2") = "x"

put key1 "overwrote-key1"
get key --prefix

put key1 "created-key1"
put key2 "some extra key"
del key3

"""


def test_three_sections() -> None:
    req = parse_txn(_TEXT)
    assert [c.target for c in req.compare] == [CompareTarget.MOD, CompareTarget.VALUE]
    assert req.success == (PutRequest(b"key1", b"overwrote-key1"), RangeRequest(b"key", b"kez"))
    assert [type(op) for op in req.failure] == [PutRequest, PutRequest, DeleteRangeRequest]


def test_trailing_blank_lines_and_compares_are_optional() -> None:
    assert parse_txn(_TEXT.rstrip("\n")) == parse_txn(_TEXT)
    assert parse_txn("\nput a b\n") == TxnRequest((), (PutRequest(b"a", b"b"),), ())
    assert parse_txn("") == TxnRequest()
    assert parse_txn("   \n\t\n\n") == TxnRequest()


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ('val("k") = "v"\nmod("k") = 1\n', 2, "malformed comparison"),
        ('val("k") = "v"\n\nput a b\nput c\n', 4, "put needs a KEY and a VALUE"),
        ("\n\nput a b\n\nget x\n\ndel z\n", 5, "unexpected line after the failure requests"),
        ('\n\n\nget "x\n', 4, "unexpected line"),
        ("put a b\n\n\n", 1, "malformed comparison"),
    ],
)
def test_errors_name_the_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(TxnParseError) as e:
        parse_txn(text)
    assert e.value.line == line
    assert str(e.value).startswith(f"line {line}: ") and fragment in str(e.value)


# --- the JSON form --------------------------------------------------------------------------


def test_json_form_is_the_same_transaction() -> None:
    doc = {
        "compare": [
            {"key": "key1", "target": "mod", "result": ">", "value": 0},
            {"key": "key2", "target": "value", "result": "=", "value": "x"},
        ],
        "success": [
            {"put": {"key": "key1", "value": "overwrote-key1"}},
            {"get": {"key": "key", "prefix": True}},
        ],
        "failure": [
            {"put": {"key": "key1", "value": "created-key1"}},
            {"put": {"key": "key2", "value": "some extra key"}},
            {"delete": {"key": "key3"}},
        ],
    }
    assert txn_from_json(json.dumps(doc)) == parse_txn(_TEXT)


def test_json_fields() -> None:
    req = txn_from_json(
        json.dumps(
            {
                "compare": [
                    {"key": "k", "target": "lease", "result": "!=", "value": "1f"},
                    {"key": "a", "range_end": "b", "target": "version", "result": "<", "value": 3},
                    {"key": "c", "target": "create", "result": "=", "value": 0},
                ],
                "success": [
                    {"put": {"key": "k", "value": "v", "lease": 31, "prev_kv": True}},
                    {"get": {"key": "a", "range_end": "c", "rev": 2, "limit": 1}},
                    {"delete": {"key": "p", "prefix": True, "prev_kv": True}},
                ],
            }
        )
    )
    assert req.compare == (
        Compare(b"k", CompareTarget.LEASE, CompareResult.NOT_EQUAL, 31),
        Compare(b"a", CompareTarget.VERSION, CompareResult.LESS, 3, b"b"),
        Compare(b"c", CompareTarget.CREATE, CompareResult.EQUAL, 0),
    )
    assert req.success == (
        PutRequest(b"k", b"v", lease=31, prev_kv=True),
        RangeRequest(b"a", b"c", limit=1, revision=2),
        DeleteRangeRequest(b"p", b"q", prev_kv=True),
    )
    assert req.failure == ()


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ('{\n "compare": [}', "line 2: invalid JSON"),
        ("[]", "expected a JSON object"),
        ('{"then": []}', "unknown field(s) then"),
        ('{"success": {}}', "success: expected a list"),
        ('{"compare": [{"key": "k", "target": "val", "result": "=", "value": "v"}]}',
         "compare[0].target: 'val' is not one of"),
        ('{"compare": [{"key": "k", "target": "value", "result": "==", "value": "v"}]}',
         "compare[0].result: '==' is not one of"),
        ('{"compare": [{"key": "k", "target": "value", "result": "="}]}',
         "compare[0]: missing field 'value'"),
        ('{"compare": [{"key": "k", "target": "value", "result": "=", "value": 1}]}',
         "compare[0].value: a value compare takes a string"),
        ('{"compare": [{"key": "k", "target": "mod", "result": "=", "value": true}]}',
         "compare[0].value: expected str or int, got true"),
        ('{"success": [{"put": {"key": "k", "value": 1}}]}',
         "success[0].put.value: expected str, got 1"),
        ('{"failure": [{"del": {"key": "k"}}]}', "failure[0]: expected"),
        ('{"failure": [{"get": {"key": "k", "prefx": true}}]}',
         "failure[0].get: unknown field 'prefx'"),
        ('{"failure": [{"get": {"prefix": true}}]}', "failure[0].get: missing field 'key'"),
        ('{"success": [{"put": {"key": "k"}}]}', "success[0].put: put needs a KEY and a VALUE"),
    ],
)  # fmt: skip
def test_json_errors_name_the_place(doc: str, fragment: str) -> None:
    with pytest.raises(TxnParseError) as e:
        txn_from_json(doc)
    assert fragment in str(e.value)


# --- end to end against a real cluster ------------------------------------------------------


class ThreadedCluster:
    """A LocalCluster on its own event-loop thread, so the blocking CLI can talk to it."""

    def __init__(self, root: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.cluster = LocalCluster(3, root)
        try:
            self.run(self.cluster.__aenter__())
        except BaseException:
            self._stop_loop()
            raise
        self.endpoints = ",".join(self.cluster.endpoints)

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def close(self) -> None:
        try:
            self.run(self.cluster.__aexit__(None, None, None))
        finally:
            self._stop_loop()


@pytest.fixture(scope="module")
def kv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedCluster]:
    c = ThreadedCluster(tmp_path_factory.mktemp("txn-cluster"))
    try:
        yield c
    finally:
        c.close()


def run(c: ThreadedCluster, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(
        cli, ["--endpoints", c.endpoints, "--command-timeout", "10s", *args], input=input
    )


def ok(c: ThreadedCluster, *args: str, input: str | None = None) -> str:
    r = run(c, *args, input=input)
    assert r.exit_code == 0, r.output + (r.stderr if r.stderr_bytes else "")
    return r.stdout


def _mod_revision(c: ThreadedCluster, key: str) -> int:
    rev: int = json.loads(ok(c, "-w", "json", "get", key))["kvs"][0]["mod_revision"]
    return rev


def test_txn_cas_succeeds_then_fails(kv: ThreadedCluster) -> None:
    ok(kv, "put", "cas", "v1")
    cas = 'val("cas") = "v1"\n\nput cas v2\nget cas\n\nget cas\n\n'
    assert ok(kv, "txn", input=cas) == "SUCCESS\n\nOK\n\ncas\nv2\n"
    assert ok(kv, "txn", input=cas) == "FAILURE\n\ncas\nv2\n"
    assert ok(kv, "get", "cas") == "cas\nv2\n"
    # compare-and-swap on the mod revision, the way a lock or a config update does it
    rev = _mod_revision(kv, "cas")
    swap = f'mod("cas") = "{rev}"\n\nput cas v3 --prev-kv\n\n'
    assert ok(kv, "txn", input=swap) == "SUCCESS\n\nOK\ncas\nv2\n"
    assert ok(kv, "txn", input=swap) == "FAILURE\n"
    assert _mod_revision(kv, "cas") == rev + 1


def test_txn_version_create_and_delete(kv: ThreadedCluster) -> None:
    create_if_missing = 'create("once") = "0"\n\nput once first\n\nget once\n\n'
    assert ok(kv, "txn", input=create_if_missing) == "SUCCESS\n\nOK\n"
    assert ok(kv, "txn", input=create_if_missing) == "FAILURE\n\nonce\nfirst\n"
    ok(kv, "put", "d1", "x")
    ok(kv, "put", "d2", "y")
    out = ok(kv, "txn", input='ver("once") > "0"\n\ndel d --prefix --prev-kv\nget d --prefix\n')
    assert out == "SUCCESS\n\n2\nd1\nx\nd2\ny\n\n"


def test_txn_lease_compare(kv: ThreadedCluster) -> None:
    lid = ok(kv, "lease", "grant", "60").split()[1]
    ok(kv, "put", "leased", "v", "--lease", lid)
    assert ok(kv, "txn", input=f'lease("leased") = "{lid}"\n\n') == "SUCCESS\n"
    assert ok(kv, "txn", input='lease("leased") = "0"\n\n') == "FAILURE\n"
    ok(kv, "lease", "revoke", lid)


def test_txn_interactive_prints_the_prompts(kv: ThreadedCluster) -> None:
    out = ok(kv, "txn", "-i", input='val("ia") = "nope"\n\nput ia yes\n\nput ia no\n\n')
    assert out == (
        "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\n"
        "FAILURE\n\nOK\n"
    )
    assert ok(kv, "get", "ia", "--print-value-only") == "no\n"


def test_txn_json_in_and_out(kv: ThreadedCluster, tmp_path: Path) -> None:
    doc = {
        "compare": [{"key": "jk", "target": "version", "result": "=", "value": 0}],
        "success": [{"put": {"key": "jk", "value": "from-json"}}, {"get": {"key": "jk"}}],
        "failure": [{"delete": {"key": "jk", "prev_kv": True}}],
    }
    path = tmp_path / "txn.json"
    path.write_text(json.dumps(doc))
    first = json.loads(ok(kv, "-w", "json", "txn", "--json", str(path)))
    assert first["succeeded"] is True
    assert [next(iter(r)) for r in first["responses"]] == ["response_put", "response_range"]
    kvs = first["responses"][1]["response_range"]["kvs"]
    assert base64.b64decode(kvs[0]["value"]) == b"from-json"
    assert first["header"]["revision"] == kvs[0]["mod_revision"]
    # the same document from stdin now fails the compare and runs the failure branch
    second = json.loads(ok(kv, "-w", "json", "txn", "--json", "-", input=json.dumps(doc)))
    assert second["succeeded"] is False
    deleted = second["responses"][0]["response_delete_range"]
    assert deleted["deleted"] == 1 and base64.b64decode(deleted["prev_kvs"][0]["key"]) == b"jk"


def test_txn_parse_error_points_at_the_line_and_sends_nothing(kv: ThreadedCluster) -> None:
    r = run(kv, "txn", input='val("pe") = "x"\n\nput pe 1\nput pe\n\n')
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr.startswith("Error: line 4: invalid request 'put pe'")
    r = run(kv, "txn", "--json", "-", input='{"success": [{"put": {"key": "pe"}}]}')
    assert r.exit_code == 1 and "success[0].put: put needs a KEY and a VALUE" in r.stderr
    assert ok(kv, "get", "pe") == ""
    r = run(kv, "txn", "-i", "--json", "-", input="{}")
    assert r.exit_code == 2 and "either --interactive or --json" in r.output


def test_txn_bad_request_is_an_error(kv: ThreadedCluster) -> None:
    r = run(kv, "txn", input="\nput dup 1\nput dup 2\n\n")
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr == 'Error: duplicate key given in txn request: "dup"\n'
    assert ok(kv, "get", "dup") == ""


# --- the other etcd-API commands, end to end ------------------------------------------------


def test_get_rev_and_compact(kv: ThreadedCluster) -> None:
    ok(kv, "put", "hist", "old")
    old = _mod_revision(kv, "hist")
    ok(kv, "put", "hist", "new")
    assert ok(kv, "get", "hist", "--rev", str(old), "--print-value-only") == "old\n"
    assert ok(kv, "get", "hist", "--print-value-only") == "new\n"
    assert ok(kv, "compact", str(old + 1)) == f"compacted revision {old + 1}\n"
    r = run(kv, "get", "hist", "--rev", str(old))
    assert r.exit_code == 1 and r.stderr.startswith("Error: required revision has been compacted")


def test_put_lease_prev_kv_and_lease_commands(kv: ThreadedCluster) -> None:
    lid = ok(kv, "lease", "grant", "60").split()[1]
    ok(kv, "put", "lp", "one")
    assert ok(kv, "put", "lp", "two", "--lease", lid, "--prev-kv") == "OK\nlp\none\n"
    assert lid in ok(kv, "lease", "list").splitlines()[1:]
    ttl = ok(kv, "lease", "timetolive", lid, "--keys")
    assert ttl.startswith(f"lease {lid} granted with TTL(60s), remaining(")
    assert ttl.endswith(", attached keys([lp])\n")
    assert ok(kv, "lease", "keep-alive", "--once", lid) == f"lease {lid} keepalived with TTL(60)\n"
    assert json.loads(ok(kv, "-w", "json", "lease", "keep-alive", "--once", lid))["ttl"] == 60
    assert ok(kv, "lease", "revoke", lid) == f"lease {lid} revoked\n"
    assert ok(kv, "get", "lp") == ""
    assert ok(kv, "lease", "timetolive", lid) == f"lease {lid} already expired\n"
    r = run(kv, "lease", "keep-alive", "--once", lid)
    assert r.exit_code == 1 and r.stderr.startswith(f"Error: lease {int(lid, 16):#x} not found")


def test_del_prev_kv(kv: ThreadedCluster) -> None:
    ok(kv, "put", "dp/1", "a")
    ok(kv, "put", "dp/2", "b")
    assert ok(kv, "del", "dp/", "--prefix", "--prev-kv") == "2\ndp/1\na\ndp/2\nb\n"


def test_watch_prints_events_as_they_happen(kv: ThreadedCluster) -> None:
    ok(kv, "put", "wx/0", "before")
    start = _mod_revision(kv, "wx/0") + 1

    def writer() -> None:  # the watch starts at `start`, so no write can slip past it
        with SyncClient(kv.endpoints.split(","), command_timeout=10.0) as c:
            c.put("wx/1", "a")
            c.put("other", "ignored")
            c.put("wx/1", "b")
            c.delete("wx/1")

    t = threading.Thread(target=writer)
    t.start()
    try:
        out = ok(
            kv, "watch", "wx/", "--prefix", "--prev-kv", "--rev", str(start), "--max-events", "3"
        )
    finally:
        t.join(30)
    assert out == "PUT\nwx/1\na\nPUT\nwx/1\na\nwx/1\nb\nDELETE\nwx/1\nb\nwx/1\n\n"
    lines = ok(kv, "-w", "json", "watch", "wx/1", "--rev", str(start), "--max-events", "3")
    docs = [json.loads(line) for line in lines.splitlines()]
    assert len(docs) == 3
    assert [e["type"] for d in docs for e in d["events"]] == [0, 0, 1]
    assert [d["revision"] for d in docs] == sorted(d["revision"] for d in docs)


def test_txn_input_that_is_not_utf8_is_taken_as_bytes(fake: ThreadedFake) -> None:
    r = CliRunner().invoke(
        cli, ["--endpoints", fake.endpoints, "txn"], input=b'\nput k\xff "v\xfe"\n\n'
    )
    assert r.exit_code == 0 and r.stdout == "SUCCESS\n\nOK\n", r.output
    got = CliRunner().invoke(cli, ["--endpoints", fake.endpoints, "get", os.fsdecode(b"k\xff")])
    assert got.stdout_bytes == b"k\xff\nv\xfe\n"
