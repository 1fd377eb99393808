"""Cancellations and deadlines that take effect, on every Python and event loop.

A turn cancelled while it talks to Redis must end with CancelledError (a
cancellation during the commit is settled first, then re-raised), an expired
``asyncio.timeout`` around a turn must raise, and the store's own per-call
deadline must still hold, without a Task per command. CI runs this module on
every supported Python, with asyncio and with uvloop.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
from typing import TYPE_CHECKING

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from promptkit_async import RedisStore, Session, StoreUnavailable
from promptkit_async.stores._redis._deadlines import (
    DeadlineConnection,
    DeadlineSSLConnection,
    DeadlineUnixConnection,
)

from ..conftest import assert_pool_clean, contents, through
from ..samples import a, u

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from ..cluster import ClusterServers
    from ..faults import FaultProxy

TRIALS = 300


@pytest.fixture
async def store(redis_url: str, prefix: str) -> AsyncIterator[RedisStore]:
    # As applications build it: from_url, with its default socket timeout set.
    async with RedisStore.from_url(redis_url, prefix=prefix) as s:
        yield s


async def _turn(store: RedisStore, session_id: str) -> None:
    async with Session(store, session_id, max_messages=4) as s:
        s.add(u("q"), a("r"))


async def test_a_cancelled_turn_never_runs_on(store: RedisStore) -> None:
    rng = random.Random(7)
    lost = honoured = 0
    for i in range(TRIALS):
        session_id = f"c{i % 8}"
        task = asyncio.create_task(_turn(store, session_id))
        # Let it get into the lock, the load or the commit, at a random point.
        for _ in range(rng.randrange(0, 12)):
            await asyncio.sleep(0)
        if task.done():
            continue
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            honoured += 1
        else:
            lost += 1
    assert lost == 0, f"{lost} of {lost + honoured} cancellations were swallowed"
    assert honoured > TRIALS // 2
    assert len(store.locks) == 0
    await assert_pool_clean(store)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is 3.11+")
async def test_an_expired_timeout_around_a_turn_always_raises(store: RedisStore) -> None:
    # A timeout that cancelled the turn (expired) must surface as TimeoutError: a turn
    # that returned normally after its cancellation was delivered swallowed it. (A
    # turn that ran past its deadline without suspending again was never cancelled:
    # asyncio cancels at an await, so the wall time alone proves nothing.)
    rng = random.Random(11)
    ignored = fired = 0
    for i in range(TRIALS):
        budget = rng.uniform(0, 0.002)
        if sys.version_info >= (3, 11):  # for the type checker (the test skips on 3.10)
            try:
                async with asyncio.timeout(budget) as deadline:
                    await _turn(store, f"t{i % 8}")
            except TimeoutError:
                fired += 1
            else:
                if deadline.expired():  # cancelled, and the turn returned as if not
                    ignored += 1
    assert ignored == 0, f"{ignored} expired timeouts were ignored ({fired} fired)"
    assert fired > 0
    assert len(store.locks) == 0


async def test_a_turn_costs_no_task_per_command(store: RedisStore) -> None:
    loop = asyncio.get_running_loop()
    created: list[object] = []
    default = loop.get_task_factory()

    def counting(loop: asyncio.AbstractEventLoop, coro: object, **kwargs: object) -> object:
        created.append(coro)
        if default is None:
            return asyncio.Task(coro, loop=loop, **kwargs)  # type: ignore[arg-type]
        return default(loop, coro, **kwargs)  # type: ignore[arg-type]

    await _turn(store, "warm")  # connects, loads the scripts
    loop.set_task_factory(counting)  # type: ignore[arg-type]
    try:
        for _ in range(5):
            await _turn(store, "warm")
    finally:
        loop.set_task_factory(default)
    assert created == []


async def test_the_per_call_deadline_still_holds(
    proxy: FaultProxy, redis_url: str, prefix: str, truth: RedisStore
) -> None:
    async with RedisStore.from_url(
        through(proxy, redis_url), prefix=prefix, socket_timeout=0.2, retries=0
    ) as slow:
        await slow.append("s", [u("before")])
        proxy.blackhole()  # the server never answers: only the deadline ends the wait
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(StoreUnavailable, match="Timeout"):
            await slow.load("s")
        assert loop.time() - started < 2
        proxy.heal()
        assert await contents(truth, "s") == ["before"]


def test_from_url_builds_deadline_keeping_connections(tmp_path: Path) -> None:
    plain = RedisStore.from_url("redis://127.0.0.1:1/0")
    tls = RedisStore.from_url("rediss://127.0.0.1:1/0")
    unix = RedisStore.from_url(f"unix://{tmp_path / 'redis.sock'}")
    for store, cls in (
        (plain, DeadlineConnection),
        (tls, DeadlineSSLConnection),
        (unix, DeadlineUnixConnection),
    ):
        client = store.client
        assert isinstance(client, aioredis.Redis)
        pool = client.connection_pool
        assert pool.connection_class is cls
        connection = pool.make_connection()  # type: ignore[no-untyped-call]
        assert connection.socket_timeout is None  # redis-py adds no wait_for
        assert connection.deadline == 5.0  # the store's own timer keeps it


async def test_every_cluster_connection_keeps_its_deadline_by_timer(
    redis_cluster: ClusterServers, prefix: str
) -> None:
    url = f"redis+cluster://127.0.0.1:{redis_cluster.ports[0]}"
    async with RedisStore.from_url(url, prefix=prefix) as store:
        for i in range(30):  # sessions on every node
            await _turn(store, f"s{i}")
        client = store.client
        assert isinstance(client, RedisCluster)
        connections = [c for node in client.get_nodes() for c in node._connections]
        assert connections
        assert all(type(c) is DeadlineConnection for c in connections)
        for i in range(30):
            await store.delete(f"s{i}")


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for keeps cancellations on 3.12+")
def test_a_borrowed_client_that_can_lose_cancellations_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    risky = aioredis.Redis(host="127.0.0.1", port=1, socket_timeout=5)
    with caplog.at_level(logging.WARNING):
        RedisStore(risky)
    assert "asyncio.wait_for" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        RedisStore(aioredis.Redis(host="127.0.0.1", port=1, socket_timeout=None))
        RedisStore.from_url("redis://127.0.0.1:1/0")
    assert caplog.text == ""
