"""Redis outages for real: refused connections, blackholes, restarts, kill -9 with AOF."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest

from promptkit_async import (
    CommitOutcomeUnknown,
    RedisStore,
    Session,
    StoreUnavailable,
)

from ..conftest import RedisServer, assert_pool_clean, contents, through, wait_until
from ..samples import a, u

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..faults import FaultProxy


async def test_refused_connection_is_store_unavailable_quickly(
    proxy: FaultProxy, redis_url: str, prefix: str, truth: RedisStore
) -> None:
    async with RedisStore.from_url(through(proxy, redis_url), prefix=prefix) as store:
        await store.append("s", [u("before")])
        await proxy.refuse()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            async with Session(store, "s"):
                pass
        with pytest.raises(StoreUnavailable) as info:
            async with Session(store, "s", lazy=True) as s:
                s.add(u("q"), a("r"))
        assert time.monotonic() - started < 10  # default timeouts: a few quick retries
        assert info.value.unsaved == (u("q"), a("r"))
        assert info.value.session_id == "s"
        assert len(store.locks) == 0
        await proxy.accept()
        assert await contents(truth, "s") == ["before"]
        # The same store object works again as soon as Redis is reachable.
        async with Session(store, "s") as s:
            s.add(u("after"))
        assert await contents(truth, "s") == ["before", "after"]
        await assert_pool_clean(store)


async def test_blackholed_redis_is_store_unavailable_within_the_timeouts(
    proxy: FaultProxy, redis_url: str, prefix: str, truth: RedisStore
) -> None:
    async with RedisStore.from_url(
        through(proxy, redis_url),
        prefix=prefix,
        socket_timeout=0.3,
        connect_timeout=0.3,
        retries=1,
    ) as store:
        await store.append("s", [u("before")])
        proxy.blackhole()  # connections are accepted, nothing is ever answered
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.load("s")
        # The commit was sent into the void: its outcome is unknown, not "not saved".
        with pytest.raises(CommitOutcomeUnknown) as info:
            async with Session(store, "s", lazy=True) as s:
                s.add(u("q"))
        assert time.monotonic() - started < 15
        assert info.value.unsaved == (u("q"),)
        proxy.heal()
        # Nothing arrived, so nothing is stored (unknown outcome means "at most once").
        assert await contents(truth, "s") == ["before"]
        async with Session(store, "s") as s:
            s.add(u("after"))
        assert await contents(truth, "s") == ["before", "after"]


async def test_same_store_recovers_after_a_redis_restart(
    spawn_server: Callable[..., RedisServer], prefix: str
) -> None:
    srv = spawn_server()
    async with RedisStore.from_url(
        srv.url, prefix=prefix, socket_timeout=1, connect_timeout=1
    ) as store:
        async with Session(store, "s") as s:
            s.add(u("one"))
        srv.kill()
        # Not stored, or (sent on a connection that died with the server) not known:
        # either way the messages come back, and the turn is never stored twice.
        with pytest.raises((StoreUnavailable, CommitOutcomeUnknown)) as info:
            async with Session(store, "s", lazy=True) as s:
                s.add(u("two"))
        assert isinstance(info.value, (StoreUnavailable, CommitOutcomeUnknown))
        assert info.value.unsaved == (u("two"),)
        srv.start()  # same port; this server keeps no data across restarts
        async with Session(store, "s") as s:
            assert s.history == ()
            s.add(u("three"))
        assert await contents(store, "s") == ["three"]
        await assert_pool_clean(store)


async def test_aof_always_keeps_every_acknowledged_turn_across_kill_9(
    spawn_server: Callable[..., RedisServer], prefix: str
) -> None:
    srv = spawn_server("--appendonly", "yes", "--appendfsync", "always")
    acked: dict[str, list[str]] = {}
    failed: set[str] = set()
    unknown: set[str] = set()
    in_flight = asyncio.Event()

    async def writer(store: RedisStore, sid: str) -> None:
        acked[sid] = []
        for i in range(10_000):
            turn = f"{sid}-{i}"
            try:
                in_flight.set()
                await store.append(sid, [u(turn)], max_messages=None, turn_id=turn)
            except CommitOutcomeUnknown:
                unknown.add(turn)
                return
            except StoreUnavailable:
                failed.add(turn)
                return
            acked[sid].append(turn)

    async with RedisStore.from_url(
        srv.url, prefix=prefix, retries=0, socket_timeout=1, connect_timeout=1
    ) as store:
        tasks = [asyncio.create_task(writer(store, f"s{k}")) for k in range(4)]
        await in_flight.wait()
        await wait_until(lambda: sum(map(len, acked.values())) >= 40)
        srv.kill()  # SIGKILL with commits in flight
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        srv.start()
        total = 0
        for sid, turns in acked.items():
            stored = await contents(store, sid)
            assert stored[: len(turns)] == turns, sid  # every acknowledged turn, in order
            extra = stored[len(turns) :]
            assert len(extra) <= 1 and set(extra) <= unknown, (sid, extra)
            assert not set(stored) & failed
            total += len(turns)
        assert total >= 40
