"""The lock registry: serialises one session, never grows with the number of ids."""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING, Any

import pytest

from promptkit_async import (
    LockRegistry,
    MemoryStore,
    Session,
    SessionBusy,
)

if TYPE_CHECKING:
    from collections.abc import Coroutine


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


async def test_try_acquire_takes_a_free_lock_and_refuses_a_held_one() -> None:
    reg = LockRegistry()
    token = reg.try_acquire("s")
    assert token is not None and reg.locked("s")
    assert reg.try_acquire("s") is None
    assert not reg.locked("t")
    reg.release("s", token)
    assert len(reg) == 0 and not reg.locked("s")
    with pytest.raises(RuntimeError, match="not held"):
        reg.release("s", token)


async def _waiting(reg: LockRegistry, session_id: str, users: int) -> None:
    for _ in range(100):
        await asyncio.sleep(0)
        entry = reg._entries.get(session_id)
        if entry is not None and entry.users == users:
            return
    raise AssertionError(f"{users} users never reached")


async def test_waiters_get_the_lock_first_come_first_served_and_nobody_barges_in() -> None:
    reg = LockRegistry()
    order: list[int] = []

    async def turn(i: int) -> None:
        entry = await reg.acquire("s")
        order.append(i)
        await asyncio.sleep(0)
        reg.release("s", entry)

    held = reg.try_acquire("s")
    tasks = []
    for i in range(5):
        tasks.append(asyncio.create_task(turn(i)))
        await _waiting(reg, "s", i + 2)
    reg.release("s", held)
    # Handed straight to the oldest waiter: never free in between.
    assert reg.locked("s") and reg.try_acquire("s") is None
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]
    assert len(reg) == 0


async def test_a_waiter_cancelled_while_waiting_is_skipped() -> None:
    reg = LockRegistry()
    held = await reg.acquire("s")
    first = asyncio.create_task(reg.acquire("s"))
    await _waiting(reg, "s", 2)
    second = asyncio.create_task(reg.acquire("s"))
    await _waiting(reg, "s", 3)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    reg.release("s", held)
    reg.release("s", await second)
    assert len(reg) == 0


async def test_a_waiter_cancelled_as_the_lock_is_handed_to_it_passes_it_on() -> None:
    reg = LockRegistry()
    held = await reg.acquire("s")
    first = asyncio.create_task(reg.acquire("s"))
    await _waiting(reg, "s", 2)
    second = asyncio.create_task(reg.acquire("s"))
    await _waiting(reg, "s", 3)
    reg.release("s", held)  # handed to ``first``, which has not run since...
    first.cancel()  # ...and is cancelled before it does
    with pytest.raises(asyncio.CancelledError):
        await first
    token = await asyncio.wait_for(second, 1)
    assert reg.locked("s")
    reg.release("s", token)
    assert len(reg) == 0


async def test_the_last_waiter_cancelled_as_it_is_handed_the_lock_frees_it() -> None:
    reg = LockRegistry()
    held = await reg.acquire("s")
    waiter = asyncio.create_task(reg.acquire("s"))
    await _waiting(reg, "s", 2)
    reg.release("s", held)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert len(reg) == 0
    reg.release("s", await reg.acquire("s", timeout=0))
    assert len(reg) == 0


async def test_a_timed_out_waiter_leaves_the_queue_in_order() -> None:
    reg = LockRegistry()
    held = await reg.acquire("s")
    patient = asyncio.create_task(reg.acquire("s"))
    await _waiting(reg, "s", 2)
    with pytest.raises(SessionBusy):
        await reg.acquire("s", timeout=0.01)
    later = asyncio.create_task(reg.acquire("s", timeout=5))
    await _waiting(reg, "s", 3)
    reg.release("s", held)
    reg.release("s", await patient)
    reg.release("s", await later)
    assert len(reg) == 0


async def test_a_hand_off_before_the_timer_fires_wins() -> None:
    reg = LockRegistry()
    held = await reg.acquire("s")
    waiter = asyncio.create_task(reg.acquire("s", timeout=0))
    await asyncio.sleep(0)  # waiting now, its timer due at once
    reg.release("s", held)  # resolved first: the timer finds it decided
    token = await waiter
    reg.release("s", token)
    assert len(reg) == 0


async def test_a_cancelled_timed_waiter_cancels_its_timer() -> None:
    reg = LockRegistry()
    held = await reg.acquire("s")
    waiter = asyncio.create_task(reg.acquire("s", timeout=0.05))
    await _waiting(reg, "s", 2)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await asyncio.sleep(0.1)  # the timer, had it fired, would find nothing to do
    assert reg.locked("s")
    reg.release("s", held)
    assert len(reg) == 0


async def test_many_turns_with_cancellations_and_timeouts_never_overlap() -> None:
    reg = LockRegistry()
    rng = random.Random(7)
    inside: list[int] = []
    done = 0

    async def turn(i: int) -> None:
        nonlocal done
        timeout = rng.choice([None, 0, 0.001, 0.05])
        try:
            entry = await reg.acquire("s", timeout)
        except SessionBusy:
            return
        try:
            assert not inside
            inside.append(i)
            await asyncio.sleep(rng.choice([0, 0, 0.0005]))
            inside.remove(i)
            done += 1
        finally:
            if i in inside:  # cancelled inside
                inside.remove(i)
            reg.release("s", entry)

    tasks = [asyncio.create_task(turn(i)) for i in range(300)]
    for _ in range(100):
        await asyncio.sleep(rng.choice([0, 0.0005]))
        rng.choice(tasks).cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert done > 0 and not inside
    assert len(reg) == 0


def _run_on_a_new_loop(coro: Coroutine[Any, Any, None]) -> None:
    """Like ``asyncio.run``, without replacing the thread's current loop.

    ``asyncio.run`` sets the current loop to None when it ends, which orphans
    the loop an older pytest-asyncio leaves current after an async test.
    """
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(coro)
    finally:
        loop.close()


def test_a_registry_serves_one_loop_after_another() -> None:
    reg = LockRegistry()  # made outside any loop, as a store at import time is

    async def contended() -> None:
        held = await reg.acquire("s")
        waiter = asyncio.create_task(reg.acquire("s", timeout=1))
        await _waiting(reg, "s", 2)
        reg.release("s", held)
        reg.release("s", await waiter)

    _run_on_a_new_loop(contended())
    _run_on_a_new_loop(contended())
    assert len(reg) == 0


def test_waiting_on_a_lock_another_loop_waits_on_is_refused() -> None:
    reg = LockRegistry()
    other = asyncio.new_event_loop()
    try:
        held = other.run_until_complete(reg.acquire("s"))
        waiter = other.create_task(reg.acquire("s"))
        other.run_until_complete(asyncio.sleep(0.01))

        async def elsewhere() -> None:
            with pytest.raises(RuntimeError, match="another loop"):
                await reg.acquire("s")

        _run_on_a_new_loop(elsewhere())
        reg.release("s", held)
        reg.release("s", other.run_until_complete(waiter))
    finally:
        other.close()
    assert len(reg) == 0


async def test_session_turns_queue_in_order_on_one_session() -> None:
    store = MemoryStore()
    order: list[int] = []
    first = Session(store, "s")
    await first.__aenter__()

    async def turn(i: int) -> None:
        async with Session(store, "s", lock_timeout=5):
            order.append(i)

    tasks = [asyncio.create_task(turn(i)) for i in range(4)]
    await _waiting(store.locks, "s", 5)
    with pytest.raises(SessionBusy):
        async with Session(store, "s", lock_timeout=0):
            pass
    await first.__aexit__(None, None, None)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3]
    assert len(store.locks) == 0
