"""The one retry loop (raftkv.client.router): whether an error is retried is the error class's
own attributes and nothing else; retries stay inside the call's budget; a watcher's
(re)connection goes through the same loop."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

import raftkv.errors as errors
from raftkv.client import Client
from raftkv.client.router import ADMIN, READ, SERIAL, WRITE, Policy, Router, should_retry
from raftkv.errors import (
    ConnectionLost,
    KeyNotFound,
    NoLeader,
    NotLeader,
    RaftKVError,
    Timeout,
    TooManyRequests,
)
from raftkv.protocol.methods import Method
from tests.client.fakes import FakeCluster


def _error_tree() -> list[type[RaftKVError]]:
    out: list[type[RaftKVError]] = []
    todo: list[type[RaftKVError]] = [RaftKVError]
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo.extend(cls.__subclasses__())
    return sorted(set(out), key=lambda c: c.__name__)


# Only the classes of raftkv.errors: tests elsewhere may define subclasses of their own.
ERRORS = [c for c in _error_tree() if c.__module__ == errors.__name__]
ATTRS = ("retryable", "retry_unapplied", "retry_elsewhere", "member_unhealthy")


def test_the_walk_finds_the_whole_tree() -> None:
    names = {c.__name__ for c in ERRORS}
    assert {"RaftKVError", "NotLeader", "Timeout", "WatchCancelled", "CorruptionError"} <= names
    assert names == {n for n in errors.__all__ if isinstance(getattr(errors, n), type)}
    assert len({c.code for c in ERRORS}) == len(ERRORS), "every class has its own wire code"


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_every_error_class_states_its_retry_attributes(cls: type[RaftKVError]) -> None:
    for attr in ATTRS:
        assert isinstance(getattr(cls, attr), bool), (cls, attr)
    # only retryable errors carry retry modifiers
    if not cls.retryable:
        assert not (cls.retry_unapplied or cls.retry_elsewhere), cls


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_the_routers_decision_is_the_error_classs_attribute(cls: type[RaftKVError]) -> None:
    err = cls()
    for policy in (READ, SERIAL, WRITE):  # idempotent: resent freely
        assert should_retry(err, policy, sent=True, pinned=False) is cls.retryable
        assert should_retry(err, policy, sent=False, pinned=False) is cls.retryable
    # not idempotent: once sent, only if the error proves nothing was applied
    assert should_retry(err, ADMIN, sent=True, pinned=False) is (
        cls.retryable and cls.retry_unapplied
    )
    assert should_retry(err, ADMIN, sent=False, pinned=False) is cls.retryable
    # pinned to one endpoint: not when the retry must go elsewhere
    assert should_retry(err, READ, sent=True, pinned=True) is (
        cls.retryable and not cls.retry_elsewhere
    )


def test_the_attributes_of_the_errors_that_matter_most() -> None:
    assert NotLeader.retryable and NotLeader.retry_unapplied and NotLeader.retry_elsewhere
    assert NoLeader.retryable and NoLeader.retry_unapplied and NoLeader.member_unhealthy
    assert TooManyRequests.retryable and TooManyRequests.retry_unapplied
    assert ConnectionLost.retryable and ConnectionLost.retry_elsewhere
    assert not ConnectionLost.retry_unapplied  # a lost answer may hide an applied write
    assert Timeout.retryable and Timeout.member_unhealthy and not Timeout.retry_unapplied
    assert not KeyNotFound.retryable and not errors.WatchCancelled.retryable
    assert not errors.HandshakeRefused.retryable and not errors.Compacted.retryable


def _fast_client(fc: FakeCluster, **kw: Any) -> Client:
    kw.setdefault("command_timeout", 3.0)
    return Client(
        [fc.members[0].addr], backoff_base=0.001, backoff_cap=0.005, rng=random.Random(1), **kw
    )


def _expected_attempts(cls: type[RaftKVError], policy: Policy) -> int:
    retried = should_retry(cls(), policy, sent=True, pinned=False)
    return 2 if retried else 1


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
async def test_a_read_is_retried_exactly_when_its_error_is_retryable(
    cls: type[RaftKVError],
) -> None:
    async with FakeCluster(1) as fc, _fast_client(fc) as c:
        fc.members[0].fail_with[Method.RANGE] = [cls()]
        if cls.retryable:
            assert (await c.get("k")).kvs == ()
        else:
            with pytest.raises(cls) as info:
                await c.get("k")
            assert type(info.value) is cls
        assert (
            fc.count(Method.RANGE) == _expected_attempts(cls, READ) == (2 if cls.retryable else 1)
        )


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
async def test_a_membership_change_is_resent_only_when_surely_not_applied(
    cls: type[RaftKVError],
) -> None:
    async with FakeCluster(1) as fc, _fast_client(fc) as c:
        fc.members[0].fail_with[Method.MEMBER_PROMOTE] = [cls()]
        if cls.retryable and cls.retry_unapplied:
            await c.member_promote(fc.members[0].id)
        else:
            with pytest.raises(cls):
                await c.member_promote(fc.members[0].id)
        assert fc.count(Method.MEMBER_PROMOTE) == _expected_attempts(cls, ADMIN)


async def test_a_retryable_error_is_retried_until_the_budget_is_spent() -> None:
    async with FakeCluster(1) as fc, _fast_client(fc, command_timeout=0.5) as c:
        fc.members[0].fail_with[Method.RANGE] = [errors.Unavailable("not yet")] * 10_000
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(Timeout, match=r"within 0.5s \(last error: Unavailable: not yet\)"):
            await c.get("k")
        took = loop.time() - t0
        assert 0.4 <= took < 1.5
        tries = fc.count(Method.RANGE)
        assert tries > 3  # retried, with backoff pauses (at most 5 ms each) in between
        assert len(fc.members[0].fail_with[Method.RANGE]) == 10_000 - tries


async def test_a_non_retryable_error_is_raised_at_once() -> None:
    async with FakeCluster(1) as fc, _fast_client(fc, command_timeout=5.0) as c:
        fc.members[0].fail_with[Method.RANGE] = [KeyNotFound("gone")] * 5
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(KeyNotFound, match="gone"):
            await c.get("k")
        assert loop.time() - t0 < 1.0
        assert fc.count(Method.RANGE) == 1
        assert c.breaker(fc.members[0].addr).failures == 0  # an answer: the member is alive


async def test_the_decision_reads_only_the_attribute(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flip KeyNotFound's attribute and the same answer is retried: no other list decides."""
    monkeypatch.setattr(KeyNotFound, "retryable", True)
    async with FakeCluster(1) as fc, _fast_client(fc) as c:
        fc.members[0].fail_with[Method.RANGE] = [KeyNotFound("once")]
        assert (await c.get("k")).kvs == ()
        assert fc.count(Method.RANGE) == 2


async def test_the_watcher_opens_and_reopens_through_the_routers_loop() -> None:
    async with FakeCluster(1) as fc, _fast_client(fc) as c:
        runs: list[Method] = []
        real_run = c.router.run

        async def spy(method: Method, *args: Any, **kwargs: Any) -> Any:
            runs.append(method)
            return await real_run(method, *args, **kwargs)

        c.router.run = spy  # type: ignore[method-assign]
        member = fc.members[0]
        # the first creation is refused once (NoLeader): the loop backs off and retries
        member.fail_with[Method.WATCH] = [NoLeader("election")]
        async with c.watch("k") as w:
            assert runs.count(Method.WATCH) == 1
            assert fc.count(Method.WATCH) == 2
            await c.put("k", "1")
            first = await asyncio.wait_for(w.__anext__(), 5.0)
            assert [e.kv.value for e in first.events] == [b"1"]
            # the connection goes away; the reopening is refused once, then resumes
            member.fail_with[Method.WATCH] = [TooManyRequests(0.01)]
            member.drop_connections()
            await c.put("k", "2")
            second = await asyncio.wait_for(w.__anext__(), 5.0)
            assert [e.kv.value for e in second.events] == [b"2"]
            assert second.revision == first.revision + 1
        assert runs.count(Method.WATCH) == 2
        assert fc.count(Method.WATCH) == 4


async def test_a_watch_that_cannot_be_created_ends_in_the_loops_timeout() -> None:
    async with FakeCluster(1) as fc, _fast_client(fc, command_timeout=0.3) as c:
        fc.members[0].fail_with[Method.WATCH] = [NoLeader("no quorum")] * 10_000
        with pytest.raises(Timeout, match=r"watch did not complete within 0.3s"):
            await c.watch("k").start()
        # retried (NoLeader is retryable) until the budget ran out; on a loaded machine the
        # last attempt may be cut by the budget, so its own error can be the attempt timeout
        assert fc.count(Method.WATCH) >= 2


async def test_a_watch_refused_for_good_is_not_retried() -> None:
    async with FakeCluster(1) as fc, _fast_client(fc) as c:
        fc.members[0].fail_with[Method.WATCH] = [errors.Compacted(3)]
        with pytest.raises(errors.Compacted):
            await c.watch("k", start_revision=1).start()
        assert fc.count(Method.WATCH) == 1


def test_router_is_what_the_client_uses() -> None:
    c = Client(["127.0.0.1:1"])
    assert isinstance(c.router, Router)
    assert c.router.config is c.config
