"""Global CLI settings (``--endpoints``, ``-w``, timeouts) and the client they make."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

from raftkv.client.sync import SyncClient

DEFAULT_ENDPOINTS = "127.0.0.1:2379"


@dataclass(frozen=True, slots=True)
class Settings:
    endpoints: tuple[str, ...]
    write_out: str
    dial_timeout: float
    command_timeout: float
    hex: bool = False
    """``--hex``: print keys and values as ``\\x..`` escapes (etcdctl's ``--hex``)."""

    def client(self) -> SyncClient:
        return SyncClient(
            list(self.endpoints),
            dial_timeout=self.dial_timeout,
            command_timeout=self.command_timeout,
        )


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m)?\s*$")


def parse_duration(value: str) -> float:
    """``"5"``, ``"5s"``, ``"500ms"``, ``"1m"`` -> seconds (as etcdctl's ``--dial-timeout=2s``)."""
    m = _DURATION.match(value)
    if m is None:
        raise ValueError(f"bad duration {value!r} (examples: 2s, 500ms, 1.5)")
    n = float(m.group(1))
    unit = m.group(2) or "s"
    return n / 1000 if unit == "ms" else n * 60 if unit == "m" else n


if TYPE_CHECKING:  # click's ParamType is generic in its stubs, a plain class at run time
    _FloatParamType = click.ParamType[float, object]
else:
    _FloatParamType = click.ParamType


class Duration(_FloatParamType):
    name = "duration"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


def split_endpoints(value: str) -> tuple[str, ...]:
    """``HOST:PORT,...``; an ``http://`` prefix (as etcd users write endpoints) is dropped,
    ``https://`` is refused since the client speaks no TLS yet."""
    eps = tuple(_endpoint(e.strip()) for e in value.split(",") if e.strip())
    if not eps:
        raise click.BadParameter("no endpoints given")
    return eps


def _endpoint(e: str) -> str:
    scheme, sep, rest = e.partition("://")
    if not sep:
        return e
    if scheme.lower() == "http":
        return rest.rstrip("/")
    if scheme.lower() == "https":
        raise click.BadParameter(f"{e}: TLS is not supported yet; use HOST:PORT or http://")
    raise click.BadParameter(f"{e}: unknown scheme {scheme!r}; use HOST:PORT or http://")


def command_endpoints(ctx: click.Context, value: str | None) -> list[str]:
    """A command's own ``--endpoints`` if given, else the global ones (``--endpoints``,
    ``$RAFTKV_ENDPOINTS``, :data:`DEFAULT_ENDPOINTS`)."""
    if value:
        return list(split_endpoints(value))
    return list(settings(ctx).endpoints)


def endpoints_given(ctx: click.Context) -> bool:
    """Whether the global endpoints were named (the option or ``$RAFTKV_ENDPOINTS``) rather
    than defaulted."""
    source = ctx.find_root().get_parameter_source("endpoints")
    return source is not None and source is not click.core.ParameterSource.DEFAULT


def settings(ctx: click.Context) -> Settings:
    obj = ctx.find_root().obj
    if not isinstance(obj, Settings):
        raise click.UsageError("internal: CLI settings missing")
    return obj


def parse_id(value: str) -> int:
    """A member or lease id as etcdctl prints it (hex); ``0x`` prefix optional."""
    try:
        return int(value, 16)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a hexadecimal id") from None
