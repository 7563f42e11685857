"""Checkers for recorded histories: linearizability (Wing-Gong-Lowe search) and its models."""

from jepsen_like.checker.formats import HistoryFormatError, parse_edn, parse_jepsen_log
from jepsen_like.checker.linearizability import (
    UNKNOWN,
    Anomaly,
    CheckResult,
    Model,
    Operation,
    Verdict,
    check,
    report,
)
from jepsen_like.checker.models import MODELS, CasRegister, KvStore

__all__ = [
    "MODELS",
    "UNKNOWN",
    "Anomaly",
    "CasRegister",
    "CheckResult",
    "HistoryFormatError",
    "KvStore",
    "Model",
    "Operation",
    "Verdict",
    "check",
    "parse_edn",
    "parse_jepsen_log",
    "report",
]
