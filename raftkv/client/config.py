"""The client's knobs, grouped: ``Client(endpoints, config=ClientConfig(...))``.

Every group is a frozen dataclass with the defaults the client has always had, so a config
says only what it changes::

    ClientConfig(timeouts=Timeouts(command=10.0), retries=Retries(max_redirects=3))

``Client(...)`` still accepts the single keyword arguments (``dial_timeout=`` and the rest)
and maps them onto a config with :func:`config_from_kwargs`; a keyword argument overrides
the same knob of ``config=``.  Every value is checked when the config is made, so a bad knob
fails at construction with :class:`~raftkv.errors.InvalidArgument`, not at the first call.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final

from raftkv.errors import InvalidArgument
from raftkv.protocol.methods import MAX_REPLY_BYTES

__all__ = [
    "KWARG_FIELDS",
    "UNSET",
    "ClientConfig",
    "ConfigKnobs",
    "Limits",
    "Retries",
    "Timeouts",
    "Unset",
    "config_from_kwargs",
]


class Unset(Enum):
    """The default of ``Client``'s single keyword arguments: "take it from the config"."""

    UNSET = "unset"


UNSET: Final = Unset.UNSET


def _positive(name: str, v: float | None, *, optional: bool = False) -> None:
    if v is None and optional:
        return
    if not isinstance(v, int | float) or isinstance(v, bool) or not v > 0:
        raise InvalidArgument(f"{name} must be a positive number of seconds, not {v!r}")


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds.  ``command`` bounds one call with all its retries (override per call with
    ``timeout=``); ``attempt`` one attempt at one endpoint before failing over (None: half
    the call's budget); ``dial`` one connection attempt.  A connection quiet for
    ``keepalive_interval`` is probed and closed if the probe gets no answer within
    ``keepalive_timeout`` (``keepalive_interval=None`` turns probing off)."""

    dial: float = 2.0
    command: float = 5.0
    attempt: float | None = None
    keepalive_interval: float | None = 10.0
    keepalive_timeout: float = 3.0

    def __post_init__(self) -> None:
        if self.keepalive_interval is not None and (
            self.keepalive_interval <= 0 or self.keepalive_timeout <= 0
        ):
            raise InvalidArgument("keepalive_interval and keepalive_timeout must be positive")
        _positive("dial timeout", self.dial)
        _positive("command timeout", self.command)
        _positive("attempt timeout", self.attempt, optional=True)


@dataclass(frozen=True, slots=True)
class Retries:
    """At most ``max_redirects`` ``NotLeader`` redirects per call; exponential backoff with
    full jitter from ``backoff_base`` up to ``backoff_cap`` seconds between retries;
    ``breaker_threshold`` consecutive failures open an endpoint's circuit breaker for
    ``breaker_cooldown`` seconds."""

    max_redirects: int = 5
    backoff_base: float = 0.025
    backoff_cap: float = 1.0
    breaker_threshold: int = 3
    breaker_cooldown: float = 5.0

    def __post_init__(self) -> None:
        if self.breaker_threshold < 1 or self.breaker_cooldown < 0:
            raise InvalidArgument("breaker threshold must be >= 1 and cooldown >= 0")
        if self.max_redirects < 0:
            raise InvalidArgument("max_redirects must be >= 0")
        if self.backoff_base < 0 or self.backoff_cap < 0:
            raise InvalidArgument("backoff_base and backoff_cap must be >= 0")


@dataclass(frozen=True, slots=True)
class Limits:
    """``write_window``: how far a new write's seq may run ahead of the oldest write still in
    flight (the server's dedup table keeps 64 results per client); ``max_frame``: the largest
    reply frame accepted."""

    write_window: int = 64
    max_frame: int = MAX_REPLY_BYTES

    def __post_init__(self) -> None:
        if self.write_window < 1:
            raise InvalidArgument("write_window must be at least 1")
        if self.max_frame < 1:
            raise InvalidArgument("max_frame must be at least 1")


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Everything a :class:`~raftkv.client.Client` can be told, besides its endpoints.
    ``cluster_id`` (0: any) is checked in the handshake; ``auto_sync_interval`` seconds
    between background endpoint syncs (None: off); ``leader_affinity``: send writes, lease
    calls and membership changes to the leader once it is known (one hop fewer; False: to
    the endpoints given, whose members forward them to the leader)."""

    timeouts: Timeouts = field(default_factory=Timeouts)
    retries: Retries = field(default_factory=Retries)
    limits: Limits = field(default_factory=Limits)
    cluster_id: int = 0
    auto_sync_interval: float | None = None
    leader_affinity: bool = True

    def __post_init__(self) -> None:
        if self.auto_sync_interval is not None and self.auto_sync_interval <= 0:
            raise InvalidArgument("auto_sync_interval must be positive")
        if not 0 <= self.cluster_id < 1 << 64:
            raise InvalidArgument("cluster_id must be an unsigned 64-bit integer")


KWARG_FIELDS: Final[dict[str, tuple[str, str]]] = {
    "dial_timeout": ("timeouts", "dial"),
    "command_timeout": ("timeouts", "command"),
    "attempt_timeout": ("timeouts", "attempt"),
    "keepalive_interval": ("timeouts", "keepalive_interval"),
    "keepalive_timeout": ("timeouts", "keepalive_timeout"),
    "max_redirects": ("retries", "max_redirects"),
    "backoff_base": ("retries", "backoff_base"),
    "backoff_cap": ("retries", "backoff_cap"),
    "breaker_threshold": ("retries", "breaker_threshold"),
    "breaker_cooldown": ("retries", "breaker_cooldown"),
    "write_window": ("limits", "write_window"),
    "max_frame": ("limits", "max_frame"),
    "cluster_id": ("", "cluster_id"),
    "auto_sync_interval": ("", "auto_sync_interval"),
}
"""The single keyword arguments ``Client`` accepts, and where each lands in the config."""


def config_from_kwargs(base: ClientConfig | None, kwargs: dict[str, Any]) -> ClientConfig:
    """``base`` (default: the defaults) with the single keyword arguments applied; those
    given as :data:`UNSET` are left out."""
    cfg = base if base is not None else ClientConfig()
    kwargs = {k: v for k, v in kwargs.items() if v is not UNSET}
    unknown = set(kwargs) - set(KWARG_FIELDS)
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    groups: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for name, value in kwargs.items():
        group, attr = KWARG_FIELDS[name]
        if group:
            groups.setdefault(group, {})[attr] = value
        else:
            top[attr] = value
    for group, changes in groups.items():
        top[group] = dataclasses.replace(getattr(cfg, group), **changes)
    return dataclasses.replace(cfg, **top) if top else cfg


class ConfigKnobs:
    """The knobs of ``config`` under their single keyword names (``client.command_timeout``
    and the rest), read-only, for code written before the config objects."""

    config: ClientConfig

    @property
    def dial_timeout(self) -> float:
        """``config.timeouts.dial``."""
        return self.config.timeouts.dial

    @property
    def command_timeout(self) -> float:
        """``config.timeouts.command``."""
        return self.config.timeouts.command

    @property
    def attempt_timeout(self) -> float | None:
        """``config.timeouts.attempt``."""
        return self.config.timeouts.attempt

    @property
    def keepalive_interval(self) -> float | None:
        """``config.timeouts.keepalive_interval``."""
        return self.config.timeouts.keepalive_interval

    @property
    def keepalive_timeout(self) -> float:
        """``config.timeouts.keepalive_timeout``."""
        return self.config.timeouts.keepalive_timeout

    @property
    def max_redirects(self) -> int:
        """``config.retries.max_redirects``."""
        return self.config.retries.max_redirects

    @property
    def backoff_base(self) -> float:
        """``config.retries.backoff_base``."""
        return self.config.retries.backoff_base

    @property
    def backoff_cap(self) -> float:
        """``config.retries.backoff_cap``."""
        return self.config.retries.backoff_cap

    @property
    def breaker_threshold(self) -> int:
        """``config.retries.breaker_threshold``."""
        return self.config.retries.breaker_threshold

    @property
    def breaker_cooldown(self) -> float:
        """``config.retries.breaker_cooldown``."""
        return self.config.retries.breaker_cooldown

    @property
    def write_window(self) -> int:
        """``config.limits.write_window``."""
        return self.config.limits.write_window

    @property
    def max_frame(self) -> int:
        """``config.limits.max_frame``."""
        return self.config.limits.max_frame

    @property
    def cluster_id(self) -> int:
        """``config.cluster_id``."""
        return self.config.cluster_id

    @property
    def auto_sync_interval(self) -> float | None:
        """``config.auto_sync_interval``."""
        return self.config.auto_sync_interval
