"""The lock registry: serialises one session, never grows with the number of ids."""

from __future__ import annotations

import asyncio

import pytest

from promptkit_async import (
    LockRegistry,
    MemoryStore,
    Session,
    SessionBusy,
)


async def test_registry_serialises_and_empties() -> None:
    reg = LockRegistry()
    order: list[str] = []

    async def hold(name: str) -> None:
        entry = await reg.acquire("s")
        order.append(f"in {name}")
        await asyncio.sleep(0.01)
        order.append(f"out {name}")
        reg.release("s", entry)

    await asyncio.gather(hold("a"), hold("b"))
    assert order == ["in a", "out a", "in b", "out b"]
    assert len(reg) == 0


async def test_registry_timeout() -> None:
    reg = LockRegistry()
    entry = await reg.acquire("s")
    with pytest.raises(SessionBusy, match="'s' is busy"):
        await reg.acquire("s", timeout=0.01)
    assert "s" in reg
    reg.release("s", entry)
    assert len(reg) == 0
    again = await reg.acquire("s", timeout=0)
    reg.release("s", again)


async def test_a_million_ids_leave_the_registry_empty() -> None:
    # On MemoryStore to keep it fast: the registry is the same class for every store.
    store = MemoryStore()
    for i in range(1_000_000):
        entry = await store.locks.acquire(f"s{i}")
        store.locks.release(f"s{i}", entry)
    assert len(store.locks) == 0
    for i in range(2000):
        async with Session(store, f"user-{i}"):
            pass
    assert len(store.locks) == 0
