"""Bookkeeping lost under eviction: a commit that finds a session's history without its
turn ids (or without its meta hash) counts it in ``store.bookkeeping_lost`` and says
so in a log line, at most once a minute; and what exactly-once loses then, exactly."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import pytest
import redis

from promptkit_async import CommitOutcomeUnknown, Message, RedisStore, Session

from ..samples import u

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..backends import RedisBackend
    from ..conftest import RedisServer

LOGGER = "promptkit_async.stores.redis"


def _said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "turn ids or meta hash" in r.getMessage()]


async def test_a_commit_that_finds_the_turn_ids_gone_says_so(
    redis_backend: RedisBackend, caplog: pytest.LogCaptureFixture
) -> None:
    store, client = redis_backend.redis, redis_backend.client
    await store.append("s", [u("a")])
    await store.append("s", [u("b")])
    assert store.bookkeeping_lost == 0  # a new session and a normal turn: nothing lost
    await client.delete(store.key("s", "t"))  # what eviction does to the turn ids
    with caplog.at_level(logging.WARNING, LOGGER):
        await store.append("s", [u("c")])
    assert store.bookkeeping_lost == 1
    [line] = _said(caplog)
    assert "'s'" in line and "evicted" in line
    await store.append("s", [u("d")])  # the commit rebuilt them
    assert store.bookkeeping_lost == 1
    assert [m.text for m in await store.load("s")] == ["a", "b", "c", "d"]
    assert [m.id for m in await store.load("s")] == ["0", "1", "2", "3"]


async def test_a_commit_that_finds_the_meta_hash_gone_says_so(redis_backend: RedisBackend) -> None:
    store, client = redis_backend.redis, redis_backend.client
    async with Session(store, "s", owner="ada") as s:
        s.add(u("a"))
    await client.delete(store.key("s", "m"))  # the owner, title, counters: gone
    async with Session(store, "s", owner="bob") as s:  # nothing left to refuse it with
        s.add(u("b"))
    assert store.bookkeeping_lost == 1
    assert [m.id for m in await store.load("s")] == ["0", "1"]  # ids go on, never reused
    info = await store.info("s")
    assert info is not None and info.owner == "bob"  # what the loss costs: said in the log


async def test_records_of_0_1_0_without_meta_are_not_a_loss(redis_backend: RedisBackend) -> None:
    """0.1.0 kept no meta hash and no record headers: its histories are upgraded, not
    reported."""
    store, client = redis_backend.redis, redis_backend.client
    await client.rpush(store.key("old"), b'{"v":1,"r":"user","c":"hi"}')
    await client.zadd(store.key("old", "t"), {"turn-of-0.1.0": 1})
    await store.append("old", [u("x")])
    assert store.bookkeeping_lost == 0
    assert [m.id for m in await store.load("old")] == ["0", "1"]


async def test_the_log_line_is_said_at_most_once_a_minute(
    redis_backend: RedisBackend, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, client = redis_backend.redis, redis_backend.client
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])  # as _commit reads it
    with caplog.at_level(logging.WARNING, LOGGER):
        for i in range(5):
            await store.append(f"s{i}", [u("x")])
            await client.delete(store.key(f"s{i}", "t"))
            await store.append(f"s{i}", [u("y")])
        clock[0] += 61
        await store.append("s0", [u("z")])  # rebuilt: no loss
        await client.delete(store.key("s0", "t"))
        await store.append("s0", [u("w")])
    assert store.bookkeeping_lost == 6
    lines = _said(caplog)
    assert len(lines) == 2 and "(5 such commits" not in lines[0] and "6 such" in lines[1]


async def test_what_exactly_once_loses_with_the_turn_ids(redis_backend: RedisBackend) -> None:
    """Only turns committed before the loss: re-sent by the application with the same
    turn id, one applies again (the detection says so); the store's own re-send and a
    settle of such a turn cannot tell and say CommitOutcomeUnknown (never a silent
    duplicate); turns after the loss are protected again."""
    store, client = redis_backend.redis, redis_backend.client
    await store.append("s", [u("q")], turn_id="t1")
    await store.append("s", [u("q")], turn_id="t1")  # recognised: applied once
    assert [m.text for m in await store.load("s")] == ["q"]
    await client.delete(store.key("s", "t"))
    with pytest.raises(CommitOutcomeUnknown):
        await store.settle_turn("s", "t1")
    await store.append("s", [u("q")], turn_id="t1")  # no longer recognised
    assert [m.text for m in await store.load("s")] == ["q", "q"]
    assert store.bookkeeping_lost == 1
    await store.append("s", [u("q")], turn_id="t1")  # recorded again: once more is once
    assert [m.text for m in await store.load("s")] == ["q", "q"]


async def test_real_eviction_under_allkeys_lru_is_detected(
    spawn_server: Callable[..., RedisServer], prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A server of its own under maxmemory and allkeys-lru: the session's turn ids and
    meta idle while its history is read, filler pushes memory over the limit until
    the server evicts the turn ids; the next commit finds the history alone."""
    srv = spawn_server("--maxmemory-policy", "allkeys-lru", "--maxmemory-samples", "64")
    admin = redis.Redis(port=srv.port, protocol=2)
    try:
        async with RedisStore.from_url(srv.url, prefix=prefix) as store:
            evicted = False
            for attempt in range(5):
                sid = f"s{attempt}"
                await store.append(sid, [Message.user("kept " * 20)], turn_id="t1")
                h, t = store.key(sid), store.key(sid, "t")
                used = int(admin.info("memory")["used_memory"])
                admin.config_set("maxmemory", str(used + 2_000_000))
                await asyncio.sleep(1.1)  # the LRU clock's resolution is one second
                deadline = time.monotonic() + 10
                filler = 0
                while admin.exists(t) and time.monotonic() < deadline:
                    await store.load(sid)  # the history stays recently used
                    admin.set(f"{prefix}-filler:{attempt}:{filler}", b"x" * 50_000)
                    filler += 1
                admin.config_set("maxmemory", "0")
                if not admin.exists(t) and admin.exists(h):
                    evicted = True
                    break
            assert evicted, "the server never evicted the turn ids alone"
            assert int(admin.info("stats")["evicted_keys"]) > 0
            with caplog.at_level(logging.WARNING, LOGGER):
                await store.append(sid, [u("after")])
            assert store.bookkeeping_lost == 1
            assert _said(caplog)
            assert [m.text for m in await store.load(sid)][-1] == "after"
    finally:
        admin.close()
