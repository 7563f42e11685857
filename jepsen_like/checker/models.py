"""Sequential models for the linearizability checker.

* :class:`CasRegister` — one register with read / write / compare-and-set; absent = ``None``.
* :class:`KvStore` — get / put / append per key, partitioned by key; absent = ``""``.

Inputs are frozen dataclasses with an :class:`~enum.IntEnum` kind.  Outputs are plain values:
a read's value, a CAS's success flag, ``None`` for writes; :data:`UNKNOWN` when not observed.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from enum import IntEnum
from typing import Final, TypeAlias

from jepsen_like.checker.linearizability import UNKNOWN, UnknownT

__all__ = [
    "MODELS",
    "CasRegister",
    "KvFn",
    "KvInput",
    "KvOutput",
    "KvStore",
    "RegisterFn",
    "RegisterInput",
    "RegisterOutput",
    "Value",
]

Value: TypeAlias = Hashable
"""A register value: anything hashable; ``None`` means absent."""


class RegisterFn(IntEnum):
    READ = 0
    WRITE = 1
    CAS = 2


@dataclass(frozen=True, slots=True)
class RegisterInput:
    """``read()``, ``write(value)`` or ``cas(expected, value)``."""

    fn: RegisterFn
    value: Value = None
    expected: Value = None


RegisterOutput: TypeAlias = Value
"""A read's value, a CAS's success (bool), ``None`` for a write."""


class CasRegister:
    """A single compare-and-set register that starts absent (``None``)."""

    name: str = "cas-register"

    def init(self) -> Value:
        return None

    def step(
        self, state: Value, input: RegisterInput, output: RegisterOutput | UnknownT
    ) -> tuple[bool, Value]:
        fn = input.fn
        if fn is RegisterFn.READ:
            return (output is UNKNOWN or output == state), state
        if fn is RegisterFn.WRITE:
            return True, input.value
        applies = state == input.expected
        if output is UNKNOWN:
            return True, (input.value if applies else state)
        return (applies == output), (input.value if applies else state)

    def read_only(self, input: RegisterInput, output: RegisterOutput | UnknownT) -> bool:
        """A read never changes the register (the search need not undo one)."""
        return input.fn is RegisterFn.READ

    def partition_key(self, input: RegisterInput) -> Hashable:
        return None

    def describe_operation(self, input: RegisterInput, output: RegisterOutput | UnknownT) -> str:
        out = "unknown" if output is UNKNOWN else None
        if input.fn is RegisterFn.READ:
            return f"read() -> {out or _show(output)}"
        if input.fn is RegisterFn.WRITE:
            return f"write({_show(input.value)})" + (" -> unknown" if out else "")
        res = out or ("ok" if output else "fail")
        return f"cas({_show(input.expected)}, {_show(input.value)}) -> {res}"

    def describe_state(self, state: Value) -> str:
        return _show(state)


class KvFn(IntEnum):
    GET = 0
    PUT = 1
    APPEND = 2


@dataclass(frozen=True, slots=True)
class KvInput:
    """``get(key)``, ``put(key, value)`` or ``append(key, value)``."""

    fn: KvFn
    key: str
    value: str = ""


KvOutput: TypeAlias = str | None
"""A get's value; ``None`` for put and append."""


class KvStore:
    """String values per key (``""`` when absent); each key is its own partition."""

    name: str = "kv"

    def init(self) -> str:
        return ""

    def step(self, state: str, input: KvInput, output: KvOutput | UnknownT) -> tuple[bool, str]:
        fn = input.fn
        if fn is KvFn.GET:
            return (output is UNKNOWN or output == state), state
        if fn is KvFn.PUT:
            return True, input.value
        return True, state + input.value

    def read_only(self, input: KvInput, output: KvOutput | UnknownT) -> bool:
        """A get never changes the key (the search need not undo one)."""
        return input.fn is KvFn.GET

    def resets(self, input: KvInput) -> bool:
        """A put may set the key to anything; a get or an append only keeps or extends it."""
        return input.fn is KvFn.PUT

    def unreachable(self, state: str, input: KvInput, output: KvOutput | UnknownT) -> bool:
        """Without a put the key only grows by appends: a get of a string that does not
        start with the current one can never be accepted."""
        return input.fn is KvFn.GET and isinstance(output, str) and not output.startswith(state)

    def partition_key(self, input: KvInput) -> Hashable:
        return input.key

    def describe_operation(self, input: KvInput, output: KvOutput | UnknownT) -> str:
        if input.fn is KvFn.GET:
            res = "unknown" if output is UNKNOWN else repr(output)
            return f"get({input.key!r}) -> {res}"
        verb = "put" if input.fn is KvFn.PUT else "append"
        return f"{verb}({input.key!r}, {input.value!r})" + (
            " -> unknown" if output is UNKNOWN else ""
        )

    def describe_state(self, state: str) -> str:
        return repr(state)


def _show(value: object) -> str:
    return "nil" if value is None else str(value)


MODELS: Final = {CasRegister.name: CasRegister, KvStore.name: KvStore}
"""Model classes by their CLI name."""
