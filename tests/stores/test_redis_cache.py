"""The near cache: never stale across instances, bounded, reread after a settled commit."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis

from promptkit_async import (
    Message,
    RedisStore,
    Session,
)

from ..samples import u

if TYPE_CHECKING:
    import pytest


async def test_near_cache_is_never_stale_across_instances(redis_url: str, prefix: str) -> None:
    client_a = aioredis.Redis.from_url(redis_url)
    client_b = aioredis.Redis.from_url(redis_url)
    a_store = RedisStore(client_a, prefix=prefix, near_cache=100)
    b_store = RedisStore(client_b, prefix=prefix, near_cache=100)
    try:
        for i in range(3):
            async with Session(a_store, "sticky") as s:
                assert [m.content for m in s.history] == [f"q{j}" for j in range(i)]
                s.add(u(f"q{i}"))
        # turns 2 and 3 were served from the cache: A wrote what it re-reads
        assert a_store.cache_hits == 2
        async with Session(b_store, "sticky") as s:
            s.add(u("from B"))
        async with Session(a_store, "sticky") as s:
            assert [m.content for m in s.history] == ["q0", "q1", "q2", "from B"]
        assert a_store.cache_misses == 2  # first load and the one after B wrote
        await b_store.delete("sticky")
        async with Session(a_store, "sticky") as s:
            assert s.history == ()
        # a write by B between A's load and A's commit: A must not cache a guess
        async with Session(a_store, "sticky") as s:
            await b_store.append("sticky", [u("B sneaks in")])
            s.add(u("A"))
        async with Session(a_store, "sticky") as s:
            assert [m.content for m in s.history] == ["B sneaks in", "A"]
    finally:
        await b_store.delete("sticky")
        await client_a.delete(f"{prefix}:index")
        await a_store.aclose()
        await b_store.aclose()
        await client_a.aclose()
        await client_b.aclose()


async def test_near_cache_respects_windows_and_caps(redis_url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    store = RedisStore(client, prefix=prefix, near_cache=2)
    try:
        await store.append("w", [u(str(i)) for i in range(10)])
        assert [m.content for m in await store.load("w", 3)] == ["7", "8", "9"]
        # a larger window than cached is a miss, read from Redis
        assert len(await store.load("w", 5)) == 5
        assert len(await store.load("w")) == 10
        assert [m.content for m in await store.load("w", 2)] == ["8", "9"]
        async with Session(store, "w", max_messages=4) as s:
            s.add(u("10"))
        hits = store.cache_hits
        assert [m.content for m in await store.load("w", 4)] == ["7", "8", "9", "10"]
        assert store.cache_hits == hits + 1
        for sid in ("x", "y", "z"):
            await store.load(sid)
        assert len(store._cache) <= 2
    finally:
        await store.delete("w")
        await client.delete(f"{prefix}:index")
        await store.aclose()
        await client.aclose()


async def test_near_cache_after_a_settled_commit_is_reread(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client_a = aioredis.Redis.from_url(redis_url)
    client_b = aioredis.Redis.from_url(redis_url)
    a_store = RedisStore(client_a, prefix=prefix, near_cache=10)
    b_store = RedisStore(client_b, prefix=prefix)
    real: Any = client_a.execute_command
    lose = {"reply": False}

    async def lossy(*args: Any, **kwargs: Any) -> Any:
        result = await real(*args, **kwargs)
        if lose["reply"] and args[0] == "EVALSHA":
            lose["reply"] = False
            raise ConnectionError("reply lost")
        return result

    monkeypatch.setattr(client_a, "execute_command", lossy)
    try:
        async with Session(a_store, "n") as s:
            await b_store.append("n", [Message.user("from B")])
            s.add(Message.user("from A"))
            lose["reply"] = True  # applied, but A only learns it by settling
        async with Session(a_store, "n") as s:
            assert [m.content for m in s.history] == ["from B", "from A"]
    finally:
        await b_store.delete("n")
        await client_a.delete(f"{prefix}:index")
        await a_store.aclose()
        await client_a.aclose()
        await client_b.aclose()


async def test_a_cached_entry_never_grows_with_a_long_conversation(
    redis_url: str, prefix: str
) -> None:
    from promptkit_async.stores._redis._cache import KEEP

    client = aioredis.Redis.from_url(redis_url)
    cached = RedisStore(client, prefix=prefix, near_cache=10, max_stored=500)
    truth = RedisStore(client, prefix=prefix)
    try:
        for turn in range(120):  # 240 messages: past KEEP, then past nothing else
            async with Session(cached, "long", max_messages=20) as s:
                s.add(u(f"q{turn}"), Message.assistant(f"a{turn}"))
            entry = cached._cache.get("long")
            assert entry is not None and len(entry.messages) <= KEEP
        assert cached.cache_hits >= 100  # the window kept being served from the cache
        window = await cached.load("long", 20)
        assert window == await truth.load("long", 20)
        assert [m.id for m in window] == [m.id for m in await truth.load("long", 20)]
        assert await cached.count("long") == 240
        assert await cached.load("long") == await truth.load("long")  # a miss, read whole
    finally:
        await truth.delete("long")
        await client.delete(f"{prefix}:index")
        await cached.aclose()
        await client.aclose()
