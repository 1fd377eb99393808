"""MemoryStore specifics: expiry on a fake clock, sweeping, sizes."""

from __future__ import annotations

from promptkit_async import (
    MemoryStore,
    Message,
    Session,
)

from ..samples import u


async def test_memory_store_ignores_empty_appends_like_redis() -> None:
    store = MemoryStore()
    await store.append("empty", [])
    assert not await store.exists("empty")
    assert (await store.metrics()).active_sessions == 0


async def test_memory_store_sweeps_mixed_ttls() -> None:
    now = [0.0]
    store = MemoryStore(clock=lambda: now[0])
    await store.append("long", [Message.user("x")], ttl=3600)
    for i in range(1000):
        await store.append(f"short-{i}", [Message.user("x")], ttl=1)
    now[0] = 10
    m = await store.metrics()
    assert m.active_sessions == 1 and list(store._data) == ["long"]
    for _ in range(500):  # rewriting one session keeps the heap bounded
        await store.append("long", [Message.user("x")], ttl=3600, max_messages=1)
    assert len(store._expiry) <= 2 * len(store._data) + 64


async def test_expired_session_is_gone() -> None:
    now = [1000.0]
    store = MemoryStore(clock=lambda: now[0])
    async with Session(store, "e", ttl=10) as s:
        s.add(u("x"))
    now[0] += 9.9
    assert len(await store.load("e")) == 1
    now[0] += 0.2
    assert await store.load("e") == []
    assert "e" not in store._data


async def test_expired_sessions_are_swept_without_being_read() -> None:
    now = [0.0]
    store = MemoryStore(clock=lambda: now[0])
    for i in range(100):
        await store.append(f"s{i}", [u("x")], ttl=10)
    now[0] += 11
    await store.append("fresh", [u("x")], ttl=10)
    assert list(store._data) == ["fresh"]


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
