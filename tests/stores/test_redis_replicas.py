"""Replica-acknowledged commits: ``min_replicas`` / ``replica_timeout`` and CommitNotReplicated.

Against a real primary and replica (spawned on free ports). The replica is
paused with SIGSTOP to make it miss its acknowledgements: a paused process
answers nothing, so WAIT times out on it, deterministically.
"""

from __future__ import annotations

import math
import os
import pickle
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest
import redis
import redis.asyncio as aioredis
import redis.asyncio.connection as rconn
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from promptkit_async import (
    CommitNotReplicated,
    CommitOutcomeUnknown,
    Message,
    RedisStore,
    Session,
    StoreError,
    StoreUnavailable,
    Turn,
)

from ..conftest import cluster_client

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from ..cluster import ClusterServers
    from ..conftest import RedisServer


#: A diskless full sync starts at once (Redis waits 5 s by default for more replicas).
_QUICK_SYNC = ("--repl-diskless-sync-delay", "0")


class Pair:
    """A primary and one replica of it."""

    def __init__(self, primary: RedisServer, replica: RedisServer) -> None:
        self.primary = primary
        self.replica = replica

    def wait_synced(self) -> None:
        """Until the replica is linked and acknowledges a write (after its first sync it
        may take a moment on a busy machine)."""
        replica, primary = redis.Redis(port=self.replica.port), redis.Redis(port=self.primary.port)
        deadline = time.monotonic() + 10
        try:
            while replica.info("replication").get("master_link_status") != "up":
                assert time.monotonic() < deadline, "the replica did not sync"
                time.sleep(0.05)
            primary.set("pktest-ready", "1")
            while primary.execute_command("WAIT", 1, 100) != 1:  # type: ignore[no-untyped-call]
                assert time.monotonic() < deadline, "the replica does not acknowledge"
        finally:
            replica.close()
            primary.close()

    def pause(self) -> None:
        assert self.replica.proc is not None
        os.kill(self.replica.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.replica.proc is not None
        os.kill(self.replica.proc.pid, signal.SIGCONT)


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    from ..conftest import RedisServer, skip_or_fail

    primary = RedisServer(*_QUICK_SYNC)
    replica: RedisServer | None = None
    try:
        try:
            primary.start()
            replica = RedisServer(*_QUICK_SYNC, "--replicaof", "127.0.0.1", str(primary.port))
            replica.start()
        except (RuntimeError, OSError) as exc:
            skip_or_fail(f"NO REDIS SERVER to spawn ({exc}); replica waits are untested")
        assert replica is not None
        both = Pair(primary, replica)
        both.wait_synced()
        yield both
    finally:
        if replica is not None:
            if replica.proc is not None and replica.proc.poll() is None:
                Pair(primary, replica).resume()
            replica.stop()
        primary.stop()


@pytest.fixture
def paused(pair: Pair) -> Iterator[Callable[[], None]]:
    """Pauses the replica when called; it is resumed at the end of the test whatever happens."""
    state = {"paused": False}

    def pause() -> None:
        pair.pause()
        state["paused"] = True

    try:
        yield pause
    finally:
        if state["paused"]:
            pair.resume()


@pytest.fixture
async def replicated(pair: Pair, prefix: str) -> AsyncIterator[RedisStore]:
    async with RedisStore.from_url(
        pair.primary.url, prefix=prefix, min_replicas=1, replica_timeout=0.2
    ) as store:
        yield store


def turn(session_id: str, turn_id: str, *texts: str) -> Turn:
    return Turn(
        session_id=session_id,
        messages=tuple(Message.user(t) for t in texts),
        turn_id=turn_id,
        ttl=None,
    )


async def texts(store: RedisStore, session_id: str) -> list[str]:
    return [m.text for m in await store.load(session_id)]


# -- options -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "says"),
    [
        ({"min_replicas": -1}, ValueError, "min_replicas must be >= 0"),
        ({"min_replicas": "1"}, TypeError, "min_replicas must be an int"),
        ({"min_replicas": True}, TypeError, "min_replicas must be an int"),
        ({"min_replicas": 1.0}, TypeError, "min_replicas must be an int"),
        ({"replica_timeout": 0}, ValueError, "replica_timeout must be > 0"),
        ({"replica_timeout": -1.5}, ValueError, "replica_timeout must be > 0"),
        ({"replica_timeout": math.nan}, ValueError, "replica_timeout must be > 0"),
        ({"replica_timeout": math.inf}, ValueError, "replica_timeout must be > 0"),
        ({"replica_timeout": "1"}, TypeError, "replica_timeout must be a number"),
        ({"replica_timeout": None}, TypeError, "replica_timeout must be a number"),
    ],
)
def test_bad_options_are_refused_clearly(
    options: dict[str, Any], error: type[Exception], says: str
) -> None:
    client = aioredis.Redis()
    with pytest.raises(error, match=says):
        RedisStore(client, **options)
    with pytest.raises(error, match=says):
        RedisStore.from_url("redis://127.0.0.1:1", **options)


def test_options_read_back_and_default_off() -> None:
    client = aioredis.Redis()
    assert (RedisStore(client).min_replicas, RedisStore(client).replica_timeout) == (0, 1.0)
    store = RedisStore(client, min_replicas=2, replica_timeout=0.5)
    assert (store.min_replicas, store.replica_timeout) == (2, 0.5)
    url = RedisStore.from_url("redis://127.0.0.1:1/3?min_replicas=1&replica_timeout=0.25")
    assert (url.min_replicas, url.replica_timeout) == (1, 0.25)
    # The store's options are taken out of the query; redis-py still reads the rest.
    assert isinstance(url.client, aioredis.Redis)
    assert url.client.connection_pool.connection_kwargs["db"] == 3


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis://h?min_replicas=one", "min_replicas must be an integer"),
        ("redis://h?replica_timeout=soon", "replica_timeout must be a number of seconds"),
        ("redis://h?min_replicas=1&min_replicas=2", "min_replicas is given twice"),
        ("redis://h?min_replicas=-2", "min_replicas must be >= 0"),
        ("redis://:secret@h?replica_timeout=0", "replica_timeout must be > 0"),
    ],
)
def test_bad_url_options_are_refused_clearly(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as caught:
        RedisStore.from_url(url)
    assert "secret" not in str(caught.value)


def test_an_option_in_the_url_and_as_a_keyword_is_refused() -> None:
    with pytest.raises(ValueError, match="min_replicas is given both in the URL and as a keyword"):
        RedisStore.from_url("redis://h?min_replicas=1", min_replicas=1)


def test_the_error_pickles_and_says_what_happened() -> None:
    stored = (Message.user("x"),)
    error = CommitNotReplicated(
        "m", session_id="s", turn_id="t", acknowledged=1, required=2, messages=stored
    )
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is CommitNotReplicated and copy.__dict__ == error.__dict__
    assert (copy.acknowledged, copy.required, copy.messages, copy.unsaved) == (1, 2, stored, stored)
    # "Stored but not replicated" is neither "not stored" nor "maybe stored".
    assert isinstance(error, StoreError)
    assert not isinstance(error, (StoreUnavailable, CommitOutcomeUnknown))
    assert "acknowledged=1, required=2" in repr(error)


# -- a real primary and replica -----------------------------------------------------------


def _commandstat(port: int, command: str) -> int:
    client = redis.Redis(port=port)
    try:
        stats = client.info("commandstats").get(f"cmdstat_{command}", {})
        return int(stats.get("calls", 0))
    finally:
        client.close()


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many writes to a socket each redis-py connection made (one per round trip)."""
    counted: list[int] = []
    real = rconn.AbstractConnection.send_packed_command

    async def counting(self: Any, command: Any, check_health: bool = True) -> None:
        counted.append(1)
        await real(self, command, check_health)

    monkeypatch.setattr(rconn.AbstractConnection, "send_packed_command", counting)
    return counted


async def test_an_acknowledged_commit_is_one_round_trip_with_its_wait(
    replicated: RedisStore, pair: Pair, sends: list[int]
) -> None:
    await replicated.commit(turn("s", "t0", "z"))  # the version check, the script loaded
    waits = _commandstat(pair.primary.port, "wait")
    sends.clear()
    stored = await replicated.commit(turn("s", "t1", "a", "b"))
    assert [m.text for m in stored] == ["a", "b"] and stored[0].id == "1"
    assert len(sends) == 1  # the script and WAIT in one write, both replies read
    assert _commandstat(pair.primary.port, "wait") == waits + 1
    replica = RedisStore(aioredis.Redis(port=pair.replica.port), prefix=replicated.prefix)
    assert await texts(replica, "s") == ["z", "a", "b"]  # acknowledged: the replica has it
    await replica.client.aclose()


async def test_a_commit_the_replica_does_not_acknowledge_is_stored_once_and_raises(
    replicated: RedisStore, pair: Pair, paused: Callable[[], None]
) -> None:
    await replicated.commit(turn("s", "t1", "a"))
    paused()
    with pytest.raises(CommitNotReplicated) as caught:
        await replicated.commit(turn("s", "t2", "b", "c"))
    error = caught.value
    assert (error.session_id, error.turn_id) == ("s", "t2")
    assert (error.acknowledged, error.required) == (0, 1)
    assert [m.text for m in error.messages] == ["b", "c"]
    assert [m.id for m in error.messages] == ["1", "2"]  # as stored: ids and times given
    assert error.unsaved == error.messages
    assert str(error) == (
        "session 's': turn t2 was applied on the primary but acknowledged by 0 of 1 replicas "
        "within 0.2s; it is stored once, and may be lost on a failover"
    )
    assert await texts(replicated, "s") == ["a", "b", "c"]  # applied on the primary, once
    assert await replicated.turn_status("s", "t2") == "applied"


async def test_a_resent_turn_is_confirmed_by_a_probe_of_its_own(
    replicated: RedisStore, pair: Pair, paused: Callable[[], None]
) -> None:
    """A re-sent commit that finds its turn applied wrote nothing on its connection, so
    its WAIT alone would prove nothing (a fresh connection's offset is 0): it is
    confirmed by a write of its own, and reports the replica's absence."""
    first = await replicated.commit(turn("s", "t1", "a"))
    again = await replicated.commit(turn("s", "t1", "a"))  # replica up: confirmed
    assert again == first and [m.id for m in again] == ["0"]
    paused()
    with pytest.raises(CommitNotReplicated) as caught:
        await replicated.commit(turn("s", "t1", "a"))
    assert caught.value.acknowledged == 0
    assert await texts(replicated, "s") == ["a"]


async def test_fewer_replicas_than_required_are_counted(pair: Pair, prefix: str) -> None:
    async with RedisStore.from_url(
        pair.primary.url, prefix=prefix, min_replicas=2, replica_timeout=0.05
    ) as store:
        with pytest.raises(CommitNotReplicated, match="acknowledged by 1 of 2 replicas") as caught:
            await store.commit(turn("s", "t1", "a"))
    assert (caught.value.acknowledged, caught.value.required) == (1, 2)


async def test_a_borrowed_client_off_the_fast_lane_waits_too(
    pair: Pair, prefix: str, paused: Callable[[], None]
) -> None:
    # A client that retries by itself: the store leaves its commands to it (no lane).
    client = aioredis.Redis.from_url(pair.primary.url, retry=Retry(NoBackoff(), 2))
    store = RedisStore(client, prefix=prefix, min_replicas=1, replica_timeout=0.1)
    assert not store._link.lane
    try:
        await store.commit(turn("s", "t1", "a"))
        paused()
        with pytest.raises(CommitNotReplicated):
            await store.commit(turn("s", "t2", "b"))
        assert await texts(store, "s") == ["a", "b"]
        assert not client.connection_pool._in_use_connections  # every connection given back
    finally:
        await store.aclose()
        await client.aclose()


async def test_the_session_treats_the_turn_as_committed_and_raises(
    replicated: RedisStore, paused: Callable[[], None]
) -> None:
    async with Session(replicated, "s") as first:
        first.add(Message.user("q1"), Message.assistant("a1"))
    paused()
    session = Session(replicated, "s")
    with pytest.raises(CommitNotReplicated) as caught:
        async with session:
            session.add(Message.user("q2"), Message.assistant("a2"))
    # Committed: the block's state says so (nothing pending, the stored messages).
    assert session.pending == ()
    assert session.committed == caught.value.messages
    assert [m.id for m in session.committed] == ["2", "3"]
    async with Session(replicated, "s") as later:  # stored once; the lock was released
        assert [m.text for m in later.history] == ["q1", "a1", "q2", "a2"]


async def test_a_replica_that_catches_up_confirms_the_next_commits(
    replicated: RedisStore, pair: Pair
) -> None:
    pair.pause()
    try:
        with pytest.raises(CommitNotReplicated):
            await replicated.commit(turn("s", "t1", "a"))
    finally:
        pair.resume()
    stored = await replicated.commit(turn("s", "t2", "b"))
    assert [m.text for m in stored] == ["b"]
    replica = RedisStore(aioredis.Redis(port=pair.replica.port), prefix=replicated.prefix)
    try:
        assert await texts(replica, "s") == ["a", "b"]  # acknowledged: both are there
    finally:
        await replica.client.aclose()


async def test_a_commit_to_a_replica_is_refused_as_not_stored(pair: Pair, prefix: str) -> None:
    """A plain client pointed at a replica: READONLY is "unavailable, not stored"."""
    async with RedisStore.from_url(pair.replica.url, prefix=prefix, min_replicas=1) as store:
        with pytest.raises(StoreUnavailable) as caught:
            await store.commit(turn("s", "t1", "a"))
        assert [m.text for m in caught.value.unsaved] == ["a"]
        assert await texts(store, "s") == []


# -- Cluster: WAIT goes to the node that ran the commit ----------------------------------


async def test_on_a_cluster_the_wait_goes_to_the_slot_primary(
    redis_cluster: ClusterServers, prefix: str
) -> None:
    """The test cluster has no replicas: each commit is applied on its slot's primary
    and acknowledged by 0 of 1, whichever node holds the session."""
    client = cluster_client(redis_cluster)
    store = RedisStore(client, prefix=prefix, min_replicas=1, replica_timeout=0.05)
    try:
        for i in range(6):  # sessions spread over the three primaries
            sid = f"s{i}"
            with pytest.raises(CommitNotReplicated) as caught:
                await store.commit(turn(sid, f"t{i}", f"m{i}"))
            assert (caught.value.acknowledged, caught.value.required) == (0, 1)
            assert await texts(store, sid) == [f"m{i}"]
            # Re-sent: found applied, confirmed by a probe on the same node.
            with pytest.raises(CommitNotReplicated):
                await store.commit(turn(sid, f"t{i}", f"m{i}"))
            assert await texts(store, sid) == [f"m{i}"]
    finally:
        for i in range(6):
            await store.delete(f"s{i}")
        await store.aclose()
        await client.aclose()


async def test_a_block_that_raised_and_commits_anyway_says_it_was_saved(
    replicated: RedisStore, paused: Callable[[], None]
) -> None:
    paused()
    session = Session(replicated, "s", on_error="commit")
    with pytest.raises(ValueError, match="the handler failed") as caught:
        async with session:
            session.add(Message.user("q"))
            raise ValueError("the handler failed")
    if sys.version_info >= (3, 11):  # exceptions carry notes from 3.11 on
        assert any("the staged messages were saved" in n for n in caught.value.__notes__)
    assert session.pending == () and [m.text for m in session.committed] == ["q"]
    assert await texts(replicated, "s") == ["q"]
