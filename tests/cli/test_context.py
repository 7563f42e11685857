"""Endpoint resolution shared by every command (raftkv_cli.context): a command's own
``--endpoints``, else the global option, ``$RAFTKV_ENDPOINTS`` or the default."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from raftkv_cli.context import (
    DEFAULT_ENDPOINTS,
    Settings,
    command_endpoints,
    endpoints_given,
    split_endpoints,
)


@click.group()
@click.option("--endpoints", envvar="RAFTKV_ENDPOINTS", default=DEFAULT_ENDPOINTS)
@click.pass_context
def root(ctx: click.Context, endpoints: str) -> None:
    ctx.obj = Settings(split_endpoints(endpoints), "simple", 1.0, 1.0)


@root.command("show")
@click.option("--endpoints", "own", default=None)
@click.pass_context
def show(ctx: click.Context, own: str | None) -> None:
    click.echo(json.dumps([command_endpoints(ctx, own), endpoints_given(ctx)]))


def run(args: list[str], env: dict[str, str | None]) -> list[object]:
    res = CliRunner().invoke(root, args, env=env)
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    assert isinstance(got, list)
    return got


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["show"], {"RAFTKV_ENDPOINTS": None}, [[DEFAULT_ENDPOINTS], False]),
        (["show"], {"RAFTKV_ENDPOINTS": "h:1, h:2"}, [["h:1", "h:2"], True]),
        (["--endpoints", "g:1", "show"], {"RAFTKV_ENDPOINTS": "h:1"}, [["g:1"], True]),
        (["show", "--endpoints", "c:1,c:2"], {"RAFTKV_ENDPOINTS": "h:1"}, [["c:1", "c:2"], True]),
        (["show", "--endpoints", "c:1"], {"RAFTKV_ENDPOINTS": None}, [["c:1"], False]),
    ],
)
def test_own_then_global_then_environment_then_default(
    args: list[str], env: dict[str, str | None], expected: list[object]
) -> None:
    assert run(args, env) == expected


def test_empty_command_endpoints_fall_back_and_blank_global_ones_are_refused() -> None:
    assert run(["show", "--endpoints", ""], {"RAFTKV_ENDPOINTS": None}) == [
        [DEFAULT_ENDPOINTS],
        False,
    ]
    res = CliRunner().invoke(root, ["--endpoints", " , ", "show"])
    assert res.exit_code == 2
    assert "no endpoints given" in res.output


def test_global_options_after_the_command_are_moved_in_front() -> None:
    from raftkv_cli.argv import hoist_global_options
    from raftkv_cli.main import cli

    def h(*args: str) -> list[str]:
        return hoist_global_options(cli, list(args))

    assert h("member", "list", "-w", "table") == ["-w", "table", "member", "list"]
    assert h("get", "k", "--endpoints=a:1", "--prefix") == [
        "--endpoints=a:1",
        "get",
        "k",
        "--prefix",
    ]
    assert h("get", "k", "-wjson", "--hex") == ["-wjson", "--hex", "get", "k"]
    assert h("-w", "json", "get", "k") == ["-w", "json", "get", "k"]
    assert h("put", "k", "--", "-w") == ["put", "k", "--", "-w"]
    assert h("put", "--lease", "-w", "k", "v") == ["put", "--lease", "-w", "k", "v"]
    # a command's own option of the same name stays with it
    assert h("benchmark", "put", "--endpoints", "x:1") == ["benchmark", "put", "--endpoints", "x:1"]
    # the command lock runs keeps its own flags
    assert h("lock", "L", "-w", "json", "grep", "-w", "x") == [
        "-w", "json", "lock", "L", "grep", "-w", "x"
    ]  # fmt: skip


def test_http_endpoints_are_taken_and_https_is_refused_clearly() -> None:
    assert split_endpoints("http://127.0.0.1:2379, HTTP://h:1/") == ("127.0.0.1:2379", "h:1")
    with pytest.raises(click.BadParameter, match="TLS is not supported yet"):
        split_endpoints("127.0.0.1:1,https://127.0.0.1:2379")
    with pytest.raises(click.BadParameter, match="unknown scheme"):
        split_endpoints("unix://sock")
