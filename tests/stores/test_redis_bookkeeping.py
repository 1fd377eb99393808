"""When the keys the store relies on are evicted or written by others, it says so.

Exactly-once commits rely on the session's turn ids, and the near cache on
its version and length. When Redis evicts them (``maxmemory`` with an
``allkeys-*`` or ``volatile-*`` policy) or a foreign client writes into them,
the store detects it: a re-sent or settled commit that can no longer tell
whether it applied is CommitOutcomeUnknown (never applied twice, never "not
saved" when it was), and a cached window is reloaded rather than served.
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING, Any

import pytest
import redis
import redis.asyncio as aioredis

from promptkit_async import CommitOutcomeUnknown, RedisStore, Session

from ..conftest import contents, through
from ..samples import a, u

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..conftest import RedisServer
    from ..faults import FaultProxy

COMMIT = b"EVALSHA"


def _evict(url: str, *keys: bytes) -> Callable[[], None]:
    """What eviction does, at the moment a test chooses: the keys vanish."""

    def run() -> None:
        with redis.Redis.from_url(url) as r:
            r.delete(*keys)

    return run


async def test_a_resent_commit_whose_turn_ids_were_evicted_never_applies_twice(
    proxy: FaultProxy, redis_url: str, prefix: str, truth: RedisStore
) -> None:
    async with RedisStore.from_url(through(proxy, redis_url), prefix=prefix, retries=2) as store:
        await store.append("s", [u("warm-up")])
        # The commit runs, its reply is lost, and the turn ids go before the re-send.
        proxy.drop_reply(COMMIT, then=_evict(redis_url, store.key("s", "t")))
        with pytest.raises(CommitOutcomeUnknown) as info:
            await store.append("s", [u("q"), a("r")], turn_id="t1")
        assert info.value.turn_id == "t1"
        assert await contents(truth, "s") == ["warm-up", "q", "r"]  # once


async def test_settling_without_the_turn_ids_is_unknown_not_not_saved(
    proxy: FaultProxy, redis_url: str, prefix: str, truth: RedisStore
) -> None:
    async with RedisStore.from_url(through(proxy, redis_url), prefix=prefix, retries=0) as store:
        await store.append("s", [u("warm-up")])
        proxy.drop_reply(COMMIT, then=_evict(redis_url, store.key("s", "t")))
        # It applied; "not saved" would be a lie a retrying caller pays for twice.
        with pytest.raises(CommitOutcomeUnknown):
            await store.append("s", [u("q")], turn_id="t1")
        assert await contents(truth, "s") == ["warm-up", "q"]
        with pytest.raises(CommitOutcomeUnknown):
            await store.settle_turn("s", "t1")
        assert await store.turn_status("s", "t1") == "unknown"
        # A new turn goes through: nothing is stuck.
        await store.append("s", [u("next")])
        assert await contents(truth, "s") == ["warm-up", "q", "next"]


async def test_an_evicted_history_is_never_served_from_the_near_cache(
    redis_url: str, prefix: str, truth: RedisStore
) -> None:
    async with RedisStore.from_url(redis_url, prefix=prefix, near_cache=10) as store:
        async with Session(store, "s") as s:
            s.add(u("one"))
        async with Session(store, "s") as s:  # cached now
            s.add(u("two"))
        async with Session(store, "s") as s:  # a cache hit...
            assert [m.content for m in s.history] == ["one", "two"]
            # ...then the history is evicted (its turn ids are not) before the commit.
            await truth.client.delete(store.key("s"))
            s.add(u("three"))
        async with Session(store, "s") as s:
            assert [m.content for m in s.history] == await contents(truth, "s") == ["three"]


async def test_a_foreign_rpush_is_seen_through_the_near_cache(
    redis_url: str, prefix: str, truth: RedisStore
) -> None:
    # The version and length check of a checked load (tracking off): with tracking the
    # foreign write's invalidation is what is seen (test_redis_tracking.py).
    async with RedisStore.from_url(
        redis_url, prefix=prefix, near_cache=10, tracking=False
    ) as store:
        async with Session(store, "s") as s:
            s.add(u("ours"))
        assert [m.content for m in await store.load("s")] == ["ours"]  # cached
        await truth.client.rpush(store.key("s"), b'{"v":1,"r":"user","c":"foreign"}')
        assert [m.content for m in await store.load("s")] == ["ours", "foreign"]


async def test_a_foreign_member_with_a_huge_score_freezes_nothing(
    redis_url: str, prefix: str, truth: RedisStore
) -> None:
    async with (
        RedisStore.from_url(redis_url, prefix=prefix, near_cache=10, tracking=False) as one,
        RedisStore.from_url(redis_url, prefix=prefix, near_cache=10, tracking=False) as two,
    ):
        await one.append("s", [u("first")], turn_id="t-first")
        await truth.client.zadd(one.key("s", "t"), {"foreign": 1e300})
        assert [m.content for m in await one.load("s")] == ["first"]  # cached by one
        await two.append("s", [u("by two")])
        # one sees two's write: the version moved despite the foreign member.
        assert [m.content for m in await one.load("s")] == ["first", "by two"]
        for i in range(40):  # recent turn ids are all remembered...
            await two.append("s", [u(f"m{i}")], turn_id=f"t{i}")
        await one.append("s", [u("first")], turn_id="t-first")  # ...so a re-send is a no-op
        await two.append("s", [u("m0")], turn_id="t0")
        stored = await contents(truth, "s")
        assert stored.count("first") == 1 and stored.count("m0") == 1


async def test_a_lease_key_without_a_ttl_expires_instead_of_blocking_forever(
    redis_url: str, prefix: str, truth: RedisStore
) -> None:
    store = RedisStore(
        aioredis.Redis.from_url(redis_url), prefix=prefix, distributed_lock=True, lease_ttl=0.3
    )
    try:
        await truth.client.set(store.key("s", "l"), b"left by a crashed tool")  # no TTL

        async def turn() -> None:
            async with Session(store, "s") as s:  # lock_timeout=None: waits as long as needed
                s.add(u("through"))

        await asyncio.wait_for(turn(), 5)  # not forever: the stray key expires
        assert await contents(truth, "s") == ["through"]
    finally:
        await truth.client.delete(store.key("s", "l"))
        await store.client.aclose()


@pytest.mark.parametrize("tracking", [False, True], ids=["checked", "tracking"])
async def test_the_near_cache_under_real_eviction_pressure_is_never_stale(
    spawn_server: Callable[..., RedisServer], prefix: str, tracking: bool
) -> None:
    srv = spawn_server("--maxmemory", "3mb", "--maxmemory-policy", "allkeys-lru")
    rng = random.Random(5)
    filler = aioredis.Redis.from_url(srv.url)
    served = stale = 0
    # With tracking, a window may be served while the eviction's invalidation is
    # still on its way (documented, see _tracking): every window is then checked
    # once the invalidations have arrived, below, instead of at once.
    options: dict[str, Any] = {"near_cache": 100, "tracking": tracking}
    async with (
        RedisStore.from_url(srv.url, prefix=prefix, **options) as one,
        RedisStore.from_url(srv.url, prefix=prefix, **options) as two,
    ):
        try:
            for turn in range(300):
                store = one if rng.random() < 0.5 else two
                session_id = f"s{rng.randrange(20)}"
                async with Session(store, session_id, max_messages=None) as s:
                    window = [m.content for m in s.history]
                    raw = await filler.lrange(store.key(session_id), 0, -1)
                    truth = [_text(r) for r in raw]
                    served += 1
                    stale += window != truth and not tracking
                    # Memory pressure between the load and the commit: junk that
                    # evicts whatever the LRU picks, this session's keys included.
                    for j in range(rng.randrange(4)):
                        await filler.set(f"junk:{turn}:{j}", b"x" * 30_000)
                    s.add(u(f"{session_id}-{turn}"))
            # Once every invalidation has arrived (a fence: a write whose own
            # invalidation both stores receive comes after all earlier ones),
            # every load of either store is what Redis holds.
            for store in (one, two):
                assert await store.load("fence", 1) == []  # cached (and tracked) empty
            await filler.rpush(one.key("fence"), b'{"v":1,"r":"user","c":"fence"}')
            for store in (one, two):
                for _ in range(500):  # until the fence's own invalidation has arrived
                    if [m.content for m in await store.load("fence", 1)] == ["fence"]:
                        break
                    await asyncio.sleep(0.01)
                else:
                    raise AssertionError("the fence's invalidation never arrived")
            for session_id in [f"s{i}" for i in range(20)]:
                raw = await filler.lrange(one.key(session_id), 0, -1)
                truth = [_text(r) for r in raw]
                for store in (one, two):
                    window = [m.content for m in await store.load(session_id)]
                    assert window == truth, (store, session_id)
        finally:
            await filler.aclose()
    assert served == 300
    assert stale == 0, f"{stale} of {served} windows served differed from Redis"


def _text(record: bytes | str) -> str:
    from promptkit_async._codec import decode_message

    return decode_message(record, session_id="s", index=0).text
