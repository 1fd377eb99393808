"""Stores written by users: one with only the core methods, and a wrapper around RedisStore.

The contract is the protocols in ``promptkit_async.stores``: a session uses
what a store declares and nothing else, so a minimal store still gets
serialised turns, and a wrapper that forwards the capabilities keeps
fencing and exactly-once commits.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
import redis.asyncio as aioredis

from promptkit_async import (
    Conversations,
    Lease,
    LockLost,
    LockRegistry,
    Message,
    RedisStore,
    Session,
    Store,
    SupportsLeases,
    SupportsLocks,
    SupportsTurns,
    Turn,
    TurnOutcome,
)

from ..conftest import assert_pool_clean, contents, through, wait_until
from ..samples import a, u

if TYPE_CHECKING:
    from collections.abc import Sequence

    from promptkit_async import TTL

    from ..faults import FaultProxy


class DictStore:
    """The least a store can be: the four core coroutines, nothing else."""

    def __init__(self, commit_delay: float = 0.0) -> None:
        self.data: dict[str, list[Message]] = {}
        self.turn_ids: list[str | None] = []
        self.commit_delay = commit_delay

    async def load(self, session_id: str, limit: int | None = None) -> list[Message]:
        await asyncio.sleep(0)  # a real backend would await I/O here
        stored = self.data.get(session_id, [])
        return list(stored if limit is None else stored[-limit:])

    async def append(
        self,
        session_id: str,
        messages: Sequence[Message],
        *,
        max_messages: int | None = None,
        ttl: TTL = None,
        turn_id: str | None = None,
    ) -> None:
        if turn_id is not None and turn_id in self.turn_ids:
            return
        await asyncio.sleep(self.commit_delay)
        stored = self.data.setdefault(session_id, [])
        stored.extend(messages)
        if max_messages is not None:
            del stored[:-max_messages]
        self.turn_ids.append(turn_id)

    async def delete(self, session_id: str) -> bool:
        return self.data.pop(session_id, None) is not None

    async def aclose(self) -> None:
        pass


def test_a_minimal_store_is_a_store_with_no_capabilities() -> None:
    store = DictStore()
    assert isinstance(store, Store)
    assert not isinstance(store, (SupportsLocks, SupportsTurns, SupportsLeases))


async def test_a_minimal_store_gets_a_registry_of_its_own_and_serialised_turns() -> None:
    store = DictStore()
    registry = LockRegistry.of(store)
    assert LockRegistry.of(store) is registry  # the same for every session on it
    assert LockRegistry.of(DictStore()) is not registry  # never shared between stores
    seen_before: list[int] = []

    async def turn(i: int) -> None:
        async with Session(store, "same", max_messages=None) as s:
            seen_before.append(len(s.history))
            s.add(u(f"q{i}"))
            await asyncio.sleep(0)
            s.add(a(f"a{i}"))

    await asyncio.gather(*(turn(i) for i in range(30)))
    assert sorted(seen_before) == list(range(0, 60, 2))  # one after another
    stored = store.data["same"]
    assert [m.content[1:] for m in stored[0::2]] == [m.content[1:] for m in stored[1::2]]
    assert len(registry) == 0
    assert all(turn_id for turn_id in store.turn_ids)  # every commit carried a turn id


async def test_a_cancelled_turn_on_a_minimal_store_waits_for_its_append() -> None:
    store = DictStore(commit_delay=0.2)
    async with Session(store, "s") as s:
        s.add(u("first"))
    committing = asyncio.Event()

    async def turn() -> None:
        async with Session(store, "s") as s:
            s.add(u("q"), a("r"))
            committing.set()

    task = asyncio.create_task(turn())
    await committing.wait()
    await asyncio.sleep(0.05)  # inside the append's delay
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Re-raised once the append finished: the turn is whole, never half-written.
    assert [m.content for m in store.data["s"]] == ["first", "q", "r"]
    assert len(LockRegistry.of(store)) == 0


async def test_conversations_run_on_a_minimal_store() -> None:
    chats = Conversations(DictStore())
    await chats.execute("s", "user", "hello")
    assert [m.content for m in await chats.history("s")] == ["hello"]


def test_what_is_not_a_store_fails_at_once() -> None:
    class NoDelete:
        async def load(self, session_id: str, limit: int | None = None) -> list[Message]:
            return []

        async def append(self, session_id: str, messages: Sequence[Message]) -> None:
            pass

        async def aclose(self) -> None:
            pass

    with pytest.raises(TypeError, match="not a Store.*load, append, delete and aclose"):
        Session(NoDelete(), "s")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a Store"):
        Conversations(NoDelete())  # type: ignore[arg-type]


def test_a_store_that_can_hold_no_registry_is_told_what_to_add() -> None:
    class Slotted(DictStore):
        __slots__ = ("x",)  # with DictStore's __dict__ it is still weak-referenceable

        __hash__ = None  # type: ignore[assignment]  # unhashable: no weak mapping either

    with pytest.raises(TypeError, match="`locks` attribute"):
        Session(Slotted(), "s")


class Recording:
    """A delegating wrapper around a RedisStore that logs every call it forwards.

    It declares the capabilities it forwards by implementing them, so the
    session uses them through it exactly as it would on the store itself.
    """

    def __init__(self, inner: RedisStore) -> None:
        self.inner = inner
        self.calls: list[str] = []

    @property
    def locks(self) -> LockRegistry:
        return self.inner.locks

    @property
    def distributed_lock(self) -> bool:
        return self.inner.distributed_lock

    async def load(self, session_id: str, limit: int | None = None) -> list[Message]:
        self.calls.append("load")
        return await self.inner.load(session_id, limit)

    async def append(
        self,
        session_id: str,
        messages: Sequence[Message],
        *,
        max_messages: int | None = None,
        ttl: TTL = 60.0,
        turn_id: str | None = None,
    ) -> None:
        self.calls.append("append")
        await self.inner.append(
            session_id, messages, max_messages=max_messages, ttl=ttl, turn_id=turn_id
        )

    async def commit(self, turn: Turn) -> None:
        self.calls.append("commit")
        await self.inner.commit(turn)

    async def settle_turn(self, session_id: str, turn_id: str) -> TurnOutcome:
        self.calls.append("settle_turn")
        return await self.inner.settle_turn(session_id, turn_id)

    async def acquire_lease(self, session_id: str, timeout: float | None = None) -> Lease:
        self.calls.append("acquire_lease")
        return await self.inner.acquire_lease(session_id, timeout)

    async def delete(self, session_id: str) -> bool:
        return await self.inner.delete(session_id)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_wrapper_keeps_fencing(redis_url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    wrapper = Recording(RedisStore(client, prefix=prefix, distributed_lock=True, lease_ttl=5))
    assert isinstance(wrapper, (SupportsLocks, SupportsTurns, SupportsLeases))
    try:
        async with Session(wrapper, "w") as s:
            s.add(u("kept"))
        assert wrapper.calls == ["acquire_lease", "load", "commit"]
        with pytest.raises(LockLost) as info:
            async with Session(wrapper, "w") as s:
                await client.set(wrapper.inner.key("w", "l"), b"someone-else", px=5000)
                s.add(u("must not land"))
        assert info.value.unsaved == (u("must not land"),)
        assert await contents(wrapper.inner, "w") == ["kept"]
    finally:
        await client.delete(*(wrapper.inner.key("w", k) for k in "htl"), f"{prefix}:index")
        await client.aclose()


async def test_a_wrapper_keeps_exactly_once_when_a_cancellation_lands_mid_commit(
    proxy: FaultProxy, redis_url: str, prefix: str, truth: RedisStore
) -> None:
    async with RedisStore.from_url(through(proxy, redis_url), prefix=prefix) as inner:
        wrapper = Recording(inner)
        await inner.append("s", [u("q0")])  # caches the scripts
        proxy.request_delay = 0.4
        proxy.delay_match = b"q1"  # hold the commit in the network

        async def turn() -> None:
            async with Session(wrapper, "s", lazy=True) as s:
                s.add(u("q1"), a("a1"))

        task = asyncio.create_task(turn())
        await wait_until(lambda: "commit" in wrapper.calls)
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert "settle_turn" in wrapper.calls  # settled through the wrapper
        decided = await contents(truth, "s")
        assert decided in (["q0"], ["q0", "q1", "a1"])
        await wait_until(lambda: any(b"q1" in c for c in proxy.forwarded))
        await asyncio.sleep(0.3)  # the held copy has landed: it changed nothing
        assert await contents(truth, "s") == decided
        assert len(inner.locks) == 0
        await assert_pool_clean(inner)
