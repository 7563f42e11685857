"""Session, Mutex, try_lock and RWMutex against a real in-process cluster."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from raftkv.api import PutRequest
from raftkv.client import Client
from raftkv.errors import LockLost, Timeout
from raftkv.recipes import Mutex, RWMutex, Session, try_lock, unlock
from raftkv.testing import LocalCluster


async def _keys(c: Client, prefix: str) -> list[bytes]:
    return [kv.key for kv in (await c.get(prefix, prefix=True)).kvs]


async def test_session_keeps_lease_alive_and_revokes_on_exit(client: Client) -> None:
    async with Session(client, ttl=1, keepalive_interval=0.2) as s:
        await client.put("k", "v", lease=s.lease_id)
        await asyncio.sleep(2.0)  # twice the TTL: only the keep-alive keeps the key
        assert (await client.get("k")).count == 1
        assert not s.done.is_set()
    assert s.done.is_set()
    assert (await client.get("k")).count == 0


async def test_session_done_when_lease_revoked_elsewhere(client: Client) -> None:
    async with Session(client, ttl=3, keepalive_interval=0.1) as s:
        await client.lease_revoke(s.lease_id)
        await asyncio.wait_for(s.done.wait(), 2.0)


async def test_mutex_exclusion_exact_count(tmp_path: Path) -> None:
    async with LocalCluster(3, tmp_path / "c3") as cluster:
        holders, rounds = 5, 6
        inside = 0
        max_inside = 0

        async def worker() -> None:
            nonlocal inside, max_inside
            async with Client(cluster.endpoints, command_timeout=10.0) as c, Session(c, ttl=5) as s:
                m = Mutex(s, "/locks/counter")
                for _ in range(rounds):
                    await m.acquire()
                    inside += 1
                    max_inside = max(max_inside, inside)
                    cur = (await c.get("counter")).kvs
                    n = int(cur[0].value) if cur else 0
                    await asyncio.sleep(0)  # let others run while we hold the lock
                    r = await m.guarded_txn(success=[PutRequest(b"counter", b"%d" % (n + 1))])
                    assert r.succeeded
                    inside -= 1
                    await m.release()

        await asyncio.gather(*(worker() for _ in range(holders)))
        async with Client(cluster.endpoints) as c:
            assert int((await c.get("counter")).kvs[0].value) == holders * rounds
            assert await _keys(c, "/locks/counter/") == []
        assert max_inside == 1


async def test_fencing_tokens_grow_and_owner_is_lowest(client: Client) -> None:
    async with Session(client, ttl=5) as s1, Session(client, ttl=5) as s2:
        m1, m2 = Mutex(s1, "/l"), Mutex(s2, "/l")
        t1 = await m1.acquire()
        assert await m1.owner() == m1.key
        waiter = asyncio.create_task(m2.acquire())
        await asyncio.sleep(0.2)
        assert not waiter.done()
        await m1.release()
        t2 = await asyncio.wait_for(waiter, 5)
        assert t2 > t1 and m2.fencing_token == t2
        await m2.release()


async def test_waiter_is_woken_only_by_its_predecessor(client: Client) -> None:
    n = 4
    sessions = [await Session.create(client, ttl=10) for _ in range(n)]
    try:
        mutexes = [Mutex(s, "/herd") for s in sessions]
        await mutexes[0].acquire()
        tasks = []
        for m in mutexes[1:]:  # queue them in a known order
            tasks.append(asyncio.create_task(m.acquire()))
            while len(await _keys(client, "/herd/")) < len(tasks) + 1:
                await asyncio.sleep(0.01)
        # Unrelated churn under the prefix's neighbourhood and a put on the holder's key wake
        # nobody: waiters watch delete events of their predecessor only.
        await client.put("/herd-other", "x")
        await client.put(mutexes[0].key, "touch", lease=sessions[0].lease_id)
        await asyncio.sleep(0.2)
        assert [m.wakeups for m in mutexes] == [0] * n
        for i in range(1, n):
            await mutexes[i - 1].release()
            await asyncio.wait_for(tasks[i - 1], 5)
            assert mutexes[i].is_held
            # only the next waiter woke, exactly once; the ones behind it did not
            assert [m.wakeups for m in mutexes[1:]] == [1] * i + [0] * (n - 1 - i)
        await mutexes[-1].release()
    finally:
        for s in sessions:
            await s.close()


async def test_acquire_timeout_and_cancel_remove_the_waiter_key(client: Client) -> None:
    async with Session(client, 10) as s1, Session(client, 10) as s2, Session(client, 10) as s3:
        holder = Mutex(s1, "/t")
        await holder.acquire()
        m2 = Mutex(s2, "/t")
        with pytest.raises(Timeout):
            await m2.acquire(timeout=0.3)
        assert await _keys(client, "/t/") == [holder.key]
        m3 = Mutex(s3, "/t")
        task = asyncio.create_task(m3.acquire())
        while len(await _keys(client, "/t/")) < 2:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await _keys(client, "/t/") == [holder.key]
        await holder.release()
        # the lock is free again: a new acquire succeeds at once
        assert await m2.acquire(timeout=2) > 0
        await m2.release()


async def test_session_loss_marks_lock_lost_and_stale_token_is_refused(client: Client) -> None:
    s1 = await Session.create(client, ttl=10, keepalive_interval=0.1)
    async with Session(client, ttl=10) as s2:
        m1 = Mutex(s1, "/f")
        t1 = await m1.acquire()
        assert await m1.guarded_put("data", "from-1")
        await client.lease_revoke(s1.lease_id)  # the holder's lease is lost
        await asyncio.wait_for(m1.lost_event.wait(), 3)
        assert m1.lost and not m1.is_held
        m2 = Mutex(s2, "/f")
        t2 = await m2.acquire(timeout=3)
        assert t2 > t1
        assert await m2.guarded_put("data", "from-2")
        # the old holder still believes in token t1: refused
        assert not await m1.guarded_put("data", "stale")
        with pytest.raises(LockLost):
            await m1.guarded_txn(success=[PutRequest(b"data", b"stale")])
        assert (await client.get("data")).kvs[0].value == b"from-2"
        await m2.release()
    await s1.close()


async def test_waiter_whose_session_dies_gives_up(client: Client) -> None:
    async with Session(client, ttl=10) as s1:
        s2 = await Session.create(client, ttl=10, keepalive_interval=0.1)
        await Mutex(s1, "/w").acquire()
        task = asyncio.create_task(Mutex(s2, "/w").acquire())
        await asyncio.sleep(0.2)
        await client.lease_revoke(s2.lease_id)
        with pytest.raises(LockLost):
            await asyncio.wait_for(task, 3)
        await s2.close()


async def test_try_lock_is_put_if_absent_with_expiry(client: Client) -> None:
    tok = await try_lock(client, "/once", ttl=1)
    assert tok is not None and tok.fencing_token > 0
    assert await try_lock(client, "/once", ttl=1) is None
    # expiry frees it without anyone unlocking
    deadline = asyncio.get_running_loop().time() + 5
    tok2 = None
    while tok2 is None and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)
        tok2 = await try_lock(client, "/once", ttl=5)
    assert tok2 is not None and tok2.fencing_token > tok.fencing_token
    await unlock(client, tok2)
    assert (await client.get("/once")).count == 0


async def test_rwmutex_readers_share_writer_excludes(client: Client) -> None:
    ss = [await Session.create(client, ttl=10) for _ in range(4)]
    try:
        r1, r2, w, r3 = (RWMutex(s, "/rw") for s in ss)
        await r1.rlock(timeout=2)
        await r2.rlock(timeout=2)  # readers share
        wt = asyncio.create_task(w.lock())
        await asyncio.sleep(0.2)
        assert not wt.done()  # the writer waits for both readers
        r3t = asyncio.create_task(r3.rlock())
        await asyncio.sleep(0.2)
        assert not r3t.done()  # a reader after a waiting writer queues behind it
        await r1.unlock()
        await asyncio.sleep(0.2)
        assert not wt.done()
        await r2.unlock()
        await asyncio.wait_for(wt, 3)
        assert not r3t.done()
        await w.unlock()
        await asyncio.wait_for(r3t, 3)
        await r3.unlock()
        with pytest.raises(Timeout):
            await _busy_writer(ss[0], ss[1])
    finally:
        for s in ss:
            await s.close()


async def _busy_writer(a: Session, b: Session) -> None:
    """A writer holding the lock makes a reader time out, and its key is removed."""
    w, r = RWMutex(a, "/rw2"), RWMutex(b, "/rw2")
    await w.lock(timeout=2)
    try:
        await r.rlock(timeout=0.3)
    finally:
        assert r.key is None
        await w.unlock()


async def test_the_clients_timeout_passes_through_a_lock_unchanged(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """raftkv's Timeout is also a TimeoutError: the lock must not take the client's timeout
    for its own deadline (and must still withdraw its waiter key)."""
    async with Session(client, ttl=5) as s:
        m = Mutex(s, "/tlock/")

        async def no_answer(rev: int) -> None:
            raise Timeout("the cluster did not answer in time")

        monkeypatch.setattr(m, "_wait_turn", no_answer)
        with pytest.raises(Timeout, match="the cluster did not answer"):
            await m.acquire(timeout=None)
        assert await _keys(client, "/tlock/") == []

    async def no_answer_rw(*a: object, **k: object) -> None:
        raise Timeout("the cluster did not answer in time")

    async with Session(client, ttl=5) as s1, Session(client, ttl=5) as s2:
        await RWMutex(s1, "/trw/").lock()  # a writer holds it: the reader must wait
        monkeypatch.setattr("raftkv.recipes.mutex.wait_delete", no_answer_rw)
        with pytest.raises(Timeout, match="the cluster did not answer"):
            await RWMutex(s2, "/trw/").rlock(timeout=None)
