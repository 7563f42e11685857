"""The history parsers: event semantics (:ok, :fail, :info, unfinished) and malformed input."""

from __future__ import annotations

import pytest

from jepsen_like.checker.formats import HistoryFormatError, parse_edn, parse_jepsen_log
from jepsen_like.checker.linearizability import UNKNOWN
from jepsen_like.checker.models import KvFn, KvInput, RegisterFn, RegisterInput


def log(*events: str) -> list[str]:
    return [f"INFO  jepsen.util - {e}" for e in events]


def test_jepsen_log_ok_operations_with_line_numbers() -> None:
    ops = parse_jepsen_log(
        [
            "INFO  jepsen.core - Worker 0 starting",
            *log("0\t:invoke\t:write\t3", "1\t:invoke\t:cas\t[3 4]", "0\t:ok\t:write\t3"),
            *log("1\t:ok\t:cas\t[3 4]", "2\t:invoke\t:read\tnil", "2\t:ok\t:read\tnil"),
        ]
    )
    assert [(o.id, o.process, o.input, o.output, o.call, o.ret) for o in ops] == [
        (2, 0, RegisterInput(RegisterFn.WRITE, 3), None, 2, 4),
        (3, 1, RegisterInput(RegisterFn.CAS, 4, 3), True, 3, 5),
        (6, 2, RegisterInput(RegisterFn.READ), None, 6, 7),
    ]


def test_jepsen_log_fail_info_and_unfinished() -> None:
    ops = parse_jepsen_log(
        log(
            "0\t:invoke\t:cas\t[1 2]",
            "0\t:fail\t:cas\t[1 2]",  # definitely did not apply: kept as a CAS that said no
            "1\t:invoke\t:read\tnil",
            "1\t:fail\t:read\t:timed-out",  # changes nothing: dropped
            "2\t:invoke\t:write\t4",
            "2\t:info\t:write\t:timed-out",  # unknown outcome
            "3\t:invoke\t:read\tnil",  # never completes, a read: dropped
            "4\t:invoke\t:cas\t[4 0]",  # never completes: unknown
            "5\t:invoke\t:write\t9",
            "5\t:fail\t:write\t9",  # definitely not applied: dropped
        )
    )
    assert [(o.id, o.output, o.ret) for o in ops] == [
        (1, False, 2),
        (5, UNKNOWN, float("inf")),
        (8, UNKNOWN, float("inf")),
    ]


@pytest.mark.parametrize(
    ("events", "message"),
    [
        (("0\t:ok\t:write\t1",), "never invoked"),
        (("0\t:invoke\t:write\t1", "0\t:invoke\t:read\tnil"), "invokes while line 1 is open"),
        (("0\t:invoke\t:write\t1", "0\t:ok\t:read\t1"), "completes read, invoked write"),
        (("0\t:invoke\t:cas\t5",), "cas needs"),
        (("0\t:invoke\t:frob\t1",), "unknown register operation"),
        (("0\t:invoke\t:write\t[1",), "line 1"),
    ],
)
def test_jepsen_log_malformed(events: tuple[str, ...], message: str) -> None:
    with pytest.raises(HistoryFormatError, match=message):
        parse_jepsen_log(log(*events))


def test_edn_kv_operations() -> None:
    ops = parse_edn(
        [
            '{:process 0, :type :invoke, :f :put, :key "k", :value "a \\"q\\""}',
            '{:process 0, :type :ok, :f :put, :key "k", :value "a \\"q\\""}',
            "",
            '{:process 1, :type :invoke, :f :get, :key "k", :value nil}',
            "{:process :nemesis, :type :info, :f :start, :value nil}",
            '{:process 1, :type :ok, :f :get, :key "k", :value nil}',
            '{:process 2, :type :invoke, :f :append, :key "k", :value "z"}',
            '{:process 2, :type :info, :f :append, :key "k", :value "z"}',
            '{:process 3, :type :invoke, :f :append, :key "j", :value "y"}',
            '{:process 3, :type :fail, :f :append, :key "j", :value "y"}',
        ]
    )
    assert [(o.id, o.input, o.output, o.ret) for o in ops] == [
        (1, KvInput(KvFn.PUT, "k", 'a "q"'), None, 2),
        (4, KvInput(KvFn.GET, "k"), "", 6),
        (7, KvInput(KvFn.APPEND, "k", "z"), UNKNOWN, float("inf")),
    ]


def test_edn_register_operations() -> None:
    ops = parse_edn(
        [
            "{:process 0 :type :invoke :f :cas :value [nil 1]}",
            "{:process 0 :type :ok :f :cas :value [nil 1]}",
            "{:process 0 :type :invoke :f :read :value nil}",
            "{:process 0 :type :ok :f :read :value 1}",
        ]
    )
    assert [(o.input, o.output) for o in ops] == [
        (RegisterInput(RegisterFn.CAS, 1, None), True),
        (RegisterInput(RegisterFn.READ), 1),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{:process 0, :type :invoke, :f :get, :key 3, :value nil}", "string :key"),
        ('{:process 0, :type :invoke, :f :put, :key "k", :value 3}', "string :value"),
        ('{:process 0, :type :invoke, :f :get, :key "k"', "expected a value"),
        ('{"process" 0}', "not a keyword"),
        ("[:process 0]", "expected an EDN map"),
        ('{:process 0, :type :invoke, :f :get, :key "k", :value foo}', "unsupported EDN symbol"),
    ],
)
def test_edn_malformed(line: str, message: str) -> None:
    with pytest.raises(HistoryFormatError, match=message):
        parse_edn([line])


def test_edn_refuses_mixed_models() -> None:
    with pytest.raises(HistoryFormatError, match="mixes"):
        parse_edn(
            [
                '{:process 0, :type :invoke, :f :put, :key "k", :value "v"}',
                '{:process 0, :type :ok, :f :put, :key "k", :value "v"}',
                "{:process 1, :type :invoke, :f :write, :value 1}",
                "{:process 1, :type :ok, :f :write, :value 1}",
            ]
        )
