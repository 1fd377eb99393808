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


async def test_an_extended_ttl_outlives_its_first_heap_entry() -> None:
    # A write that only extends the TTL pushes nothing: the session's entry
    # comes up at the old expiry and is pushed again at the new one.
    now = [0.0]
    store = MemoryStore(clock=lambda: now[0])
    await store.append("a", [u("x")], ttl=10)
    now[0] = 8
    await store.append("a", [u("y")], ttl=10)  # expires at 18 now
    assert len(store._expiry) == 1
    now[0] = 12
    await store.append("other", [u("x")], ttl=100)  # sweeps past the old entry
    assert set(store._data) == {"a", "other"} and len(await store.load("a")) == 2
    now[0] = 19
    await store.append("other", [u("x")], ttl=100)
    assert list(store._data) == ["other"]  # swept without being read
    await store.append("b", [u("x")], ttl=50)
    await store.append("b", [u("x")], ttl=5)  # a shorter TTL is scheduled at once
    now[0] = 25
    await store.append("other", [u("x")], ttl=100)
    assert "b" not in store._data
    await store.append("c", [u("x")], ttl=5)
    await store.append("c", [u("x")], ttl=None)  # no TTL any more: never swept
    now[0] = 1000
    await store.append("other", [u("x")], ttl=100)
    assert set(store._data) == {"c", "other"} and await store.ttl("c") is None


async def test_load_and_commit_report_to_observers_and_latency_windows() -> None:
    seen: list[tuple[str, str, int]] = []

    class Spy:
        def on_load(self, session_id: str, seconds: float, messages: int) -> None:
            seen.append(("load", session_id, messages))

        def on_save(self, session_id: str, seconds: float, messages: int) -> None:
            seen.append(("save", session_id, messages))

    store = MemoryStore()
    async with Session(store, "s") as s:
        s.add(u("a"), u("b"))
    spy = Spy()
    store.add_observer(spy)  # added later: seen from then on
    async with Session(store, "s", max_messages=1) as s:
        s.add(u("c"))
    store.remove_observer(spy)
    await store.load("s")
    assert seen == [("load", "s", 1), ("save", "s", 1)]
    m = await store.metrics()
    assert (m.load_latency.count, m.save_latency.count) == (3, 2)
