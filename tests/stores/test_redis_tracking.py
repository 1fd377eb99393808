"""Server-assisted invalidation for the near cache, in one process against a real server.

Round trips are counted at a :class:`FaultProxy` in front of Redis: the
request chunks the store's data connections sent (the invalidation
connection's heartbeat ``PING`` left out). The cross-process suite is
``test_redis_near_cache_processes.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import pytest
import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from promptkit_async import Message, RedisStore, Session, Turn
from promptkit_async._ids import new_turn_id
from promptkit_async.stores._redis import _keys
from promptkit_async.stores._redis._cache import NearCache
from promptkit_async.stores._redis._commit import Committer
from promptkit_async.stores._redis._scripts import COMMIT, LOAD_IF_CHANGED
from promptkit_async.stores._redis._tracking import _TRACKED, Invalidations

from ..conftest import through, wait_until
from ..faults import FaultProxy
from ..samples import a, u

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from ..conftest import RedisServer

PING = b"*1\r\n$4\r\nPING\r\n"  # the invalidation connection's heartbeat
LOAD = LOAD_IF_CHANGED.sha.encode()
WINDOW = 20


def sent(proxy: FaultProxy, since: int) -> list[bytes]:
    """The request chunks sent through ``proxy`` since ``since``, heartbeats left out."""
    return [chunk for chunk in proxy.requests[since:] if chunk != PING]


def texts(messages: Sequence[Message]) -> list[str]:
    return [m.text for m in messages]


@contextlib.asynccontextmanager
async def tracked(url: str, prefix: str, **options: Any) -> AsyncIterator[RedisStore]:
    """A near-cache store whose invalidation connection is live."""
    store = RedisStore.from_url(url, prefix=prefix, near_cache=100, **options)
    try:
        await store.load("warm-up", 1)  # starts the invalidation connection
        await wait_until(lambda: store.tracking, 10)
        yield store
    finally:
        await store.aclose()


async def from_memory(store: RedisStore, proxy: FaultProxy, sid: str) -> list[str]:
    """Load ``sid``, asserting it cost no round trip."""
    mark = len(proxy.requests)
    window = texts(await store.load(sid, WINDOW))
    assert sent(proxy, mark) == [], f"{sid} was not served from memory"
    return window


async def checked(store: RedisStore, proxy: FaultProxy, sid: str) -> list[str]:
    """Load ``sid``, asserting Redis was asked (the load script, or a reconnection first)."""
    mark = len(proxy.requests)
    window = texts(await store.load(sid, WINDOW))
    assert any(LOAD in chunk for chunk in sent(proxy, mark)), f"{sid} was served from memory"
    return window


async def invalidated(store: RedisStore, before: int) -> None:
    """Wait until ``store`` received an invalidation more than ``before``."""
    await wait_until(lambda: store.invalidations > before)


async def invalidation_ids(admin: aioredis.Redis) -> list[dict[str, Any]]:
    return [c for c in await admin.client_list() if c["name"].startswith("promptkit-inv")]


@pytest.mark.redis
async def test_a_steady_state_turn_is_one_round_trip(
    proxy: FaultProxy, redis_url: str, prefix: str, truth: RedisStore
) -> None:
    expected: list[str] = []
    async with tracked(through(proxy, redis_url), prefix) as store:
        for i in range(14):
            mark, hits, misses = len(proxy.requests), store.cache_hits, store.cache_misses
            async with Session(store, "s", max_messages=WINDOW) as s:
                assert texts(s.history) == expected[-WINDOW:]
                s.add(u(f"q{i}"), a(f"a{i}"))
            expected += [f"q{i}", f"a{i}"]
            if i >= 2:  # the first turns set the connection's tracking up
                [commit] = sent(proxy, mark)  # the commit, and nothing else
                assert COMMIT.sha.encode() in commit and LOAD not in commit
                assert (store.cache_hits, store.cache_misses) == (hits + 1, misses)
        assert store.tracking
    assert texts(await truth.load("s")) == expected


@pytest.mark.redis
async def test_a_foreign_write_invalidates(
    proxy: FaultProxy, redis_url: str, prefix: str, truth: RedisStore
) -> None:
    async with tracked(through(proxy, redis_url), prefix) as store:
        await store.append("s", [u("mine")])
        assert await checked(store, proxy, "s") == ["mine"]
        assert await from_memory(store, proxy, "s") == ["mine"]
        for i in range(3):
            before, misses = store.invalidations, store.cache_misses
            await truth.append("s", [u(f"theirs {i}")])
            await invalidated(store, before)
            window = await checked(store, proxy, "s")
            assert window == ["mine"] + [f"theirs {j}" for j in range(i + 1)]
            assert store.cache_misses == misses + 1  # transferred, not just confirmed
            assert await from_memory(store, proxy, "s") == window  # tracked again


@pytest.mark.redis
@pytest.mark.parametrize("flush", ["FLUSHDB", "FLUSHALL", "FLUSHDB ASYNC", "FLUSHALL ASYNC"])
async def test_a_flush_invalidates_every_entry(
    spawn_server: Callable[..., RedisServer], prefix: str, flush: str
) -> None:
    server = spawn_server()
    admin = aioredis.Redis.from_url(server.url)
    sessions = ["f0", "f1", "f2"]
    try:
        async with FaultProxy(server.port) as proxy, tracked(proxy.url, prefix) as store:
            for sid in sessions:
                await store.append(sid, [u(sid)])
                assert await checked(store, proxy, sid) == [sid]
            for sid in sessions:
                assert await from_memory(store, proxy, sid) == [sid]
            before = store.invalidations
            everything, asynchronous = flush.startswith("FLUSHALL"), flush.endswith("ASYNC")
            if everything:
                await admin.flushall(asynchronous=asynchronous)
            else:
                await admin.flushdb(asynchronous=asynchronous)
            await invalidated(store, before)
            for sid in sessions:
                assert await checked(store, proxy, sid) == []
            async with Session(store, "f0", max_messages=WINDOW) as s:
                assert s.history == ()
                s.add(u("again"))
            assert texts(await store.load("f0")) == ["again"]
    finally:
        await admin.aclose()


@pytest.mark.redis
async def test_a_killed_invalidation_connection_means_checked_loads_until_it_is_back(
    spawn_server: Callable[..., RedisServer], prefix: str
) -> None:
    server = spawn_server()
    admin = aioredis.Redis.from_url(server.url)
    other = RedisStore(admin, prefix=prefix)  # another writer
    try:
        async with FaultProxy(server.port) as proxy, tracked(proxy.url, prefix) as store:
            [inv] = await invalidation_ids(admin)
            assert re.fullmatch(r"promptkit-inv-[0-9a-f]{16}", inv["name"])
            assert inv["resp"] == "3"
            await store.append("k", [u("0")])
            assert await checked(store, proxy, "k") == ["0"]
            assert await from_memory(store, proxy, "k") == ["0"]
            # The next invalidation connection answers late: it is down a while.
            proxy.delay_replies_of(b"promptkit-inv", 0.3)
            await admin.client_kill_filter(_id=inv["id"])
            # Written while nothing can tell the store: it must still see it.
            await other.append("k", [u("1")])
            await wait_until(lambda: not store.tracking, 10)
            assert await checked(store, proxy, "k") == ["0", "1"]
            await other.append("k", [u("2")])
            assert await checked(store, proxy, "k") == ["0", "1", "2"]
            await wait_until(lambda: store.tracking, 10)
            [again] = await invalidation_ids(admin)
            assert again["id"] != inv["id"]
            assert store.tracking
            assert await checked(store, proxy, "k") == ["0", "1", "2"]  # tracked anew
            assert await from_memory(store, proxy, "k") == ["0", "1", "2"]
            before = store.invalidations
            await other.append("k", [u("3")])
            await invalidated(store, before)
            assert await checked(store, proxy, "k") == ["0", "1", "2", "3"]
    finally:
        await admin.aclose()


@pytest.mark.redis
async def test_a_killed_data_connection_leaves_its_entries_untrusted(
    spawn_server: Callable[..., RedisServer], prefix: str
) -> None:
    server = spawn_server()
    admin = aioredis.Redis.from_url(server.url)
    other = RedisStore(admin, prefix=prefix)
    try:
        async with FaultProxy(server.port) as proxy, tracked(proxy.url, prefix) as store:
            await store.append("d", [u("0")])
            assert await checked(store, proxy, "d") == ["0"]
            assert await from_memory(store, proxy, "d") == ["0"]
            me = await admin.client_id()
            data = [
                c
                for c in await admin.client_list()
                if not c["name"].startswith("promptkit-inv") and int(c["id"]) != me
            ]
            assert data
            for c in data:
                await admin.client_kill_filter(_id=c["id"])
            # Redis forgot what the killed connection read: no invalidation for this.
            await other.append("d", [u("1")])
            assert await checked(store, proxy, "d") == ["0", "1"]
            assert store.tracking  # the invalidation connection was left alone
            assert await from_memory(store, proxy, "d") == ["0", "1"]  # on the new connection
            before = store.invalidations
            await other.append("d", [u("2")])
            await invalidated(store, before)
            assert await checked(store, proxy, "d") == ["0", "1", "2"]
    finally:
        await admin.aclose()


@pytest.mark.redis
@pytest.mark.parametrize(
    "options",
    [{"tracking": False}, {"distributed_lock": True}],
    ids=["tracking=False", "distributed_lock"],
)
async def test_without_tracking_every_load_asks_redis(
    proxy: FaultProxy, redis_url: str, prefix: str, truth: RedisStore, options: dict[str, Any]
) -> None:
    store = RedisStore.from_url(through(proxy, redis_url), prefix=prefix, near_cache=100, **options)
    expected: list[str] = []
    try:
        for i in range(6):
            mark = len(proxy.requests)
            async with Session(store, "s", max_messages=WINDOW) as s:
                assert texts(s.history) == expected[-WINDOW:]
                s.add(u(f"q{i}"))
            expected.append(f"q{i}")
            assert sum(LOAD in chunk for chunk in sent(proxy, mark)) == 1
            if i % 2:  # another writer: seen by the very next load, nothing waited for
                await truth.append("s", [u(f"theirs {i}")])
                expected.append(f"theirs {i}")
            assert await checked(store, proxy, "s") == expected[-WINDOW:]
        assert store.cache_hits > 0  # the cache is on: confirmed by version
        assert not store.tracking and store.invalidations == 0
        assert proxy.count(b"promptkit-inv") == 0 and proxy.count(b"TRACKING") == 0
    finally:
        await store.aclose()


async def test_a_store_over_fakeredis_works_without_tracking(prefix: str) -> None:
    import fakeredis

    server = fakeredis.FakeServer()
    client_a = fakeredis.FakeAsyncRedis(server=server)
    client_b = fakeredis.FakeAsyncRedis(server=server)
    mine = RedisStore(client_a, prefix=prefix, near_cache=100)
    theirs = RedisStore(client_b, prefix=prefix, near_cache=100)
    expected: list[str] = []
    try:
        for i in range(5):
            async with Session(mine, "s", max_messages=WINDOW) as s:
                assert texts(s.history) == expected[-WINDOW:]
                s.add(u(f"q{i}"))
            expected.append(f"q{i}")
            assert texts(await mine.load("s", WINDOW)) == expected[-WINDOW:]
            await theirs.append("s", [u(f"theirs {i}")])
            expected.append(f"theirs {i}")
            # no invalidation can come: the very next load must see it
            assert texts(await mine.load("s", WINDOW)) == expected[-WINDOW:]
        assert not mine.tracking and mine.invalidations == 0
        assert mine.cache_hits > 0
    finally:
        await mine.aclose()
        await theirs.aclose()
        await client_a.aclose()
        await client_b.aclose()


@pytest.mark.redis
async def test_no_window_is_served_from_memory_past_its_ttl(
    proxy: FaultProxy, redis_url: str, prefix: str
) -> None:
    # Redis reports an expiry only when it deletes the key (its expiry cycle, or an
    # access): an entry carries the session's deadline and is checked past it.
    async with tracked(through(proxy, redis_url), prefix) as store:
        async with Session(store, "by-commit", ttl=0.6) as s:
            s.add(u("soon gone"))
        await store.append("by-load", [u("also")], ttl=0.6)
        assert await checked(store, proxy, "by-load") == ["also"]
        for sid, content in (("by-commit", "soon gone"), ("by-load", "also")):
            assert await from_memory(store, proxy, sid) == [content]
        await asyncio.sleep(0.65)
        for sid in ("by-commit", "by-load"):
            assert await checked(store, proxy, sid) == []  # asked Redis: expired


@pytest.mark.redis
async def test_a_closed_store_leaves_no_invalidation_connection(
    redis_url: str, prefix: str
) -> None:
    admin = aioredis.Redis.from_url(redis_url)
    try:
        async with tracked(redis_url, prefix) as store:
            name = next(
                c["name"]
                for c in await invalidation_ids(admin)
                if c["id"] == str(store._link.invalidations.id)  # type: ignore[union-attr]
            )
        assert not store.tracking
        await asyncio.sleep(0.05)
        assert name not in [c["name"] for c in await invalidation_ids(admin)]
        assert [t for t in asyncio.all_tasks() if "Invalidations._run" in repr(t)] == []
    finally:
        await admin.aclose()


@pytest.mark.redis
async def test_a_store_closed_while_its_invalidation_connection_opens_closes_at_once(
    redis_url: str, prefix: str
) -> None:
    # A cancellation landing inside redis-py's connect or timed read can be swallowed;
    # the close must end the reader anyway (it once waited forever).
    for delay in [0.0, 0.001, 0.002, 0.005, 0.01] * 6:
        store = RedisStore.from_url(redis_url, prefix=prefix, near_cache=10)
        await store.load("s", 1)  # starts the invalidation connection
        await asyncio.sleep(delay)
        await asyncio.wait_for(store.aclose(), 5)
        assert not store.tracking
    assert [t for t in asyncio.all_tasks() if "Invalidations._run" in repr(t)] == []


async def tracked_connections(admin: aioredis.Redis, name: str) -> int:
    """How many connections named ``name`` Redis lists with tracking on."""
    return sum("t" in c["flags"] for c in await admin.client_list() if c["name"] == name)


async def no_tracked_connection(admin: aioredis.Redis, name: str) -> None:
    """Wait until Redis lists no connection named ``name`` with tracking on: a
    connection closed without waiting is gone from the server a moment later."""
    for _ in range(500):
        if not await tracked_connections(admin, name):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"a connection named {name!r} still has tracking on")


def owned_turn(session_id: str, text: str) -> Turn:
    """A turn with an owner: its commit also writes the owner's listing, and awaits it."""
    return Turn(session_id=session_id, messages=(u(text),), turn_id=new_turn_id(), owner="o1")


def slow_listing(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Every owner's-listing write waits ``seconds`` first: the commit's reply is in,
    its cache entry not yet stored."""
    original = Committer._list_in

    async def slow(self: Committer, owner: str, member: str, ttl_ms: int) -> None:
        await asyncio.sleep(seconds)
        await original(self, owner, member, ttl_ms)

    monkeypatch.setattr(Committer, "_list_in", slow)


async def served_from_memory_then_slow_listings(
    store: RedisStore, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Session "s" holds "one", served from memory; from now on, a commit's reply is
    in 0.3 s before its entry is stored (its owner's listing is slow)."""
    await store.commit(owned_turn("s", "one"))
    await store.load("s", WINDOW)
    assert await from_memory(store, proxy, "s") == ["one"]
    slow_listing(monkeypatch, 0.3)


@pytest.mark.redis
async def test_an_invalidation_between_the_commit_reply_and_its_entry_is_not_lost(
    proxy: FaultProxy,
    redis_url: str,
    prefix: str,
    truth: RedisStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with tracked(through(proxy, redis_url), prefix) as store:
        await served_from_memory_then_slow_listings(store, proxy, monkeypatch)
        mine = asyncio.create_task(store.commit(owned_turn("s", "mine")))
        await asyncio.sleep(0.1)  # the commit has applied; its listing is waited for
        before = store.invalidations
        await truth.append("s", [u("theirs")])
        await invalidated(store, before)
        await mine
        assert await checked(store, proxy, "s") == ["one", "mine", "theirs"]
    assert texts(await truth.load("s")) == ["one", "mine", "theirs"]


@pytest.mark.redis
async def test_a_commit_cancelled_after_it_ran_leaves_no_trusted_entry(
    proxy: FaultProxy,
    redis_url: str,
    prefix: str,
    truth: RedisStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with tracked(through(proxy, redis_url), prefix) as store:
        await served_from_memory_then_slow_listings(store, proxy, monkeypatch)
        task = asyncio.create_task(store.commit(owned_turn("s", "stored")))
        await asyncio.sleep(0.1)  # applied on the connection that tracks the entry
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert texts(await truth.load("s")) == ["one", "stored"]
        # Our own write sends us no invalidation (NOLOOP): the entry must be gone.
        assert await checked(store, proxy, "s") == ["one", "stored"]


@pytest.mark.redis
async def test_two_stores_on_one_client_each_get_their_own_invalidations(
    redis_url: str, prefix: str, truth: RedisStore
) -> None:
    # One pool: a connection store A turned tracking on for (redirected to A's
    # invalidation connection) is later taken by store B, which must set it up for
    # itself: else B's entries are invalidated to A, which knows nothing of them.
    client = aioredis.Redis.from_url(redis_url, retry=Retry(NoBackoff(), 0))
    first = RedisStore(client, prefix=f"{prefix}-a", near_cache=100)
    second = RedisStore(client, prefix=prefix, near_cache=100)
    stale = []
    try:
        await first.load("w", 1)
        await second.load("w", 1)
        await wait_until(lambda: first.tracking and second.tracking, 10)
        for r in range(10):
            sid = f"s{r}"
            # A spreads its tracking over several of the pool's connections.
            await asyncio.gather(*(first.load(f"x{r}-{i}", 5) for i in range(6)))
            await truth.append(sid, [u("one")])
            await asyncio.gather(second.load(f"o{r}", 5), second.load(sid, 5))
            before = second.invalidations
            await truth.append(sid, [u("two")])
            with contextlib.suppress(AssertionError):
                await wait_until(lambda b=before: second.invalidations > b, 1)
            window = texts(await second.load(sid, 5))
            if window != ["one", "two"]:
                stale.append((sid, window))
            if r == 4:
                await first.aclose()  # the connections it set up stay in the pool
    finally:
        await first.aclose()
        await second.aclose()
        await client.aclose()
    assert stale == []


@pytest.mark.redis
@pytest.mark.parametrize("writer", ["a store without near cache", "the application"])
async def test_a_write_through_a_connection_the_store_gave_back_is_not_missed(
    redis_url: str, prefix: str, writer: str
) -> None:
    # Redis reports no connection's own writes to its redirect (NOLOOP). A connection
    # the near-cache store tracked and gave back to a shared pool may carry another
    # store's or the application's write: what the store read on it must be checked.
    client = aioredis.Redis.from_url(redis_url, retry=Retry(NoBackoff(), 0))
    cached = RedisStore(client, prefix=prefix, near_cache=100)
    other = RedisStore(client, prefix=prefix)
    stale = []
    try:
        await cached.load("w", 1)
        await wait_until(lambda: cached.tracking, 10)
        for r in range(10):
            sids = [f"s{r}-{i}" for i in range(3)]
            for sid in sids:
                await other.append(sid, [u("one")])
            # Loads at once: all but one ran on connections given back to the pool.
            await asyncio.gather(*(cached.load(sid, 5) for sid in sids))
            for sid in sids:
                if writer == "the application":
                    pool = client.connection_pool
                    # The pool hands out the connection given back last: a tracked one.
                    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
                    try:
                        await conn.send_command("DEL", *_keys.stored_keys(prefix, sid))
                        assert await conn.read_response() == 3
                    finally:
                        await pool.release(conn)
                else:
                    assert await other.delete(sid)
            await asyncio.sleep(0.05)  # the invalidations that were sent have arrived
            for sid in sids:
                window = texts(await cached.load(sid, 5))
                if window:
                    stale.append((sid, window))
    finally:
        await cached.aclose()
        await other.aclose()
        await client.aclose()
    assert stale == []


@pytest.mark.redis
async def test_a_non_ascii_session_is_invalidated_over_a_client_decoding_latin_1(
    redis_url: str, prefix: str, truth: RedisStore
) -> None:
    # The invalidation connection reads key names as bytes whatever the client decodes.
    client = aioredis.Redis.from_url(
        redis_url, retry=Retry(NoBackoff(), 0), decode_responses=True, encoding="latin-1"
    )
    store = RedisStore(client, prefix=prefix, near_cache=10)
    try:
        await store.load("w", 1)
        await wait_until(lambda: store.tracking, 10)
        for sid in ("plain", "café"):  # (latin-1 cannot send a session id beyond it)
            await store.append(sid, [u("one")])
            assert texts(await store.load(sid, 5)) == ["one"]
            before = store.invalidations
            await truth.append(sid, [u("two")])  # another client's write
            await invalidated(store, before)
            assert texts(await store.load(sid, 5)) == ["one", "two"], sid
    finally:
        await store.aclose()
        await client.aclose()


@pytest.mark.redis
async def test_a_window_extended_by_a_commit_is_what_redis_gives_back(
    proxy: FaultProxy, redis_url: str, prefix: str, truth: RedisStore
) -> None:
    async with tracked(through(proxy, redis_url), prefix) as store:
        await store.load("s", 5)
        tags: Any = ["draft"]
        await store.append("s", [Message.user("hi", pair=cast("Any", (1, 2)), tags=tags)])
        tags.append("changed after the commit")  # the caller reuses its list
        mark = len(proxy.requests)
        served = await store.load("s", 5)
        assert sent(proxy, mark) == [], "not served from memory"
        assert [m.metadata for m in served] == [m.metadata for m in await truth.load("s", 5)]
        assert served[0].metadata == {"pair": [1, 2], "tags": ["draft"]}


@pytest.mark.redis
async def test_closing_a_store_turns_tracking_off_for_a_borrowed_clients_connections(
    redis_url: str, prefix: str
) -> None:
    client = aioredis.Redis.from_url(
        redis_url, retry=Retry(NoBackoff(), 0), client_name=f"{prefix}-borrowed"
    )
    admin = aioredis.Redis.from_url(redis_url)
    try:
        store = RedisStore(client, prefix=prefix, near_cache=10)
        await store.load("s", 5)
        await wait_until(lambda: store.tracking, 10)
        await store.load("s", 5)

        assert await tracked_connections(admin, f"{prefix}-borrowed")
        await store.aclose()
        await no_tracked_connection(admin, f"{prefix}-borrowed")
        assert await client.ping()  # the client itself is the caller's, still usable
    finally:
        await admin.aclose()
        await client.aclose()


async def test_an_invalidation_during_any_call_in_flight_untrusts_that_call() -> None:
    # Calls of one session overlap (a turn's commit, a page's loads): an
    # invalidation that arrives while one is in flight untrusts it, whatever
    # began or ended around it.
    inv = Invalidations(None, "p", NearCache(10))
    inv.live = True
    conn = SimpleNamespace(_writer=object())
    setattr(conn, _TRACKED, (inv, inv.gen, conn._writer))
    key = _keys.key("p", "s", _keys.HISTORY)

    first, second = inv.begin("s"), inv.begin("s")
    first.read_on(conn)
    assert first.close() is not None  # nothing arrived: trusted
    assert first.close() is None  # closed once
    await inv._pushed([b"invalidate", [key]])  # while the second is in flight
    third = inv.begin("s")
    second.read_on(conn)
    third.read_on(conn)
    assert second.close() is None
    assert third.close() is not None  # began after it: reads what it invalidated
    assert inv._pending == {}
    other = inv.begin("s")
    other.read_on(conn)
    inv._untrust()  # a flush, a lost connection: nothing in flight is trusted
    assert other.close() is None


def test_a_passing_refusal_while_setting_a_connection_up_leaves_tracking_on() -> None:
    # BUSY (another client's long script) is no reason to turn tracking off for good:
    # the connection is left unmarked, to be set up again on its next call.
    inv = Invalidations(None, "p", NearCache(10))
    inv.live = True
    conn = SimpleNamespace(_writer=object())
    busy = rexc.BusyLoadingError("BUSY Redis is busy running a script")
    inv.set_up(conn, inv.gen, [busy, b""])
    assert inv.disabled is None and inv.live and not inv.marked(conn)
    assert inv.setup(conn) is not None  # asked again next time
    inv.set_up(conn, inv.gen - 1, [b"OK", b"id=1 name=x "])  # an older generation's answer
    assert inv.live and not inv.marked(conn)
    # A refusal for good (the user's ACL changed since the check at open): off, once.
    inv.set_up(conn, inv.gen, [rexc.NoPermissionError("NOPERM no CLIENT"), b""])
    assert inv.disabled is not None and not inv.live


def test_a_connection_being_set_up_carries_no_earlier_marker() -> None:
    # Its setup commands go out at once and redirect its invalidations: an entry
    # another store trusted through it must not stay trusted, whatever they answer.
    first = Invalidations(None, "a", NearCache(10))
    second = Invalidations(None, "b", NearCache(10))
    first.live = second.live = True
    conn = SimpleNamespace(_writer=object())
    setattr(conn, _TRACKED, (first, first.gen, conn._writer))
    assert first.marked(conn)
    assert second.setup(conn) is not None
    assert not first.marked(conn)
    second.gen += 1  # the answers come for an older generation of the second
    second.set_up(conn, second.gen - 1, [b"OK", b"id=1 name=x "])
    assert not first.marked(conn) and not second.marked(conn)


@pytest.mark.redis
async def test_a_tracked_call_in_flight_as_the_store_closes_leaves_no_tracked_connection(
    proxy: FaultProxy, redis_url: str, prefix: str
) -> None:
    client = aioredis.Redis.from_url(
        through(proxy, redis_url), retry=Retry(NoBackoff(), 0), client_name=f"{prefix}-inflight"
    )
    admin = aioredis.Redis.from_url(redis_url)
    try:
        store = RedisStore(client, prefix=prefix, near_cache=10)
        await store.load("s", 5)
        await wait_until(lambda: store.tracking, 10)
        proxy.reply_delay = 0.3
        loading = asyncio.create_task(store.load("t", 5))
        await asyncio.sleep(0.1)  # sent; its reply held at the proxy
        await store.aclose()
        assert await loading == []
        proxy.heal()
        await no_tracked_connection(admin, f"{prefix}-inflight")
        assert await client.ping()  # the borrowed client still works
        assert store._link._idle is None  # nothing kept by a closed store
    finally:
        await admin.aclose()
        await client.aclose()


@pytest.mark.redis
async def test_a_close_cancelled_midway_is_finished_by_the_next(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RedisStore.from_url(redis_url, prefix=prefix, near_cache=10)
    await store.load("s", 5)
    await wait_until(lambda: store.tracking, 10)
    original = Invalidations.aclose
    entered = asyncio.Event()

    async def slow(self: Invalidations) -> None:
        entered.set()
        await asyncio.sleep(10)
        await original(self)

    monkeypatch.setattr(Invalidations, "aclose", slow)
    closing = asyncio.create_task(store.aclose())
    await entered.wait()
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    monkeypatch.setattr(Invalidations, "aclose", original)
    await asyncio.wait_for(store.aclose(), 5)
    assert not store.tracking
    assert [t for t in asyncio.all_tasks() if "Invalidations._run" in repr(t)] == []
    client: Any = store.client
    pool = client.connection_pool
    assert all(c._writer is None for c in pool._available_connections)  # the client closed
