"""The exactly-once commit on a real server: lost replies, settling by turn id, refusals."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest
import redis.asyncio as aioredis

from promptkit_async import (
    CommitOutcomeUnknown,
    Conversations,
    Message,
    RedisStore,
    Session,
    StoreError,
    StoreRejected,
    StoreUnavailable,
)

from ..conftest import RedisServer, assert_pool_clean, contents, through, wait_until
from ..samples import a, u

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..faults import FaultProxy


#: Matches the commit script call on the wire (loads use LRANGE, nothing else uses EVALSHA
#: once the scripts are cached by a warm-up commit).
COMMIT = b"EVALSHA"


@pytest.mark.parametrize("retries", [0, 2])
async def test_lost_commit_reply_is_settled_and_applied_once(
    proxy: FaultProxy, redis_url: str, prefix: str, truth: RedisStore, retries: int
) -> None:
    async with RedisStore.from_url(
        through(proxy, redis_url), prefix=prefix, retries=retries
    ) as store:
        await store.append("s", [u("warm-up")], turn_id="t0")
        sent = proxy.count(COMMIT)
        proxy.drop_reply(COMMIT)
        await store.append("s", [u("q"), a("r")], turn_id="t1")  # no error: settled
        assert proxy.dropped_replies == 1
        if retries:
            # The store itself re-sent the commit after the lost reply: applied once.
            assert proxy.count(COMMIT) - sent == 2
        assert await contents(truth, "s") == ["warm-up", "q", "r"]
        assert await store.turn_status("s", "t1") == "applied"
        await store.append("s", [u("q"), a("r")], turn_id="t1")  # an explicit re-send
        assert await contents(truth, "s") == ["warm-up", "q", "r"]
        await assert_pool_clean(store)


async def test_default_client_retries_never_duplicate_a_session_turn(
    proxy: FaultProxy, redis_url: str, prefix: str, truth: RedisStore
) -> None:
    # A user-supplied client with redis-py's own default retry policy.
    client = aioredis.Redis.from_url(through(proxy, redis_url))
    try:
        store = RedisStore(client, prefix=prefix)
        await store.append("warm", [u("x")])
        for i in range(3):
            proxy.drop_reply(COMMIT)
            async with Session(store, "s", max_messages=None) as s:
                s.add(u(f"q{i}"), a(f"a{i}"))
            assert proxy.reply_dropped.is_set()
        chats = Conversations(store, owns=False)
        proxy.drop_reply(COMMIT)
        assert await chats.execute("s", "system", "logged in") is None
        assert await contents(truth, "s") == ["q0", "a0", "q1", "a1", "q2", "a2", "logged in"]
        assert proxy.dropped_replies == 4
        await assert_pool_clean(client)
    finally:
        await client.aclose()


@pytest.mark.parametrize("retries", [0, 2])
@pytest.mark.parametrize("after", ["blackhole", "refuse"])
async def test_unresolvable_lost_reply_is_commit_outcome_unknown(
    proxy: FaultProxy, redis_url: str, prefix: str, truth: RedisStore, retries: int, after: str
) -> None:
    async with RedisStore.from_url(
        through(proxy, redis_url),
        prefix=prefix,
        retries=retries,
        socket_timeout=0.3,
        connect_timeout=0.3,
    ) as store:
        await store.append("s", [u("warm-up")], turn_id="t0")
        # The commit runs, its reply is lost, and Redis is unreachable right after,
        # for the client's own retries as well as for the check by turn id.
        proxy.drop_reply(COMMIT, then=proxy.blackhole if after == "blackhole" else proxy.refuse_now)
        batch = [u("q"), a("r")]
        started = time.monotonic()
        with pytest.raises(CommitOutcomeUnknown) as info:
            await store.append("s", batch, turn_id="t1")
        assert time.monotonic() - started < 15  # bounded by the timeouts and retries
        err = info.value
        # "maybe stored" is not "not stored": a handler retrying on
        # StoreUnavailable must not re-send this turn blindly.
        assert not isinstance(err, StoreUnavailable)
        assert isinstance(err, StoreError)
        assert err.turn_id == "t1"
        assert err.session_id == "s"
        assert err.unsaved == tuple(batch)
        assert "t1" in str(err)
        proxy.heal()
        await proxy.accept()
        # The server did run it: stored once (never twice), and checkable later.
        assert await contents(truth, "s") == ["warm-up", "q", "r"]
        assert await store.turn_status("s", "t1") == "applied"
        await store.append("s", batch, turn_id="t1")  # retrying the same turn is safe
        assert await contents(truth, "s") == ["warm-up", "q", "r"]


async def test_commit_that_never_arrived_is_settled_as_not_saved(
    proxy: FaultProxy, redis_url: str, prefix: str, truth: RedisStore
) -> None:
    async with RedisStore.from_url(through(proxy, redis_url), prefix=prefix, retries=0) as store:
        await store.append("s", [u("warm-up")], turn_id="t0")
        proxy.drop_request(COMMIT)  # the connection is cut before the command is passed on
        with pytest.raises(StoreUnavailable) as info:
            await store.append("s", [u("lost")], turn_id="t1")
        assert not isinstance(info.value, CommitOutcomeUnknown)
        assert info.value.unsaved == (u("lost"),)
        assert await contents(truth, "s") == ["warm-up"]
        assert await store.turn_status("s", "t1") == "aborted"
        # A copy of that commit arriving later can never apply.
        with pytest.raises(StoreUnavailable, match="aborted"):
            await store.append("s", [u("lost")], turn_id="t1")
        assert await contents(truth, "s") == ["warm-up"]


async def test_late_copy_of_a_settled_commit_never_applies(
    proxy: FaultProxy, redis_url: str, prefix: str, truth: RedisStore
) -> None:
    async with RedisStore.from_url(
        through(proxy, redis_url), prefix=prefix, retries=0, socket_timeout=0.3
    ) as store:
        await store.append("s", [u("warm-up")], turn_id="t0")
        # Hold the commit (it carries the message text; the check by turn id does not)
        # in the network past the client's timeout.
        proxy.request_delay = 1.0
        proxy.delay_match = b"late-copy"
        with pytest.raises(StoreUnavailable) as info:
            await store.append("s", [u("late-copy")], turn_id="t1")
        # The check ran first and fenced the turn: a definite "not saved".
        assert not isinstance(info.value, CommitOutcomeUnknown)
        assert await store.turn_status("s", "t1") == "aborted"
        answered = len(proxy.replies)
        await wait_until(lambda: any(b"late-copy" in c for c in proxy.forwarded))
        await wait_until(lambda: len(proxy.replies) > answered)  # Redis ran the late copy
        assert await contents(truth, "s") == ["warm-up"]


async def test_out_of_memory_is_store_rejected_and_writes_nothing(
    spawn_server: Callable[..., RedisServer], prefix: str
) -> None:
    srv = spawn_server("--maxmemory-policy", "noeviction")
    admin = aioredis.Redis.from_url(srv.url)
    try:
        async with RedisStore.from_url(srv.url, prefix=prefix) as store:
            async with Session(store, "s") as s:
                s.add(u("kept"))
            h, t = store.key("s"), store.key("s", "t")
            before = (await admin.dump(h), await admin.dump(t))
            await admin.config_set("maxmemory", "1")  # every write is now refused
            with pytest.raises(StoreRejected, match="out of memory") as info:
                async with Session(store, "s", max_messages=None) as s:
                    s.add(u("q"), a("r"))
            assert info.value.unsaved == (u("q"), a("r"))
            big = [u(f"m{i}") for i in range(1200)]  # more than one RPUSH inside the script
            with pytest.raises(StoreRejected):
                await store.append("s", big, max_messages=None, turn_id="big")
            with pytest.raises(StoreRejected):
                await store.append("new", [u("x")])
            assert (await admin.dump(h), await admin.dump(t)) == before
            assert not await admin.exists(store.key("new"), store.key("new", "t"))
            assert await store.turn_status("s", "big") == "unknown"
            assert len(store.locks) == 0
            await admin.config_set("maxmemory", "0")
            async with Session(store, "s", max_messages=None) as s:
                assert [m.content for m in s.history] == ["kept"]
                s.add(u("after"))
            assert await contents(store, "s") == ["kept", "after"]
    finally:
        await admin.aclose()


async def test_every_key_a_commit_writes_expires(
    redis_client: aioredis.Redis, prefix: str, truth: RedisStore
) -> None:
    await truth.append("a", [u("x")], ttl=60)
    await truth.append("b", [u("y")], ttl=120)
    keys = [k async for k in redis_client.scan_iter(match=f"{prefix}:*")]
    assert len(keys) >= 4
    registry = f"{prefix}:index:slots".encode()
    for key in keys:
        # The registry of indexed slots covers a refresh window past the TTL (see _index).
        longest = 240_000 if key == registry else 120_000
        assert 0 < await redis_client.pttl(key) <= longest, key
    # A session kept forever keeps its keys (and the index listing it) forever.
    await truth.append("c", [u("z")], ttl=None)
    assert await redis_client.pttl(truth.key("c")) == -1


async def test_a_connection_torn_down_inside_redis_py_is_a_store_error(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py's Cluster client can lose a connection's writer mid-send (AttributeError)."""
    from redis.asyncio.connection import Connection

    client = aioredis.Redis.from_url(redis_url)
    store = RedisStore(client, prefix=prefix)
    real: Any = client.execute_command
    broken = {"EVALSHA": 1, "LRANGE": 1}

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        name = args[0]
        if broken.get(name):
            broken[name] -= 1
            await Connection()._send_packed_command([b"PING"])  # the writer is None
        return await real(*args, **kwargs)

    monkeypatch.setattr(client, "execute_command", flaky)
    try:
        with pytest.raises(StoreUnavailable, match="connection broke"):
            await store.load("s")
        # The commit's outcome was unknown: it is settled by turn id (here: never
        # sent, so aborted for good) and reported as not saved.
        with pytest.raises(StoreUnavailable) as info:
            await store.append("s", [Message.user("x")], turn_id="t1")
        assert info.value.unsaved == (Message.user("x"),)
        assert await store.turn_status("s", "t1") == "aborted"
        await store.append("s", [Message.user("y")])
        assert [m.content for m in await store.load("s")] == ["y"]
    finally:
        await store.delete("s")
        await client.delete(f"{prefix}:index")
        await client.aclose()


async def test_a_store_that_cannot_connect_says_not_saved_not_unknown() -> None:
    from ..conftest import free_port

    store = RedisStore.from_url(
        f"redis://127.0.0.1:{free_port()}/0", connect_timeout=0.5, retries=2
    )
    async with store:
        with pytest.raises(StoreUnavailable) as info:
            await store.append("s", [Message.user("x")])
        assert not isinstance(info.value, CommitOutcomeUnknown)
        assert "not saved" in str(info.value)
        assert info.value.unsaved == (Message.user("x"),)
        with pytest.raises(StoreUnavailable):
            await store.load("s")


async def test_the_store_resends_a_commit_whose_reply_was_lost(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RedisStore.from_url(redis_url, prefix=prefix, retries=2)
    # The loss is injected in execute_command: the path every command takes
    # when the store's own lane is off (a borrowed client's path).
    store._link.lane = False
    client: Any = store.client
    real = client.execute_command
    sent: list[str] = []

    async def lossy(*args: Any, **kwargs: Any) -> Any:
        result = await real(*args, **kwargs)
        if args[0] == "EVALSHA" and not sent:
            sent.append("lost")
            raise ConnectionError("reply lost")  # applied, reply never seen
        return result

    monkeypatch.setattr(client, "execute_command", lossy)
    async with store:
        await store.append("r", [Message.user("once")])  # re-sent: applies once
        assert [m.content for m in await store.load("r")] == ["once"]
        await store.delete("r")
        await client.delete(f"{prefix}:index")
