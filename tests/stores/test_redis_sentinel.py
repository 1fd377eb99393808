"""RedisStore on Redis Sentinel: the URL, the constructors, and failovers under load.

The URL tests need no server. The others run against a real primary, a
replica and three sentinels on loopback (``tests/sentinel.py``); a failover
test ``kill -9``s the primary while several tasks run turns and then checks,
message by message, that every turn ended stored once, not stored, or
settled later, never twice.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
import redis
import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel

from promptkit_async import (
    CommitNotReplicated,
    CommitOutcomeUnknown,
    Message,
    RedisStore,
    Session,
    StoreUnavailable,
)
from promptkit_async._env import store_from_env, store_from_url
from promptkit_async.stores._redis._deadlines import DeadlineConnection, DeadlineSSLConnection
from promptkit_async.stores._redis._errors import Failure, classify
from promptkit_async.stores._redis._sentinel import (
    BlockingSentinelPool,
    DeadlineSentinelConnection,
    DeadlineSentinelSSLConnection,
    parse_sentinel_url,
)

from ..conftest import skip_or_fail, wait_until
from ..sentinel import SERVICE, SentinelGroup, sentinel_unavailable_reason

if TYPE_CHECKING:
    from collections.abc import Iterator


def _pool(store: RedisStore) -> BlockingSentinelPool:
    client = store.client
    assert isinstance(client, aioredis.Redis)
    pool = client.connection_pool
    assert isinstance(pool, BlockingSentinelPool)
    return pool


def _sentinels(pool: BlockingSentinelPool) -> list[aioredis.Redis]:
    manager = pool.sentinel_manager
    assert isinstance(manager, Sentinel)
    found: list[aioredis.Redis] = manager.sentinels
    return found


# -- the URL (no server) --------------------------------------------------------------


def test_a_full_url_is_read_part_by_part() -> None:
    parsed = parse_sentinel_url(
        "redis+sentinel://ada:p%40ss@h1:26380,[::1]:26381,h3/my%20svc/2"
        "?sentinel_username=watch&sentinel_password=sp&sentinel_timeout=0.5"
        "&min_replicas=1&replica_timeout=0.25"
    )
    assert parsed.sentinels == (("h1", 26380), ("::1", 26381), ("h3", 26379))
    assert (parsed.service_name, parsed.db) == ("my svc", 2)
    assert (parsed.username, parsed.password) == ("ada", "p@ss")  # the data nodes'
    assert (parsed.sentinel_username, parsed.sentinel_password) == ("watch", "sp")
    assert parsed.sentinel_timeout == 0.5 and not parsed.tls
    assert parsed.store_options == {"min_replicas": 1, "replica_timeout": 0.25}


def test_the_short_forms() -> None:
    parsed = parse_sentinel_url("redis+sentinel://h/svc")
    assert parsed.sentinels == (("h", 26379),) and parsed.db == 0
    assert parsed.username is parsed.password is None
    assert parse_sentinel_url("redis+sentinel://:pw@h/svc/").password == "pw"
    assert parse_sentinel_url("redis+sentinel://h/svc?db=4").db == 4
    tls = parse_sentinel_url("rediss+sentinel://h/svc?ssl_cert_reqs=none&ssl_check_hostname=no")
    assert tls.tls and tls.ssl == {"ssl_cert_reqs": "none", "ssl_check_hostname": False}


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://h", "no service name"),
        ("redis+sentinel://h/", "no service name"),
        ("redis+sentinel:///svc", "an empty sentinel address"),
        ("redis+sentinel://h1,,h2/svc", "an empty sentinel address"),
        ("redis+sentinel://h:99999/svc", "the port must be 1-65535"),
        ("redis+sentinel://h:port/svc", "the port must be 1-65535"),
        ("redis+sentinel://h:/svc", "has no port after ':'"),
        ("redis+sentinel://:1/svc", "has no host"),
        ("redis+sentinel://[::1/svc", "expected [ipv6]:port"),
        ("redis+sentinel://h/svc/one", "the database number must be an integer"),
        ("redis+sentinel://h/svc/0/x", "the path has 3 parts"),
        ("redis+sentinel://h/svc/1?db=2", "both in the path and as ?db="),
        ("redis+sentinel://h/svc?sentinel_timeout=0", "sentinel_timeout must be"),
        ("redis+sentinel://h/svc?sentinel_timeout=x", "sentinel_timeout must be"),
        ("redis+sentinel://h/svc?socket_timeout=1", "unknown query option 'socket_timeout'"),
        ("redis+sentinel://h/svc?db=1&db=2", "db is given twice"),
        ("redis+sentinel://h/svc?ssl_cert_reqs=none", "needs TLS: use rediss+sentinel://"),
        ("rediss+sentinel://h/svc?ssl_cert_reqs=maybe", "ssl_cert_reqs must be one of"),
        ("redis+sentinel://h/svc?min_replicas=x", "min_replicas must be an integer"),
        ("redis+sentinel://:secret@h/svc#frag", "a fragment"),
        ("redis+cluster://h/svc", "expected redis+sentinel://"),
    ],
)
def test_a_bad_url_says_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(ValueError, match="bad Redis Sentinel URL") as caught:
        parse_sentinel_url(url)
    assert says in str(caught.value)


def test_passwords_never_appear_in_the_error() -> None:
    url = "redis+sentinel://ada:hunter2@h/svc/x?sentinel_password=swordfish"
    for build in (parse_sentinel_url, RedisStore.from_url, store_from_url):
        with pytest.raises(ValueError) as caught:
            build(url)
        assert "hunter2" not in str(caught.value) and "swordfish" not in str(caught.value)


async def test_from_url_builds_a_client_that_follows_the_primary() -> None:
    store = RedisStore.from_url(
        "redis+sentinel://u:pw@127.0.0.1:1,127.0.0.1:2/svc/3?sentinel_password=sp"
        "&sentinel_timeout=0.3&min_replicas=1&replica_timeout=0.5",
        socket_timeout=4.0,
        max_connections=7,
    )
    pool = _pool(store)
    assert isinstance(pool, BlockingSentinelPool)
    assert pool.owned_sentinels == tuple(_sentinels(pool))
    assert pool.service_name == "svc" and pool.is_master and pool.max_connections == 7
    assert pool.connection_class is DeadlineSentinelConnection
    kwargs = pool.connection_kwargs
    assert (kwargs["db"], kwargs["username"], kwargs["password"]) == (3, "u", "pw")
    assert kwargs["socket_timeout"] == 4.0 and not kwargs["decode_responses"]
    assert store._link.lane and store._link.retries == 2  # the store retries, redis-py not
    sentinels = _sentinels(pool)
    assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [1, 2]
    for s in sentinels:
        assert s.connection_pool.connection_class is DeadlineConnection
        assert s.connection_pool.connection_kwargs["password"] == "sp"
        assert s.connection_pool.connection_kwargs["socket_timeout"] == 0.3
    assert (store.min_replicas, store.replica_timeout) == (1, 0.5)
    await store.aclose()  # closes the sentinels' clients too (nothing was connected)


async def test_tls_reaches_the_sentinels_and_the_data_nodes() -> None:
    store = RedisStore.from_url("rediss+sentinel://h/svc?ssl_cert_reqs=none")
    pool = _pool(store)
    assert pool.connection_class is DeadlineSentinelSSLConnection
    assert pool.connection_kwargs["ssl_cert_reqs"] == "none"
    for s in _sentinels(pool):
        assert s.connection_pool.connection_class is DeadlineSSLConnection
    await store.aclose()


async def test_the_environment_and_store_urls_accept_sentinel() -> None:
    url = "redis+sentinel://127.0.0.1:1/svc"
    for store in (
        store_from_url(url),
        store_from_env({"PROMPTKIT_STORE": url, "PROMPTKIT_PREFIX": "app"}),
        store_from_env({"REDIS_URL": url}),
    ):
        assert isinstance(store, RedisStore)
        assert isinstance(_pool(store), BlockingSentinelPool)
        await store.aclose()


def test_misuses_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="cluster=True with a Sentinel URL"):
        RedisStore.from_url("redis+sentinel://h/svc", cluster=True)
    sentinel = Sentinel([("127.0.0.1", 1)])  # type: ignore[no-untyped-call]
    with pytest.raises(TypeError, match="not a Sentinel: use RedisStore.from_sentinel"):
        RedisStore(sentinel)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a redis.asyncio.sentinel.Sentinel"):
        RedisStore.from_sentinel(aioredis.Redis(), SERVICE)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="service_name must be a non-empty str"):
        RedisStore.from_sentinel(sentinel, "")


# -- a real primary, replica and three sentinels ------------------------------------------


def _group(replicas: int = 1) -> SentinelGroup:
    missing = sentinel_unavailable_reason()
    if missing is not None:
        skip_or_fail(f"NO REDIS SENTINEL: {missing}; Sentinel behaviour is untested")
    group = SentinelGroup(replicas)
    try:
        group.start()
    except (RuntimeError, OSError, redis.RedisError) as exc:
        skip_or_fail(f"NO REDIS SENTINEL: could not start one ({exc}); Sentinel is untested")
    return group


@pytest.fixture(scope="module")
def group() -> Iterator[SentinelGroup]:
    """Shared by the tests that leave the primary where it is."""
    started = _group()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def fresh_group(request: pytest.FixtureRequest) -> Iterator[SentinelGroup]:
    """A group of the test's own, for a test that fails its primary over
    (``@pytest.mark.parametrize("fresh_group", [n], indirect=True)``: n replicas)."""
    started = _group(getattr(request, "param", 1))
    try:
        yield started
    finally:
        started.stop()


def _kept_port(store: RedisStore) -> int | None:
    kept = store._link._idle
    return None if kept is None else int(kept.port)


async def _close(sentinel: Sentinel) -> None:
    """Close a Sentinel's connections (redis-py 8.0's Sentinel has no aclose())."""
    aclose = getattr(sentinel, "aclose", None)
    if aclose is not None:
        await aclose()
        return
    for client in sentinel.sentinels:
        await client.aclose()


async def test_every_constructor_reaches_the_primary(group: SentinelGroup, prefix: str) -> None:
    primary = group.primary_port()
    sentinel = Sentinel(group.addresses, socket_timeout=1)  # type: ignore[no-untyped-call]
    borrowed = sentinel.master_for(SERVICE)
    stores = [
        RedisStore.from_url(group.url, prefix=prefix),
        RedisStore.from_sentinel(sentinel, SERVICE, prefix=prefix),
        RedisStore(borrowed, prefix=prefix),
    ]
    try:
        for i, store in enumerate(stores):
            async with Session(store, "s") as session:
                assert len(session.history) == 2 * i
                session.add(Message.user(f"q{i}"), Message.assistant(f"a{i}"))
            if store._link.lane:
                assert _kept_port(store) == primary  # the fast lane kept a primary connection
        assert [m.text for m in await stores[0].load("s")] == ["q0", "a0", "q1", "a1", "q2", "a2"]
    finally:
        for store in stores:
            await store.delete("s")
            await store.aclose()
        await borrowed.aclose()  # borrowed: the store left it open
        await _close(sentinel)  # from_sentinel borrowed it too


@dataclass
class Turns:
    """What the turns of one session did, in order: each turn's text and outcome."""

    session_id: str
    stored: list[str] = field(default_factory=list)
    not_stored: list[str] = field(default_factory=list)
    unknown: dict[str, str] = field(default_factory=dict)  # text -> turn id
    not_replicated: list[str] = field(default_factory=list)
    settled_applied: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)  # every turn that may be stored, in order


async def _run_turns(
    store: RedisStore,
    turns: Turns,
    stop: asyncio.Event,
    first_success_after: list[float],
    switched: asyncio.Event,
) -> None:
    i = 0
    while not stop.is_set():
        text = f"{turns.session_id}-{i}"
        i += 1
        after_switch = switched.is_set()  # this turn began after the kill
        try:
            async with Session(store, turns.session_id, max_messages=4) as session:
                session.add(Message.user(text), Message.assistant(f"re: {text}"))
        except StoreUnavailable:
            turns.not_stored.append(text)
            await asyncio.sleep(0.02)
            continue
        except CommitOutcomeUnknown as exc:
            turns.unknown[text] = exc.turn_id
            turns.order.append(text)
            await asyncio.sleep(0.02)
            continue
        except CommitNotReplicated:
            turns.not_replicated.append(text)
            turns.order.append(text)
            continue
        turns.stored.append(text)
        turns.order.append(text)
        if after_switch and not first_success_after:
            first_success_after.append(time.monotonic())
        await asyncio.sleep(0)


async def _settle(store: RedisStore, all_turns: list[Turns]) -> dict[str, int]:
    """Decide every unknown turn by id; how many ended applied and aborted."""
    counts = {"applied": 0, "aborted": 0}
    for turns in all_turns:
        for text, turn_id in list(turns.unknown.items()):
            outcome = await store.settle_turn(turns.session_id, turn_id)
            counts[outcome] += 1
            if outcome == "aborted":
                turns.order.remove(text)
            else:
                turns.settled_applied.append(text)
    return counts


async def _history(store: RedisStore, session_id: str) -> list[str]:
    return [m.text for m in await store.load(session_id)]


def _expected(turns: Turns, present: set[str]) -> list[str]:
    """The history the outcomes allow: every turn that is stored, once, in commit order,
    each user message followed by its own reply."""
    return [m for t in turns.order if t in present for m in (t, f"re: {t}")]


async def test_a_killed_primary_is_replaced_and_no_turn_is_doubled(
    fresh_group: SentinelGroup, prefix: str
) -> None:
    group = fresh_group
    store = RedisStore.from_url(group.url, prefix=prefix, socket_timeout=1.0, connect_timeout=0.5)
    all_turns = [Turns(f"s{i}") for i in range(6)]
    stop, switched = asyncio.Event(), asyncio.Event()
    first_success: list[float] = []
    tasks = [
        asyncio.ensure_future(_run_turns(store, t, stop, first_success, switched))
        for t in all_turns
    ]
    try:
        await wait_until(lambda: sum(len(t.stored) for t in all_turns) >= 60, timeout=10)
        old = group.kill_primary().port
        killed_at = time.monotonic()
        switched.set()
        new = await asyncio.to_thread(group.wait_promoted, old)
        promoted_at = time.monotonic()
        deadline = time.monotonic() + 15
        before = [len(t.stored) for t in all_turns]
        while any(len(t.stored) < b + 5 for t, b in zip(all_turns, before, strict=True)):
            assert time.monotonic() < deadline, "turns did not resume after the failover"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    try:
        settled = await _settle(store, all_turns)
        assert first_success, "no turn was stored after the kill"
        reached = first_success[0] - killed_at
        print(
            f"\nfailover: promoted after {promoted_at - killed_at:.2f} s, the store's first "
            f"turn on the new primary {reached:.2f} s after the kill; turns stored "
            f"{sum(len(t.stored) for t in all_turns)}, not stored "
            f"{sum(len(t.not_stored) for t in all_turns)}, unknown then settled {settled}"
        )
        assert _kept_port(store) in (new, None)  # never the dead primary's
        for turns in all_turns:
            history = await _history(store, turns.session_id)
            # Settled turns are stored or aborted for good; a turn whose commit was
            # acknowledged before the kill can only be missing if it was never
            # replicated (the asynchronous replication window), and nothing is
            # doubled or reordered.
            assert len(history) == len(set(history)), f"a message twice in {turns.session_id}"
            present = set(history[::2])
            assert history == _expected(turns, present)
            assert not present & set(turns.not_stored), "a turn reported not stored is stored"
            assert set(turns.settled_applied) <= present, "a turn settled applied is missing"
            after = turns.stored[-5:]  # committed on the new primary: certainly present
            assert set(after) <= present
    finally:
        await store.aclose()


async def test_a_demoted_primary_is_left_for_the_new_one(
    fresh_group: SentinelGroup, prefix: str
) -> None:
    """A live primary is demoted (SENTINEL FAILOVER promotes the replica; the old
    primary is made its replica, as Sentinel itself does some seconds later): the
    connection the store kept to it is not reused for long, and the READONLY
    answer to a write is "try the new primary", never an outcome."""
    group = fresh_group
    store = RedisStore.from_url(group.url, prefix=prefix)
    try:
        await store.append("s", [Message.user("before")])
        old = group.primary_port()
        assert old is not None and _kept_port(store) == old
        replica = redis.Redis(port=group.replicas[0].port)
        try:  # replication is asynchronous: the replica has it a moment later
            await wait_until(lambda: replica.llen(store.key("s")) == 1)
        finally:
            replica.close()
        sentinel = redis.Redis(port=group.sentinels[0].port)
        try:
            assert sentinel.execute_command(  # type: ignore[no-untyped-call]
                "SENTINEL", "FAILOVER", SERVICE
            )
        finally:
            sentinel.close()
        new = await asyncio.to_thread(group.wait_promoted, old)
        demoted = redis.Redis(port=old)
        try:
            demoted.execute_command("REPLICAOF", "127.0.0.1", str(new))  # type: ignore[no-untyped-call]
            assert demoted.execute_command("ROLE")[0] == b"slave"  # type: ignore[no-untyped-call]
        finally:
            demoted.close()
        # The kept connection still goes to the demoted node: the write it is sent is
        # refused (READONLY), nothing was written, and the store goes to the new primary.
        await store.append("s", [Message.user("after")])
        assert _kept_port(store) == new
        assert await _history(store, "s") == ["before", "after"]
    finally:
        await store.aclose()


@pytest.mark.parametrize("fresh_group", [2], indirect=True)
@pytest.mark.parametrize("min_replicas", [0, 1])
async def test_acknowledged_turns_survive_a_failover_with_min_replicas(
    fresh_group: SentinelGroup, prefix: str, min_replicas: int
) -> None:
    """Writes the replicas never received, then the primary killed.

    Both replicas are paused (SIGSTOP) and their links cut on the primary, so
    the turns committed next exist on the primary only; then the primary is
    ``kill -9``ed and the replicas resumed: one is promoted, the other follows
    it. Without ``min_replicas`` those turns were acknowledged and are lost;
    with ``min_replicas=1`` each of them raised CommitNotReplicated instead,
    and every acknowledged turn is on the new primary.
    """
    group = fresh_group
    store = RedisStore.from_url(
        group.url,
        prefix=prefix,
        socket_timeout=1.0,
        connect_timeout=0.5,
        min_replicas=min_replicas,
        replica_timeout=0.05,
    )
    all_turns = [Turns(f"s{i}") for i in range(4)]
    stop, switched = asyncio.Event(), asyncio.Event()
    first_success: list[float] = []
    tasks = [
        asyncio.ensure_future(_run_turns(store, t, stop, first_success, switched))
        for t in all_turns
    ]
    try:
        await wait_until(lambda: sum(len(t.stored) for t in all_turns) >= 100, timeout=10)
        primary = group.server_on(group.primary_port() or 0)
        for replica in group.replicas:
            group.pause(replica)
        cut = redis.Redis(port=primary.port)
        try:
            cut.client_kill_filter(_type="slave")  # redis-py 8.0 knows no "replica"
        finally:
            cut.close()
        acknowledged_before = sum(len(t.stored) for t in all_turns)
        await asyncio.sleep(0.25)  # turns go on, on the primary alone
        window = sum(len(t.stored) for t in all_turns) - acknowledged_before
        old = group.kill_primary().port
        for replica in group.replicas:
            group.resume(replica)
        switched.set()
        await asyncio.to_thread(group.wait_promoted, old)
        deadline = time.monotonic() + 15
        before = [len(t.stored) for t in all_turns]
        while any(len(t.stored) < b + 3 for t, b in zip(all_turns, before, strict=True)):
            assert time.monotonic() < deadline, "turns did not resume after the failover"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        for replica in group.replicas:
            group.resume(replica)
    try:
        await _settle(store, all_turns)
        lost = 0
        acknowledged = 0
        for turns in all_turns:
            history = await _history(store, turns.session_id)
            assert len(history) == len(set(history)), f"a message twice in {turns.session_id}"
            present = set(history[::2])
            assert history == _expected(turns, present)  # in order, never doubled
            acknowledged += len(turns.stored)
            lost += len(set(turns.stored) - present)
        not_replicated = sum(len(t.not_replicated) for t in all_turns)
        print(
            f"\nmin_replicas={min_replicas}: {acknowledged} turns acknowledged, {lost} of them "
            f"lost by the failover; {not_replicated} raised CommitNotReplicated; "
            f"{window} acknowledged while the replica was cut off"
        )
        if min_replicas:
            assert lost == 0
            assert not_replicated > 0  # the window existed: those turns were not acknowledged
        else:
            assert lost > 0  # the same window loses acknowledged turns without it
    finally:
        await store.aclose()


def test_sentinel_failures_read_as_nothing_sent() -> None:
    """No primary found, and a demoted primary's READONLY (which redis-py turns into a
    closed connection): nothing ran, so a commit is tried again, never left unknown."""
    assert classify(MasterNotFoundError("No master found for 'svc'")) is Failure.UNREACHABLE
    demoted = rexc.ConnectionError("The previous master is now a slave")
    assert classify(demoted) is Failure.UNREACHABLE
    assert classify(rexc.ConnectionError("Connection closed by server.")) is Failure.LOST


async def test_an_unknown_service_is_unavailable_and_nothing_is_stored(
    group: SentinelGroup, prefix: str
) -> None:
    url = group.url.replace(f"/{SERVICE}", "/nosuch")
    async with RedisStore.from_url(url, prefix=prefix, retries=1) as store:
        with pytest.raises(StoreUnavailable, match="No master found for 'nosuch'"):
            await store.load("s")
        with pytest.raises(StoreUnavailable) as caught:
            await store.append("s", [Message.user("x")])
        assert [m.text for m in caught.value.unsaved] == ["x"]
