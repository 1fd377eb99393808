"""Distributed leases: strict order across instances, busy and lost leases, fenced commits."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from promptkit_async import (
    LockLost,
    Message,
    RedisStore,
    Session,
    SessionBusy,
)
from promptkit_async.stores._redis._scripts import ACQUIRE

from ..samples import a, u


async def test_distributed_lock_serialises_turns_across_instances(
    redis_url: str, prefix: str
) -> None:
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(3)]
    stores = [RedisStore(c, prefix=prefix, distributed_lock=True) for c in clients]
    seen: list[int] = []

    async def turn(store: RedisStore, i: int) -> None:
        async with Session(store, "shared", max_messages=None, lock_timeout=20) as s:
            seen.append(len(s.history))
            s.add(u(f"q{i}"))
            await asyncio.sleep(0.002)
            s.add(a(f"a{i}"))

    try:
        await asyncio.gather(*(turn(stores[i % 3], i) for i in range(24)))
        stored = await stores[0].load("shared")
        assert len(stored) == 48
        assert sorted(seen) == list(range(0, 48, 2))  # each saw all earlier turns
        for k in range(0, 48, 2):
            assert stored[k].content[1:] == stored[k + 1].content[1:]
        assert not await clients[0].exists(stores[0].key("shared", "l"))
    finally:
        await stores[0].delete("shared")
        await clients[0].delete(f"{prefix}:index")
        for c in clients:
            await c.aclose()


async def test_lease_busy_and_lost(redis_url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    one = RedisStore(client, prefix=prefix, distributed_lock=True, lease_ttl=0.3)
    two = RedisStore(client, prefix=prefix, distributed_lock=True, lease_ttl=0.3)
    try:
        async with Session(one, "l") as s:
            with pytest.raises(SessionBusy):
                async with Session(two, "l", lock_timeout=0.05):
                    pass
            s.add(u("kept"))
        # A holder whose lease is taken over cannot write (fencing).
        with pytest.raises(LockLost) as info:
            async with Session(one, "l") as s:
                await client.set(one.key("l", "l"), b"someone-else", px=5000)
                s.add(u("must not land"))
        assert info.value.unsaved == (u("must not land"),)
        assert [m.content for m in await one.load("l")] == ["kept"]
        # the stolen lease was not released by the loser
        assert await client.get(one.key("l", "l")) == b"someone-else"
        await client.delete(one.key("l", "l"))
        # A lease is renewed while a slow turn runs past its TTL.
        async with Session(one, "l") as s:
            await asyncio.sleep(0.5)
            s.add(u("slow but renewed"))
        assert len(await one.load("l")) == 2
    finally:
        await client.delete(one.key("l"), one.key("l", "t"), one.key("l", "l"))
        await client.delete(f"{prefix}:index")
        await client.aclose()


async def test_a_cancelled_lease_request_gives_the_lease_back(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    store = RedisStore(client, prefix=prefix, distributed_lock=True)
    real: Any = client.execute_command
    sent = asyncio.Event()

    async def slow_set(*args: Any, **kwargs: Any) -> Any:
        result = await real(*args, **kwargs)  # the lease's SET runs on Redis...
        if args[:2] == ("EVALSHA", ACQUIRE.sha):
            sent.set()
            await asyncio.sleep(10)  # ...and its reply is "lost" to a cancellation
        return result

    monkeypatch.setattr(client, "execute_command", slow_set)
    try:
        task = asyncio.create_task(store.acquire_lease("l"))
        await sent.wait()
        assert await client.exists(store.key("l", "l"))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):
            if not await client.exists(store.key("l", "l")):
                break
            await asyncio.sleep(0.01)
        assert not await client.exists(store.key("l", "l"))
    finally:
        await client.delete(store.key("l", "l"))
        await client.aclose()


async def test_a_renewal_whose_cancellation_became_a_timeout_still_stops(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On 3.11 a cancel that meets redis-py's own timeout can surface as TimeoutError."""
    import time

    from promptkit_async.stores._redis._scripts import RENEW as _renew_script

    client = aioredis.Redis.from_url(redis_url)
    store = RedisStore(client, prefix=prefix, distributed_lock=True, lease_ttl=0.06)
    real: Any = client.execute_command
    renewing = asyncio.Event()

    async def swallowing(*args: Any, **kwargs: Any) -> Any:
        if args[:2] == ("EVALSHA", _renew_script.sha):
            renewing.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                raise TimeoutError("Timeout reading from socket") from None
        return await real(*args, **kwargs)

    monkeypatch.setattr(client, "execute_command", swallowing)
    try:
        started = time.monotonic()
        async with Session(store, "r") as s:
            await renewing.wait()
            s.add(Message.user("x"))
        assert time.monotonic() - started < 5
        assert not await real("EXISTS", store.key("r", "l"))
        assert [m.content for m in await store.load("r")] == ["x"]
    finally:
        await store.delete("r")
        await real("DEL", f"{prefix}:index")
        await client.aclose()
