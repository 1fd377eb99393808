"""Cancellation at every point of a turn, on a real Redis server behind a delaying proxy.

Wherever the cancellation lands (waiting for the lock, loading, streaming,
committing), the lock is released, no pooled connection is left checked out
or holding an unread reply, nothing partial is written, and the next turn on
the session works. A cancellation during the commit waits (boundedly) until
the commit is finished or settled by turn id, then is re-raised. Also a regression test for
CVE-2023-28858/28859: a cancelled command must never leave its reply to be
read by the next command on the same connection.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING

import pytest
import redis.asyncio as aioredis

from promptkit_async import RedisStore, Session
from promptkit_async.providers import ScriptedProvider

from .conftest import assert_pool_clean, contents, through, wait_until
from .samples import a, u

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from .faults import FaultProxy

pytestmark = pytest.mark.redis

COMMIT = b"EVALSHA"
LOAD = b"LRANGE"


@pytest.fixture
async def store(proxy: FaultProxy, redis_url: str, prefix: str) -> AsyncIterator[RedisStore]:
    async with RedisStore.from_url(through(proxy, redis_url), prefix=prefix) as s:
        await s.append("s", [u("q0"), a("a0")], turn_id="t0")  # also caches the scripts
        yield s


async def next_turn_works(store: RedisStore, expected_before: list[str]) -> None:
    assert len(store.locks) == 0
    async with Session(store, "s", lock_timeout=5, max_messages=None) as s:
        assert [m.content for m in s.history] == expected_before
        s.add(u("next"))
    assert await contents(store, "s") == [*expected_before, "next"]


async def cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_cancel_while_waiting_for_the_lock(store: RedisStore, truth: RedisStore) -> None:
    inside = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with Session(store, "s") as s:
            inside.set()
            await release.wait()
            s.add(u("holder"))

    async def waiter() -> None:
        async with Session(store, "s") as s:
            s.add(u("waiter"))

    h = asyncio.create_task(holder())
    await inside.wait()
    w = asyncio.create_task(waiter())
    await wait_until(lambda: store.locks._entries["s"].users == 2)
    await cancelled(w)
    release.set()
    await h
    assert await contents(truth, "s") == ["q0", "a0", "holder"]
    await assert_pool_clean(store)
    await next_turn_works(store, ["q0", "a0", "holder"])


async def test_cancel_while_loading(
    store: RedisStore, truth: RedisStore, proxy: FaultProxy
) -> None:
    proxy.reply_delay = 0.5
    loads = proxy.count(LOAD)

    async def turn() -> None:
        async with Session(store, "s") as s:
            s.add(u("never"))

    task = asyncio.create_task(turn())
    await wait_until(lambda: proxy.count(LOAD) > loads)  # the LRANGE is on the wire
    await cancelled(task)
    assert len(store.locks) == 0
    await assert_pool_clean(store)
    await asyncio.sleep(0.6)  # the delayed reply has arrived by now: still nobody's
    await assert_pool_clean(store)
    proxy.heal()
    assert await contents(truth, "s") == ["q0", "a0"]
    await next_turn_works(store, ["q0", "a0"])


async def test_cancel_while_streaming(store: RedisStore, truth: RedisStore) -> None:
    provider = ScriptedProvider(["word " * 200], delay=0.01)
    pieces: list[str] = []

    async def turn() -> None:
        async with Session(store, "s", provider=provider) as s:
            async for text in s.stream("hello"):
                pieces.append(text)  # noqa: PERF401 - the test watches it grow

    task = asyncio.create_task(turn())
    await wait_until(lambda: len(pieces) >= 3)
    await cancelled(task)
    assert 3 <= len(pieces) < 200
    assert await contents(truth, "s") == ["q0", "a0"]
    await assert_pool_clean(store)
    await next_turn_works(store, ["q0", "a0"])


@pytest.mark.parametrize("cancels", [1, 2, 5])
@pytest.mark.parametrize("held", [b"q1", COMMIT])
async def test_cancel_during_the_commit_settles_it_then_reraises(
    store: RedisStore, truth: RedisStore, proxy: FaultProxy, cancels: int, held: bytes
) -> None:
    # Held in the network long enough to be cancelled mid-flight: the commit alone
    # (b"q1": its messages), or every script call, the settling check included.
    proxy.request_delay = 0.4
    proxy.delay_match = held
    commits = proxy.count(COMMIT)

    async def turn() -> None:
        async with Session(store, "s", max_messages=None) as s:
            s.add(u("q1"), a("a1"))

    task = asyncio.create_task(turn())
    await wait_until(lambda: proxy.count(COMMIT) > commits)
    started = time.monotonic()
    for _ in range(cancels):  # plain Task.cancel(), repeatedly, while it waits
        task.cancel()
        await asyncio.sleep(0.05)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 5  # the commit's own time, not the 10 s grace
    # Re-raised only once the turn was decided: stored whole, or not at all...
    decided = await contents(truth, "s")
    assert decided in (["q0", "a0"], ["q0", "a0", "q1", "a1"])
    assert len(store.locks) == 0
    await assert_pool_clean(store)
    # ...for good: the copy still held in the network, once it lands, changes nothing.
    await wait_until(lambda: any(b"q1" in c for c in proxy.forwarded))
    await asyncio.sleep(0.3)  # ample for a loopback Redis to run it
    assert await contents(truth, "s") == decided
    proxy.heal()
    await next_turn_works(store, decided)


async def test_cancel_during_a_commit_slower_than_the_grace_is_bounded(
    store: RedisStore,
    truth: RedisStore,
    proxy: FaultProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy.request_delay = 1.0
    proxy.delay_match = COMMIT
    commits = proxy.count(COMMIT)

    async def turn() -> None:
        async with Session(store, "s", max_messages=None, commit_grace=0.2) as s:
            s.add(u("q1"), a("a1"))

    task = asyncio.create_task(turn())
    await wait_until(lambda: proxy.count(COMMIT) > commits)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert time.monotonic() - started < 0.9  # bounded by commit_grace, not by the network
    assert "outcome unknown" in caplog.text
    assert len(store.locks) == 0
    await assert_pool_clean(store)
    # The held commit reaches Redis after all: the turn is there whole or not at all,
    # and never twice.
    await wait_until(lambda: any(b"q1" in c for c in proxy.forwarded))
    await asyncio.sleep(0.2)
    stored = await contents(truth, "s")
    assert stored in (["q0", "a0"], ["q0", "a0", "q1", "a1"])
    proxy.heal()
    await next_turn_works(store, stored)


async def test_cancelled_commands_never_hand_their_reply_to_the_next_caller(
    proxy: FaultProxy, redis_url: str
) -> None:
    """CVE-2023-28858/28859: cancel commands mid-flight, check every later reply."""
    rng = random.Random(2023)
    proxy.reply_delay = 0.005
    # Connections are reused as soon as they are given back, so the commands that
    # follow a cancellation run on the very connections it interrupted.
    client = aioredis.Redis.from_url(through(proxy, redis_url))
    mismatches: list[tuple[str, object]] = []
    completed = cancelled_count = 0

    async def echo(token: str) -> None:
        nonlocal completed
        reply = await client.echo(token)
        completed += 1
        if reply != token.encode():
            mismatches.append((token, reply))

    try:
        for round_ in range(6):
            tasks = [asyncio.create_task(echo(f"r{round_}-{i}")) for i in range(40)]
            await asyncio.sleep(rng.uniform(0.0, 0.02))
            for task in tasks:
                if rng.random() < 0.5:
                    task.cancel()
            for result in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(result, asyncio.CancelledError):
                    cancelled_count += 1
                elif isinstance(result, BaseException):
                    raise result
            # Straight after the cancellations, on the same few connections:
            for i in range(20):
                await echo(f"check{round_}-{i}")
        assert cancelled_count > 0
        assert completed > 120
        assert mismatches == []
        await assert_pool_clean(client)
    finally:
        await client.aclose()


async def test_cancelled_loads_never_return_another_sessions_history(
    proxy: FaultProxy, redis_url: str, prefix: str
) -> None:
    rng = random.Random(28859)
    client = aioredis.Redis.from_url(through(proxy, redis_url))
    try:
        store = RedisStore(client, prefix=prefix)
        ids = [f"s{i}" for i in range(8)]
        for sid in ids:
            await store.append(sid, [u(f"{sid}-only")])
        proxy.reply_delay = 0.005
        wrong: list[tuple[str, list[str]]] = []

        async def load(sid: str) -> None:
            got = await contents(store, sid)
            if got != [f"{sid}-only"]:
                wrong.append((sid, got))

        for _ in range(8):
            tasks = [asyncio.create_task(load(rng.choice(ids))) for _ in range(30)]
            await asyncio.sleep(rng.uniform(0.0, 0.02))
            for task in tasks:
                if rng.random() < 0.5:
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for sid in ids:
                await load(sid)
        assert wrong == []
        await assert_pool_clean(store)
    finally:
        await client.aclose()
