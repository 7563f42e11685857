"""The ``raftkv`` command line."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="raftkv")
def cli() -> None:
    """raftkv: an etcd-like, Raft-replicated key-value store."""


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
