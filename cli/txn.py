"""``raftkv txn``: etcdctl's transaction command, from stdin or from a JSON document.

The text form is etcdctl's (``etcdctl/ctlv3/command/txn_command.go``): compare lines, a blank
line, success requests, a blank line, failure requests.  Compares are
``target("key") op "value"`` with target ``ver|version``, ``c|create``, ``m|mod``,
``val|value`` or ``lease`` (hex id) and op ``= != < >``; keys and values are Go-quoted strings
(``"..."`` with ``\\"``, ``\\n``, ``\\xff``... escapes, or raw ``` `...` ```).  Requests are
``put``/``get``/``del`` lines taking the flags of those commands; their words are split like
etcdctl's ``argify`` (bare words, ``"Go-quoted"`` or ``'literal'``).

Parsing is pure (:func:`parse_txn`, :func:`txn_from_json`) and raises :class:`TxnParseError`
with the line (or JSON path) at fault, so a typo never reaches the cluster.
"""

from __future__ import annotations

import io
import json
import re
import sys
from collections.abc import Callable, Iterable
from typing import Any, TextIO, TypeVar

import click

from raftkv.api import (
    ALL_KEYS,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResponse,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    RequestOp,
    SortOrder,
    TxnRequest,
    TxnResponse,
)
from raftkv.client import key_range
from raftkv.errors import InvalidArgument

from .context import settings
from .kv import _SORT_TARGETS, _kv_lines
from .output import echo_json, to_json_value

T = TypeVar("T")

PROMPTS = (
    "compares:",
    "success requests (get, put, del):",
    "failure requests (get, put, del):",
)
"""What ``--interactive`` prints before each section, as etcdctl does."""


class TxnParseError(InvalidArgument):
    """A transaction that cannot be parsed; ``line`` is 1-based (None for a JSON path)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.line = line


# --- Go-quoted strings and etcdctl's word splitting -----------------------------------------

_QUOTED = r'"(?:[^"\\]|\\.)*"|`[^`]*`'
_ESCAPE = re.compile(
    r"\\(?:x([0-9a-fA-F]{2})|([0-7]{3})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|(.))", re.DOTALL
)
_SIMPLE_ESCAPES = {
    "a": b"\a", "b": b"\b", "f": b"\f", "n": b"\n", "r": b"\r", "t": b"\t", "v": b"\v",
    "\\": b"\\", '"': b'"', "'": b"'",
}  # fmt: skip


def _bytes(s: str) -> bytes:
    """Text read from stdin back to the bytes it was: input that is not UTF-8 comes in as
    surrogate escapes (see :func:`_stdin`)."""
    return s.encode("utf-8", "surrogateescape")


def unquote(token: str) -> bytes:
    """A Go-quoted string (``"..."`` with escapes, or raw ``` `...` ```) as bytes.  ``\\x`` and
    octal escapes are raw bytes, so keys and values need not be UTF-8 (Go's ``strconv.Unquote``)."""
    if len(token) >= 2 and token[0] == token[-1] == "`":
        return _bytes(token[1:-1])
    if len(token) < 2 or token[0] != '"' or token[-1] != '"':
        raise ValueError(f"expected a double-quoted string, got {token}")
    body, out, pos = token[1:-1], bytearray(), 0
    for m in _ESCAPE.finditer(body):
        out += _bytes(body[pos : m.start()])
        hex2, octal, u4, u8, single = m.groups()
        if hex2 is not None:
            out.append(int(hex2, 16))
        elif octal is not None:
            if int(octal, 8) > 0xFF:
                raise ValueError(f"octal escape out of range: \\{octal}")
            out.append(int(octal, 8))
        elif u4 is not None or u8 is not None:
            cp = int(u4 or u8, 16)
            if cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
                raise ValueError(f"invalid unicode escape: {m.group(0)}")
            out += chr(cp).encode()
        elif single in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[single]
        else:
            raise ValueError(f"invalid escape \\{single} in {token}")
        pos = m.end()
    return bytes(out + _bytes(body[pos:]))


_WORD = re.compile(rf"""{_QUOTED}|'[^']*'|[^\s'"`]\S*""")


def argify(line: str) -> list[bytes]:
    """Split a request line into words: bare words, Go-quoted ``"..."`` or ``'literal'``."""
    words: list[bytes] = []
    pos = 0
    while True:
        while pos < len(line) and line[pos].isspace():
            pos += 1
        if pos == len(line):
            return words
        m = _WORD.match(line, pos)
        if m is None:
            raise ValueError(f"unterminated quote at column {pos + 1}")
        word = m.group(0)
        if word[0] == "'":
            words.append(_bytes(word[1:-1]))
        elif word[0] in '"`':
            words.append(unquote(word))
        else:
            words.append(_bytes(word))
        pos = m.end()


# --- compares -------------------------------------------------------------------------------

_COMPARE = re.compile(
    rf"^(?P<target>\w+)\(\s*(?P<key>{_QUOTED})\s*\)\s*(?P<op>[!=<>]+)\s*(?P<value>{_QUOTED})$"
)
_TARGETS = {
    "ver": CompareTarget.VERSION, "version": CompareTarget.VERSION,
    "c": CompareTarget.CREATE, "create": CompareTarget.CREATE,
    "m": CompareTarget.MOD, "mod": CompareTarget.MOD,
    "val": CompareTarget.VALUE, "value": CompareTarget.VALUE,
    "lease": CompareTarget.LEASE,
}  # fmt: skip
_RESULTS = {
    "=": CompareResult.EQUAL,
    "!=": CompareResult.NOT_EQUAL,
    "<": CompareResult.LESS,
    ">": CompareResult.GREATER,
}


def _compare_value(target: CompareTarget, raw: bytes | str | int) -> bytes | int:
    """The operand of a compare: bytes for VALUE, a decimal int for version/create/mod, a hex
    lease id (or an int, from JSON) for LEASE."""
    if target == CompareTarget.VALUE:
        if isinstance(raw, int):
            raise ValueError("a value compare takes a string")
        return raw if isinstance(raw, bytes) else raw.encode()
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, bool):
        raise ValueError(f"expected a number, got {raw}")
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    try:
        return int(text, 16 if target == CompareTarget.LEASE else 10)
    except ValueError:
        kind = "hexadecimal lease id" if target == CompareTarget.LEASE else "decimal integer"
        raise ValueError(f"{text!r} is not a {kind}") from None


def parse_compare(line: str) -> Compare:
    """One etcdctl compare line, e.g. ``mod("key1") > "0"``."""
    m = _COMPARE.match(line.strip())
    if m is None:
        raise ValueError(f'malformed comparison: {line.strip()} (expected: target("key") op "v")')
    target = _TARGETS.get(m["target"])
    if target is None:
        raise ValueError(f"unknown compare target {m['target']!r} (ver, create, mod, val, lease)")
    result = _RESULTS.get(m["op"])
    if result is None:
        raise ValueError(f"unknown compare operator {m['op']!r} (=, !=, <, >)")
    return Compare(unquote(m["key"]), target, result, _compare_value(target, unquote(m["value"])))


# --- requests (the flags of put / get / del) ------------------------------------------------


def _b(word: str) -> bytes:
    """Words reach click as str; non-UTF-8 bytes travel as surrogate escapes."""
    return word.encode("utf-8", "surrogateescape")


def _range(
    key: bytes, range_end: bytes | None, prefix: bool, from_key: bool
) -> tuple[bytes, bytes]:
    if sum([prefix, from_key, range_end is not None]) > 1:
        raise ValueError("use only one of RANGE_END, --prefix, --from-key")
    if from_key:
        return key_range(key or b"\0", range_end=ALL_KEYS)
    return key_range(key, prefix=prefix, range_end=range_end)


def _lease_id(value: str | int) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(str(value), 16)
    except ValueError:
        raise ValueError(f"{value!r} is not a hexadecimal lease id") from None


def put_request(
    key: bytes,
    value: bytes | None = None,
    lease: str | int = 0,
    prev_kv: bool = False,
    ignore_value: bool = False,
    ignore_lease: bool = False,
) -> PutRequest:
    if value is None and not ignore_value:
        raise ValueError("put needs a KEY and a VALUE")
    return PutRequest(
        key,
        value or b"",
        lease=_lease_id(lease),
        prev_kv=prev_kv,
        ignore_value=ignore_value,
        ignore_lease=ignore_lease,
    )


def get_request(
    key: bytes,
    range_end: bytes | None = None,
    prefix: bool = False,
    from_key: bool = False,
    rev: int = 0,
    limit: int = 0,
    keys_only: bool = False,
    count_only: bool = False,
    order: str | None = None,
    sort_by: str | None = None,
) -> RangeRequest:
    k, end = _range(key, range_end, prefix, from_key)
    sort_order = SortOrder.NONE
    if order is not None:
        if order.upper() not in ("ASCEND", "DESCEND"):
            raise ValueError(f"bad order {order!r} (ASCEND, DESCEND)")
        sort_order = SortOrder.ASCEND if order.upper() == "ASCEND" else SortOrder.DESCEND
    elif sort_by is not None:
        sort_order = SortOrder.ASCEND
    target = (sort_by or "KEY").upper()
    if target not in _SORT_TARGETS:
        raise ValueError(f"bad sort target {sort_by!r} ({', '.join(_SORT_TARGETS)})")
    return RangeRequest(
        k,
        end,
        limit=limit,
        revision=rev,
        sort_order=sort_order,
        sort_target=_SORT_TARGETS[target],
        keys_only=keys_only,
        count_only=count_only,
    )


def delete_request(
    key: bytes,
    range_end: bytes | None = None,
    prefix: bool = False,
    from_key: bool = False,
    prev_kv: bool = False,
) -> DeleteRangeRequest:
    k, end = _range(key, range_end, prefix, from_key)
    return DeleteRangeRequest(k, end, prev_kv=prev_kv)


def _checked(build: Callable[..., RequestOp], **kwargs: Any) -> RequestOp:
    try:
        return build(**kwargs)
    except ValueError as e:
        raise click.UsageError(str(e)) from None


@click.command("put", add_help_option=False)
@click.argument("key")
@click.argument("value", required=False)
@click.option("--lease", default="0")
@click.option("--prev-kv", is_flag=True)
@click.option("--ignore-value", is_flag=True)
@click.option("--ignore-lease", is_flag=True)
def _put_line(key: str, value: str | None, **flags: Any) -> RequestOp:
    return _checked(put_request, key=_b(key), value=None if value is None else _b(value), **flags)


@click.command("get", add_help_option=False)
@click.argument("key")
@click.argument("range_end", required=False)
@click.option("--prefix", is_flag=True)
@click.option("--from-key", is_flag=True)
@click.option("--rev", type=int, default=0)
@click.option("--limit", type=int, default=0)
@click.option("--keys-only", is_flag=True)
@click.option("--count-only", is_flag=True)
@click.option("--order", default=None)
@click.option("--sort-by", default=None)
def _get_line(key: str, range_end: str | None, **flags: Any) -> RequestOp:
    end = None if range_end is None else _b(range_end)
    return _checked(get_request, key=_b(key), range_end=end, **flags)


@click.command("del", add_help_option=False)
@click.argument("key")
@click.argument("range_end", required=False)
@click.option("--prefix", is_flag=True)
@click.option("--from-key", is_flag=True)
@click.option("--prev-kv", is_flag=True)
def _del_line(key: str, range_end: str | None, **flags: Any) -> RequestOp:
    end = None if range_end is None else _b(range_end)
    return _checked(delete_request, key=_b(key), range_end=end, **flags)


_LINE_COMMANDS: dict[str, click.Command] = {"put": _put_line, "get": _get_line, "del": _del_line}


def parse_request(line: str) -> RequestOp:
    """One request line, e.g. ``put key1 "a value" --lease=694d71ddacfda227``."""
    words = [w.decode("utf-8", "surrogateescape") for w in argify(line)]
    if not words or words[0] not in _LINE_COMMANDS:
        verb = words[0] if words else ""
        raise ValueError(f"unknown request {verb!r} (put, get, del)")
    cmd = _LINE_COMMANDS[words[0]]
    try:
        with cmd.make_context(words[0], words[1:]) as ctx:
            op: RequestOp = cmd.invoke(ctx)
    except click.ClickException as e:
        raise ValueError(f"invalid request {line.strip()!r}: {e.format_message()}") from None
    return op


# --- the text form --------------------------------------------------------------------------


def read_txn(
    readline: Callable[[], str],
    prompt: Callable[[str], None] | None = None,
    strict_end: bool = True,
) -> TxnRequest:
    """Read the three sections of etcdctl's txn syntax, line by line.

    ``prompt`` is called with each section's prompt before it is read (``--interactive``).
    End of input ends the current section (etcdctl insists on the trailing blank lines; we do
    not).  With ``strict_end``, non-blank lines after the failure section are an error instead
    of being silently ignored as etcdctl does.
    """
    lineno = 0
    eof = False

    def section(text: str, parse: Callable[[str], T]) -> tuple[T, ...]:
        """One section: its lines until a blank line or the end of input."""
        nonlocal lineno, eof
        if prompt is not None:
            prompt(text)
        items: list[T] = []
        while not eof:
            raw = readline()
            if raw == "":
                eof = True
                break
            lineno += 1
            line = raw.strip()
            if not line:
                break
            try:
                items.append(parse(line))
            except ValueError as e:
                raise TxnParseError(str(e), lineno) from None
        return tuple(items)

    compares = section(PROMPTS[0], parse_compare)
    success = section(PROMPTS[1], parse_request)
    failure = section(PROMPTS[2], parse_request)
    while strict_end and not eof:
        raw = readline()
        if raw == "":
            break
        lineno += 1
        if raw.strip():
            raise TxnParseError(
                "unexpected line after the failure requests (compares, blank line, success "
                "requests, blank line, failure requests)",
                lineno,
            )
    return TxnRequest(compares, success, failure)


def parse_txn(text: str) -> TxnRequest:
    """The whole text form at once."""
    return read_txn(io.StringIO(text).readline)


# --- the JSON form --------------------------------------------------------------------------

_JSON_TARGETS = {
    "value": CompareTarget.VALUE,
    "version": CompareTarget.VERSION,
    "create": CompareTarget.CREATE,
    "mod": CompareTarget.MOD,
    "lease": CompareTarget.LEASE,
}
_JSON_OPS: dict[str, tuple[Callable[..., RequestOp], dict[str, tuple[type, ...]]]] = {
    "put": (
        put_request,
        {"key": (str,), "value": (str,), "lease": (str, int), "prev_kv": (bool,),
         "ignore_value": (bool,), "ignore_lease": (bool,)},
    ),
    "get": (
        get_request,
        {"key": (str,), "range_end": (str,), "prefix": (bool,), "from_key": (bool,),
         "rev": (int,), "limit": (int,), "keys_only": (bool,), "count_only": (bool,),
         "order": (str,), "sort_by": (str,)},
    ),
    "delete": (
        delete_request,
        {"key": (str,), "range_end": (str,), "prefix": (bool,), "from_key": (bool,),
         "prev_kv": (bool,)},
    ),
}  # fmt: skip
_BYTES_FIELDS = ("key", "value", "range_end")


def _fields(obj: Any, where: str, spec: dict[str, tuple[type, ...]]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise TxnParseError(f"{where}: expected an object")
    out: dict[str, Any] = {}
    for name, value in obj.items():
        types = spec.get(name)
        if types is None:
            raise TxnParseError(f"{where}: unknown field {name!r} (known: {', '.join(spec)})")
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = " or ".join(t.__name__ for t in types)
            raise TxnParseError(f"{where}.{name}: expected {names}, got {json.dumps(value)}")
        out[name] = value.encode() if name in _BYTES_FIELDS and isinstance(value, str) else value
    if "key" in spec and "key" not in out:
        raise TxnParseError(f"{where}: missing field 'key'")
    return out


def _json_compare(obj: Any, where: str) -> Compare:
    spec: dict[str, tuple[type, ...]] = {
        "key": (str,), "target": (str,), "result": (str,), "value": (str, int), "range_end": (str,)
    }  # fmt: skip
    f = _fields(obj, where, spec)
    for name in ("target", "result", "value"):
        if name not in f:
            raise TxnParseError(f"{where}: missing field {name!r}")
    target = _JSON_TARGETS.get(f["target"])
    if target is None:
        raise TxnParseError(
            f"{where}.target: {f['target']!r} is not one of {', '.join(_JSON_TARGETS)}"
        )
    result = _RESULTS.get(f["result"])
    if result is None:
        raise TxnParseError(f"{where}.result: {f['result']!r} is not one of =, !=, <, >")
    try:
        value = _compare_value(target, f["value"])
    except ValueError as e:
        raise TxnParseError(f"{where}.value: {e}") from None
    return Compare(f["key"], target, result, value, f.get("range_end", b""))


def _json_op(obj: Any, where: str) -> RequestOp:
    if not isinstance(obj, dict) or len(obj) != 1 or next(iter(obj)) not in _JSON_OPS:
        raise TxnParseError(
            f'{where}: expected {{"put": {{...}}}}, {{"get": ...}} or {{"delete": ...}}'
        )
    kind, body = next(iter(obj.items()))
    build, spec = _JSON_OPS[kind]
    try:
        return build(**_fields(body, f"{where}.{kind}", spec))
    except ValueError as e:
        raise TxnParseError(f"{where}.{kind}: {e}") from None


def txn_from_json(text: str) -> TxnRequest:
    """The JSON form: ``{"compare": [...], "success": [...], "failure": [...]}``."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise TxnParseError(f"invalid JSON: {e.msg} (column {e.colno})", e.lineno) from None
    if not isinstance(doc, dict):
        raise TxnParseError("expected a JSON object with compare, success and failure")
    unknown = set(doc) - {"compare", "success", "failure"}
    if unknown:
        raise TxnParseError(f"unknown field(s) {', '.join(sorted(unknown))}")
    for name in ("compare", "success", "failure"):
        if not isinstance(doc.get(name, []), list):
            raise TxnParseError(f"{name}: expected a list")
    return TxnRequest(
        tuple(_json_compare(c, f"compare[{i}]") for i, c in enumerate(doc.get("compare", []))),
        tuple(_json_op(o, f"success[{i}]") for i, o in enumerate(doc.get("success", []))),
        tuple(_json_op(o, f"failure[{i}]") for i, o in enumerate(doc.get("failure", []))),
    )


# --- output ---------------------------------------------------------------------------------

_RESPONSE_NAMES = {
    RangeResponse: "response_range",
    PutResponse: "response_put",
    DeleteRangeResponse: "response_delete_range",
    TxnResponse: "response_txn",
}


def txn_json(resp: TxnResponse) -> dict[str, Any]:
    """``-w json``: etcd's shape, each response tagged with its kind (``response_put``...)."""
    return {
        "header": to_json_value(resp.header),
        "succeeded": resp.succeeded,
        "responses": [{_RESPONSE_NAMES[type(r)]: to_json_value(r)} for r in resp.responses],
    }


def echo_txn_simple(resp: TxnResponse, ops: Iterable[RequestOp]) -> None:
    """etcdctl's simple printer: SUCCESS/FAILURE, then a blank line before each response."""
    click.echo("SUCCESS" if resp.succeeded else "FAILURE")
    for op, r in zip(ops, resp.responses, strict=False):
        click.echo("")
        if isinstance(r, PutResponse):
            click.echo("OK")
            if r.prev_kv is not None:
                _kv_lines((r.prev_kv,))
        elif isinstance(r, RangeResponse):
            keys_only = isinstance(op, RangeRequest) and op.keys_only
            _kv_lines(r.kvs, keys_only=keys_only)
        elif isinstance(r, DeleteRangeResponse):
            click.echo(str(r.deleted))
            _kv_lines(r.prev_kvs)
        else:
            echo_txn_simple(r, _branch(op, r))


def _branch(op: RequestOp | TxnRequest, resp: TxnResponse) -> tuple[RequestOp, ...]:
    if not isinstance(op, TxnRequest):
        return ()
    return op.success if resp.succeeded else op.failure


# --- the command ----------------------------------------------------------------------------


def _echo_prompt(text: str) -> None:
    click.echo(text)


def _stdin_readline() -> Callable[[], str]:
    """Lines of stdin as UTF-8 text whose invalid bytes survive as surrogate escapes, so a
    bare ``put k\xff v`` line writes the byte ``\xff`` whatever the locale."""
    buf = getattr(sys.stdin, "buffer", None)
    if buf is None:
        return sys.stdin.readline

    def readline() -> str:
        line: bytes = buf.readline()
        return line.decode("utf-8", "surrogateescape")

    return readline


@click.command("txn")
@click.option("-i", "--interactive", is_flag=True, help="Prompt for each section (as etcdctl).")
@click.option(
    "--json",
    "json_file",
    type=click.File("r"),
    default=None,
    metavar="FILE|-",
    help="Read the transaction as JSON from FILE ('-' = stdin) instead of etcdctl syntax.",
)
@click.pass_context
def txn(ctx: click.Context, interactive: bool, json_file: TextIO | None) -> None:
    """Run compares, then the success or the failure requests, as one atomic transaction.

    \b
    Input (stdin), as etcdctl txn:
      compare lines      mod("key1") > "0"      (ver, create, mod, val, lease; = != < >)
      <blank line>
      success requests   put key1 "overwrote-key1"
      <blank line>
      failure requests   put key1 "created-key1"
    """
    s = settings(ctx)
    if json_file is not None and interactive:
        raise click.UsageError("use either --interactive or --json, not both")
    if json_file is not None:
        req = txn_from_json(json_file.read())
    else:
        prompt = _echo_prompt if interactive else None
        req = read_txn(_stdin_readline(), prompt, strict_end=not interactive)
    with s.client() as c:
        resp = c.txn(req.compare, req.success, req.failure)
    if s.write_out == "json":
        echo_json(txn_json(resp))
    else:
        echo_txn_simple(resp, req.success if resp.succeeded else req.failure)


__all__ = [
    "PROMPTS",
    "TxnParseError",
    "argify",
    "parse_compare",
    "parse_request",
    "parse_txn",
    "read_txn",
    "txn",
    "txn_from_json",
    "txn_json",
    "unquote",
]
