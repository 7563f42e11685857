"""The shared history model: JSONL round trips and pairing invocations with completions."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jepsen_like.checker.history import (
    HistoryFormatError,
    HistoryWriter,
    Op,
    OpType,
    Outcome,
    decode_value,
    encode_value,
    pair,
    read_history,
    write_history,
)

INV, OK, FAIL, INFO = OpType.INVOKE, OpType.OK, OpType.FAIL, OpType.INFO


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    ops = [
        Op(0, 1, INV, "txn", None, [["append", "x", 1], ["r", "x", None]], 10, node="n1"),
        Op(1, 1, OK, "txn", None, [["append", "x", 1], ["r", "x", [1]]], 20, extra={"rev": 3}),
        Op(2, 2, OK, "put", b"k\xff", b"v", 30, end_ns=40),
    ]
    path = tmp_path / "h.jsonl"
    write_history(path, ops)
    back = read_history(path)
    assert back[0] == ops[0]
    assert back[1] == ops[1]
    assert back[2].key == b"k\xff"  # not UTF-8: kept as bytes through {"b64": ...}
    assert back[2].value == "v"  # UTF-8 bytes come back as str
    assert back[2].end_ns == 40


def test_bytes_encoding() -> None:
    assert encode_value(b"abc") == "abc"
    assert encode_value(b"\x80") == {"b64": "gA=="}
    assert decode_value({"b64": "gA=="}) == b"\x80"
    assert encode_value((1, (b"a",))) == [1, ["a"]]


@given(st.recursive(st.none() | st.integers() | st.text() | st.binary(), st.lists, max_leaves=8))
def test_encode_decode_is_identity_up_to_utf8(v: object) -> None:
    def norm(x: object) -> object:
        if isinstance(x, bytes):
            try:
                return x.decode("utf-8")
            except UnicodeDecodeError:
                return x
        if isinstance(x, list):
            return [norm(y) for y in x]
        return x

    assert decode_value(encode_value(v)) == norm(v)


def test_writer_appends_and_numbers(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    with HistoryWriter(path) as w:
        w.record(0, INV, "put", "k", "v", time_ns=1)
        w.record(0, OK, "put", "k", "v", time_ns=2, extra={"revision": 5})
    ops = read_history(path)
    assert [o.index for o in ops] == [0, 1]
    assert ops[1].extra == {"revision": 5}


def test_pair_outcomes_and_times() -> None:
    h = [
        Op(0, 1, INV, "put", "a", "1", 10),
        Op(1, 2, INV, "put", "b", "2", 11),
        Op(2, 3, INV, "get", "a", None, 12),
        Op(3, 1, OK, "put", "a", "1", 15, extra={"revision": 2}),
        Op(4, 2, INFO, "put", "b", None, 16),
        Op(5, 3, FAIL, "get", "a", None, 17),
        Op(6, 4, INV, "get", "a", None, 18),  # never completes
        Op(7, 5, OK, "get", "a", "1", 19, end_ns=25),  # one-line record
    ]
    done = {c.index: c for c in pair(h)}
    assert done[0].outcome is Outcome.OK and (done[0].invoke_ns, done[0].return_ns) == (10, 15)
    assert done[0].extra == {"revision": 2} and done[0].completion_index == 3
    assert done[1].unknown and done[1].return_ns is None and done[1].value == "2"
    assert done[2].failed and done[2].return_ns == 17
    assert done[6].unknown and done[6].return_ns is None
    assert done[7].ok and (done[7].invoke_ns, done[7].return_ns, done[7].result) == (19, 25, "1")
    assert [c.index for c in pair(h)] == [0, 1, 2, 6, 7]


@pytest.mark.parametrize(
    "h",
    [
        [Op(0, 1, INV, "put", "a", "1", 1), Op(1, 1, INV, "put", "a", "2", 2)],
        [Op(0, 1, OK, "put", "a", "1", 1)],
        [Op(0, 1, INV, "put", "a", "1", 1), Op(1, 1, OK, "get", "a", "1", 2)],
    ],
)
def test_pair_refuses_broken_histories(h: list[Op]) -> None:
    with pytest.raises(HistoryFormatError):
        pair(h)


def test_bad_lines_name_their_line(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text('{"index":0,"process":1,"type":"invoke","f":"put"}\n\n{"index": 1}\n')
    with pytest.raises(HistoryFormatError, match="line 3"):
        read_history(path)


def test_op_invariants() -> None:
    with pytest.raises(ValueError):
        Op(0, 1, INV, "put", end_ns=5)
    with pytest.raises(ValueError):
        Op(0, 1, OK, "put", time_ns=5, end_ns=4)
