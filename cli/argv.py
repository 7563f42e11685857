"""Global options anywhere on the command line, as etcdctl takes them.

etcdctl's global flags (``-w``, ``--endpoints``, timeouts, ``--hex``) may come before or after
the command (``etcdctl member list -w table``); click only takes a group's options before the
subcommand.  :func:`hoist_global_options` moves the global options found after the command to
the front, unless the command defines an option of the same name itself (``benchmark
--endpoints``).  It stops at ``--`` and where a command's pass-through arguments begin
(``raftkv lock NAME COMMAND...``), so a child command's own ``-w`` is left alone.
"""

from __future__ import annotations

import click

GLOBAL_VALUE_OPTIONS = frozenset({"--endpoints", "-w", "--write-out", "--dial-timeout",
                                  "--command-timeout"})  # fmt: skip
GLOBAL_FLAGS = frozenset({"--hex"})


def _option_names(cmd: click.Command) -> tuple[set[str], set[str]]:
    """(every option name, the names that take a value) of ``cmd``."""
    names: set[str] = set()
    valued: set[str] = set()
    for p in cmd.params:
        if isinstance(p, click.Option):
            opts = set(p.opts) | set(p.secondary_opts)
            names |= opts
            if not p.is_flag and not p.count:
                valued |= opts
    return names, valued


def _pass_through_index(cmd: click.Command) -> int | None:
    """How many positionals come before ``cmd``'s unprocessed ``nargs=-1`` argument, if any."""
    args = [p for p in cmd.params if isinstance(p, click.Argument)]
    for i, a in enumerate(args):
        if a.nargs == -1 and a.type is click.UNPROCESSED:
            return i
    return None


def _global_name(token: str) -> str | None:
    """The global option ``token`` names (``--endpoints=x`` and ``-wjson`` included)."""
    name = token.split("=", 1)[0] if token.startswith("--") else token[:2]
    if name in GLOBAL_VALUE_OPTIONS or name in GLOBAL_FLAGS:
        return name
    return None


def hoist_global_options(root: click.Group, args: list[str]) -> list[str]:
    """``args`` with the global options that follow the command moved in front of it."""
    hoisted: list[str] = []
    rest: list[str] = []
    cmd: click.Command = root
    local: set[str] = set()
    valued: set[str] = set(GLOBAL_VALUE_OPTIONS)
    positionals = 0
    i = 0
    while i < len(args):
        tok = args[i]
        if tok == "--":
            break
        if tok.startswith("-") and len(tok) > 1:
            name = _global_name(tok)
            is_global = name is not None and name not in local
            attached = "=" in tok or (name == "-w" and len(tok) > 2)
            takes_next = not attached and (
                name in GLOBAL_VALUE_OPTIONS if is_global else tok in valued
            )
            words = args[i : i + 2] if takes_next else args[i : i + 1]
            if is_global and cmd is not root:
                hoisted += words
            else:
                rest += words
            i += len(words)
            continue
        sub = cmd.commands.get(tok) if isinstance(cmd, click.Group) and not positionals else None
        if sub is not None:
            cmd = sub
            names, vals = _option_names(sub)
            local |= names
            valued |= vals
        else:
            stop = _pass_through_index(cmd)
            if stop is not None and positionals >= stop:
                break
            positionals += 1
        rest.append(tok)
        i += 1
    return hoisted + rest + args[i:]
