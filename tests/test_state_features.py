"""Metrics, observers, erasure, compression, lazy loads, near cache, leases, token windows."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
import redis.asyncio as aioredis

from promptkit_async import (
    LockLost,
    MemoryStore,
    Message,
    RedisStore,
    Session,
    SessionBusy,
    StoreUnavailable,
)

from .conftest import free_port

if TYPE_CHECKING:
    from promptkit_async.stores import Store


def u(text: str) -> Message:
    return Message.user(text)


def a(text: str) -> Message:
    return Message.assistant(text)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_load(self, session_id: str, seconds: float, messages: int) -> None:
        self.events.append(("load", session_id, messages, seconds))

    def on_save(self, session_id: str, seconds: float, messages: int) -> None:
        self.events.append(("save", session_id, messages, seconds))

    def on_error(self, operation: str, session_id: str | None, error: BaseException) -> None:
        self.events.append(("error", operation, session_id, type(error).__name__))


# -- metrics ---------------------------------------------------------------------------


async def test_metrics_count_sessions_sizes_and_latency(store: Store) -> None:
    empty = await store.metrics()  # type: ignore[attr-defined]
    assert empty.active_sessions == 0 and empty.storage_used == 0
    for i in range(5):
        async with Session(store, f"m-{i}") as s:
            s.add(*(u("x" * 100) for _ in range(i + 1)))
    for i in range(5):
        async with Session(store, f"m-{i}"):
            pass
    m = await store.metrics()  # type: ignore[attr-defined]
    assert m.active_sessions == 5
    assert m.avg_history_size == pytest.approx(3.0)
    assert m.storage_used >= 15 * 100
    assert m.exact and m.sampled == 5
    assert m.load_latency.count >= 10
    assert m.load_latency.p50 is not None and m.load_latency.p99 is not None
    assert 0 <= m.load_latency.p50 <= m.load_latency.p99 < 5
    assert m.save_latency.count == 5
    await store.delete("m-0")
    assert (await store.metrics()).active_sessions == 4  # type: ignore[attr-defined]


async def test_metrics_sample_estimates_large_stores(store: Store) -> None:
    for i in range(30):
        await store.append(f"s{i}", [u("y" * 50)] * 2)
    m = await store.metrics(sample=10)  # type: ignore[attr-defined]
    assert m.active_sessions == 30
    assert m.avg_history_size == pytest.approx(2.0)
    if isinstance(store, RedisStore):
        assert m.sampled == 10 and not m.exact


async def test_expired_sessions_leave_the_count(store: Store) -> None:
    if isinstance(store, MemoryStore):
        pytest.skip("MemoryStore expiry is covered with a fake clock below")
    await store.append("short", [u("x")], ttl=0.05)
    await store.append("long", [u("x")], ttl=100)
    await asyncio.sleep(0.15)
    assert (await store.metrics()).active_sessions == 1  # type: ignore[attr-defined]


async def test_memory_metrics_follow_expiry_and_trimming() -> None:
    now = [0.0]
    store = MemoryStore(clock=lambda: now[0])
    await store.append("a", [u("x")] * 10, ttl=10)
    await store.append("a", [u("x")] * 10, max_messages=5, ttl=10)
    m = await store.metrics()
    assert (m.active_sessions, m.avg_history_size) == (1, 5.0)
    size_of_five = m.storage_used
    assert size_of_five > 0
    now[0] = 11
    m = await store.metrics()
    assert (m.active_sessions, m.storage_used, m.avg_history_size) == (0, 0, 0.0)


def test_alerts_mirror_thresholds() -> None:
    from promptkit_async import LatencySummary, StateMetrics

    m = StateMetrics(
        active_sessions=12_000,
        avg_history_size=18,
        load_latency=LatencySummary(0.02, 0.25, 100),
        save_latency=LatencySummary(None, None, 0),
        storage_used=10,
        sampled=200,
        exact=False,
    )
    alerts = m.alerts(max_active_sessions=10_000, max_load_latency=0.1)
    assert alerts == [
        "active sessions 12000 above 10000",
        "load latency p99 250.0 ms above 100.0 ms",
    ]
    assert m.alerts(max_active_sessions=20_000, max_load_latency=1) == []


# -- observers --------------------------------------------------------------------------


async def test_observers_see_every_load_and_save(store: Store) -> None:
    rec = Recorder()
    store.add_observer(rec)  # type: ignore[attr-defined]
    async with Session(store, "obs") as s:
        s.add(u("q"), a("r"))
    async with Session(store, "obs"):
        pass
    kinds = [(e[0], e[1], e[2]) for e in rec.events]
    assert kinds == [("load", "obs", 0), ("save", "obs", 2), ("load", "obs", 2)]
    assert all(isinstance(e[3], float) and e[3] >= 0 for e in rec.events)


async def test_observers_see_errors_and_cannot_break_a_turn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken:
        def on_save(self, *args: object) -> None:
            raise RuntimeError("observer bug")

    rec = Recorder()
    down = RedisStore.from_url(
        f"redis://127.0.0.1:{free_port()}", connect_timeout=0.3, retries=0, observers=[rec]
    )
    async with down:
        with pytest.raises(StoreUnavailable):
            await down.load("x")
    assert rec.events == [("error", "load", "x", "StoreUnavailable")]
    mem = MemoryStore(observers=[Broken()])
    async with Session(mem, "x") as s:
        s.add(u("still saved"))
    assert len(await mem.load("x")) == 1
    assert "observer bug" in caplog.text
    with pytest.raises(TypeError):
        mem.add_observer(object())


# -- erasure ----------------------------------------------------------------------------


async def test_erasing_a_user_removes_every_key(store: Store) -> None:
    for sid in ["user-42", "user-42-conv-1", "user-42-conv-2", "user-420", "user-4"]:
        await store.append(sid, [u(sid)])
    assert await store.delete("user-42")
    assert await store.delete_prefix("user-42-") == 2  # type: ignore[attr-defined]
    left = sorted([s async for s in store.sessions()])  # type: ignore[attr-defined]
    assert left == ["user-4", "user-420"]
    if isinstance(store, RedisStore):
        client = store.client
        for sid in ["user-42", "user-42-conv-1", "user-42-conv-2"]:
            for kind in ("h", "t"):
                assert not await client.exists(store.key(sid, kind))
        with pytest.raises(ValueError):
            await store.delete_prefix("")


# -- compression ------------------------------------------------------------------------


async def test_compression_is_transparent_on_redis(redis_url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    zipped = RedisStore(client, prefix=prefix, compress_above=256)
    plain = RedisStore(client, prefix=prefix)
    big = u("the same words again and again " * 200)
    small = u("short")
    try:
        await zipped.append("z", [big, small])
        first, second = await client.lrange(zipped.key("z"), 0, -1)
        assert isinstance(first, bytes) and isinstance(second, bytes)
        assert first.startswith(b"\x00z") and len(first) < len(big.content) // 4
        assert second.startswith(b"{")
        await plain.append("z", [big])
        assert await plain.load("z") == [big, small, big]  # read whatever the setting
        assert await zipped.load("z") == [big, small, big]
    finally:
        await client.delete(zipped.key("z"), zipped.key("z", "t"), f"{prefix}:index")
        await client.aclose()


# -- lazy -------------------------------------------------------------------------------


async def test_lazy_append_is_one_round_trip(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    store = RedisStore(client, prefix=prefix)
    sent: list[bytes | str] = []
    real: Any = client.execute_command

    async def spy(*args: Any, **kwargs: Any) -> Any:
        sent.append(args[0])
        return await real(*args, **kwargs)

    monkeypatch.setattr(client, "execute_command", spy)
    try:
        await store.append("lazy", [u("old")])
        sent.clear()
        async with Session(store, "lazy", lazy=True) as s:
            s.add(Message.system("user logged in"))
        assert sent == ["EVALSHA"]
        sent.clear()
        async with Session(store, "lazy") as s:
            s.add(u("eager"))
        assert sent == ["LRANGE", "EVALSHA"]
        assert len(await store.load("lazy")) == 3
    finally:
        await store.delete("lazy")
        await client.delete(f"{prefix}:index")
        await client.aclose()


# -- near cache -------------------------------------------------------------------------


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
        await client.aclose()


# -- distributed lease --------------------------------------------------------------------


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


# -- token windows ----------------------------------------------------------------------


async def test_token_budget_window(store: Store) -> None:
    await store.append("tok", [u("x" * 400) for _ in range(5)] + [u("tiny")])
    async with Session(store, "tok", max_tokens=250) as s:
        assert [len(m.content) for m in s.history] == [400, 400, 4]

    async with Session(store, "tok", max_tokens=10, token_counter=lambda m: 1) as s:
        assert len(s.history) == 6
