"""Hostile input on a real Redis server: any id, any text, size limits, corrupt state.

Property-based: every session id the API accepts and every message text
(all of Unicode except lone surrogates, NUL, CR LF, very long) round-trips
exactly and touches only that session's own keys. Corrupt stored state (bad
records, records from a newer format, keys of the wrong Redis type) gives a
typed error or a documented skip, never a crash, a silent overwrite, or a
partial write.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from promptkit_async import (
    CorruptHistory,
    InvalidSessionId,
    Message,
    MessageTooLarge,
    RedisStore,
    Session,
    StoreRejected,
    ToolCall,
)
from promptkit_async.providers import ScriptedProvider
from promptkit_async.stores._redis import _keys

from ..conftest import contents

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    import redis.asyncio as aioredis

pytestmark = pytest.mark.redis

MAX_ID = 4096
_special = st.sampled_from(["{", "}", "%", "%7B", "*", "?", "[", "]", "\\", ":", "\r\n", "\x00"])
session_ids = st.lists(
    st.one_of(st.text(st.characters(codec="utf-8"), min_size=1, max_size=40), _special),
    min_size=1,
    max_size=8,
).map("".join)
texts = st.text(st.characters(codec="utf-8"), max_size=2000)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), texts)
messages = st.one_of(
    st.builds(Message.user, texts),
    st.builds(Message.system, texts),
    st.builds(lambda c, n: Message("user", c, name=n), texts, texts),
    st.builds(
        lambda c, args: Message.assistant(c, tool_calls=[ToolCall("call_1", "fn", args)]),
        texts,
        texts,
    ),
    st.builds(lambda c, i: Message.tool(c, tool_call_id=i), texts, texts.filter(bool)),
    st.builds(
        lambda c, m: Message("assistant", c, metadata=m),
        texts,
        st.dictionaries(texts, json_scalars, max_size=4),
    ),
)

_counter = itertools.count()
_hypothesis = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


async def keys_under(client: aioredis.Redis, prefix: str) -> set[bytes]:
    return {k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)}


@pytest.fixture
async def redis_client(redis_client: aioredis.Redis, prefix: str) -> AsyncIterator[aioredis.Redis]:
    """The shared client, also erasing the per-example key spaces ``<prefix>-<n>``."""
    try:
        yield redis_client
    finally:
        async for k in redis_client.scan_iter(match=f"{prefix}-*", count=1000):
            await redis_client.delete(k)


@_hypothesis
@given(sid=session_ids, batch=st.lists(messages, min_size=1, max_size=4))
@example(sid="x" * MAX_ID, batch=[Message.user("\x00\r\n" * 100_000)])
@example(sid="a}b{c%7D:{h}", batch=[Message.user("{", name="}")])
@example(sid="\U0010ffff\u2028", batch=[Message.user("\ud7ff\ue000\ufffe\uffff")])
@pytest.mark.parametrize("compress_above", [None, 32])
async def test_any_id_and_content_round_trip_touching_only_their_own_keys(
    redis_client: aioredis.Redis,
    prefix: str,
    compress_above: int | None,
    sid: str,
    batch: list[Message],
) -> None:
    own = f"{prefix}-{next(_counter)}"  # a fresh key space per example
    store = RedisStore(redis_client, prefix=own, compress_above=compress_above)
    canary = sid + "\x00" if len(sid) < MAX_ID else sid[:-1]
    await store.append(canary, [Message.user("canary")])
    await store.append(sid, batch, max_messages=None)
    assert await store.load(sid) == batch
    assert await store.load(sid, limit=1) == batch[-1:]
    assert [m.content for m in await store.load(canary)] == ["canary"]
    assert {s async for s in store.sessions("")} == {sid, canary}
    expected = {store.key(s, kind) for s in (sid, canary) for kind in ("h", "t", "m")}
    # Besides the sessions' own keys: their slots' indexes and the registry of slots.
    indexes = {_keys.slot_index_key(own, key_slot(store.key(s))) for s in (sid, canary)}
    registry = _keys.slot_registry_key(own)
    assert await keys_under(redis_client, own) == expected | indexes | {registry}
    assert await store.delete(sid) is True
    assert [m.content for m in await store.load(canary)] == ["canary"]
    await store.delete(canary)
    # A slot's index goes with its last session; the registry lapses by itself.
    assert await keys_under(redis_client, own) == {registry}


@_hypothesis
@given(a=session_ids, b=session_ids, text=texts)
async def test_two_ids_never_share_anything(
    redis_client: aioredis.Redis, prefix: str, a: str, b: str, text: str
) -> None:
    if a == b:
        return
    store = RedisStore(redis_client, prefix=f"{prefix}-{next(_counter)}")
    await store.append(a, [Message.user(text)])
    assert await store.load(b) == []
    assert not await store.exists(b)
    await store.append(b, [Message.user("b")])
    assert await contents(store, a) == [text]
    assert await store.delete_prefix(b) >= 1
    assert await contents(store, a) == ([] if a.startswith(b) else [text])


@pytest.mark.parametrize(
    "bad", ["", "x" * (MAX_ID + 1), "\ud800", "a\udfffb", b"bytes", 7, None, ["list"]]
)
async def test_ids_the_api_refuses_write_nothing(
    redis_client: aioredis.Redis, prefix: str, bad: object
) -> None:
    store = RedisStore(redis_client, prefix=prefix)
    with pytest.raises(InvalidSessionId):
        await store.append(bad, [Message.user("x")])  # type: ignore[arg-type]
    with pytest.raises(InvalidSessionId):
        Session(store, bad)  # type: ignore[arg-type]
    assert await keys_under(redis_client, prefix) == set()


# -- size limits -------------------------------------------------------------------------


async def test_size_limits_raise_and_write_nothing(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    store = RedisStore(redis_client, prefix=prefix)

    def limited() -> Session:
        return Session(store, "s", max_message_bytes=100, max_turn_bytes=150)

    async with limited() as s:
        with pytest.raises(MessageTooLarge) as info:
            s.add(Message.user("é" * 51))  # 102 bytes of UTF-8
        assert (info.value.size, info.value.limit) == (102, 100)
        assert s.pending == ()
    assert not await store.exists("s")
    with pytest.raises(MessageTooLarge, match="max_turn_bytes=150"):
        async with limited() as s:
            s.add(Message.user("x" * 100))
            s.add(Message.assistant("y" * 51))  # the turn: 151 bytes
    assert not await store.exists("s")
    assert len(store.locks) == 0
    async with limited() as s:  # exactly at both limits
        s.add(Message.user("x" * 100), Message.assistant("y" * 50))
    assert [len(c) for c in await contents(store, "s")] == [100, 50]


async def test_an_oversize_question_is_never_sent_nor_saved(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    store = RedisStore(redis_client, prefix=prefix)
    provider = ScriptedProvider(["never"])
    with pytest.raises(MessageTooLarge):
        async with Session(store, "s", provider=provider, max_message_bytes=10) as s:
            await s.send("x" * 11)
    assert provider.calls == []
    assert not await store.exists("s")


@_hypothesis
@given(sizes=st.lists(st.integers(0, 120), min_size=1, max_size=6))
async def test_what_is_stored_always_respects_the_limits(
    redis_client: aioredis.Redis, prefix: str, sizes: list[int]
) -> None:
    store = RedisStore(redis_client, prefix=f"{prefix}-{next(_counter)}")
    async with Session(store, "s", max_message_bytes=100, max_turn_bytes=200) as s:
        for n in sizes:
            with contextlib.suppress(MessageTooLarge):
                s.add(Message.user("x" * n))
    stored = [len(c) for c in await contents(store, "s")]
    assert all(n <= 100 for n in stored)
    assert sum(stored) <= 200
    assert stored == [n for n in stored if n in sizes]


# -- corrupt stored state ------------------------------------------------------------------


RECORDS: dict[str, bytes] = {
    "not JSON": b"{not json",
    "not an object": b"[1, 2]",
    "invalid UTF-8": b"\xff\xfe",
    "content not a string": b'{"v":1,"r":"user","c":5}',
    "no role": b'{"v":1,"c":"x"}',
    "unknown role": b'{"v":1,"r":"wizard","c":"x"}',
    "bad tool calls": b'{"v":1,"r":"assistant","c":"","tc":[[1]]}',
    "tool calls not a list": b'{"v":1,"r":"assistant","c":"","tc":"abc"}',
    "nested too deep": b"[" * 100_000 + b"]" * 100_000,
    "metadata nested too deep": b'{"v":1,"r":"user","c":"x","m":{"a":'
    + b"[" * 100
    + b"]" * 100
    + b"}}",
    "metadata not an object": b'{"v":1,"r":"user","c":"x","m":[1]}',
    "bad compressed record": b"\x00zgarbage",
    "newer format, unreadable": b'{"v":99,"r":"oracle","c":"x"}',
}


@pytest.mark.parametrize("name", sorted(RECORDS))
async def test_a_corrupt_record_is_corrupt_history_and_is_never_overwritten(
    redis_client: aioredis.Redis, prefix: str, name: str
) -> None:
    store = RedisStore(redis_client, prefix=prefix)
    await store.append("s", [Message.user("ok")])
    await redis_client.rpush(store.key("s"), RECORDS[name])
    with pytest.raises(CorruptHistory) as info:
        await store.load("s")
    assert info.value.session_id == "s"
    assert info.value.index == 1
    if name.startswith("newer"):
        assert "format version 99" in str(info.value)
    with pytest.raises(CorruptHistory):
        async with Session(store, "s") as s:
            s.add(Message.user("never"))
    assert len(store.locks) == 0
    first, second = await redis_client.lrange(store.key("s"), 0, -1)
    assert isinstance(first, bytes)
    assert first.startswith(b"\x002") and first.endswith(b'\n{"v":2,"r":"user","c":"ok"}')
    assert second == RECORDS[name]
    # Documented way on: start the conversation afresh despite the bad record.
    async with Session(store, "s", on_load_error="empty", lazy=True) as s:
        s.add(Message.user("appended"))
    assert await redis_client.llen(store.key("s")) == 3


async def test_a_newer_format_with_unknown_fields_still_loads(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    store = RedisStore(redis_client, prefix=prefix)
    await redis_client.rpush(
        store.key("s"), b'{"v":2,"r":"user","c":"hi","x":{"future":[1]},"m":{"k":"v"}}'
    )
    assert await store.load("s") == [Message.user("hi", k="v")]


WRONG_TYPES: dict[str, Callable[[aioredis.Redis, bytes], Awaitable[object]]] = {
    "string": lambda r, k: r.set(k, b"a string"),
    "hash": lambda r, k: r.hset(k, "f", "v"),
    "set": lambda r, k: r.sadd(k, "m"),
    "zset": lambda r, k: r.zadd(k, {"m": 1}),
    "stream": lambda r, k: r.xadd(k, {"f": "v"}),
}


@pytest.mark.parametrize("kind", sorted(WRONG_TYPES))
async def test_history_key_of_the_wrong_type_is_never_overwritten(
    redis_client: aioredis.Redis, prefix: str, kind: str
) -> None:
    store = RedisStore(redis_client, prefix=prefix)
    h = store.key("s")
    await WRONG_TYPES[kind](redis_client, h)
    before = await redis_client.dump(h)
    with pytest.raises(CorruptHistory):
        await store.load("s")
    with pytest.raises(StoreRejected, match="wrong Redis type") as info:
        await store.append("s", [Message.user("x")], turn_id="t1")
    assert info.value.unsaved == (Message.user("x"),)
    with pytest.raises(StoreRejected):
        async with Session(store, "s", lazy=True) as s:
            s.add(Message.user("y"))
    assert len(store.locks) == 0
    assert await redis_client.dump(h) == before
    assert await store.turn_status("s", "t1") == "unknown"  # nothing recorded either
    assert not await redis_client.exists(store.key("s", "t"))


@pytest.mark.parametrize("kind", ["string", "hash", "set", "stream"])
async def test_turns_key_of_the_wrong_type_writes_nothing(
    redis_client: aioredis.Redis, prefix: str, kind: str
) -> None:
    store = RedisStore(redis_client, prefix=prefix)
    await store.append("s", [Message.user("ok")])
    t = store.key("s", "t")
    await redis_client.delete(t)
    await WRONG_TYPES[kind](redis_client, t)
    before = await redis_client.dump(t)
    with pytest.raises(StoreRejected):
        await store.append("s", [Message.user("x")])
    assert await contents(store, "s") == ["ok"]
    assert await redis_client.dump(t) == before


async def test_a_damaged_session_index_never_causes_a_partial_write(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    store = RedisStore(redis_client, prefix=prefix)
    # The index the commit writes is the one of the session's own slot.
    index = _keys.slot_index_key(prefix, key_slot(store.key("s")))
    await redis_client.set(index, b"not a sorted set")
    with pytest.raises(StoreRejected, match="wrong Redis type"):
        await store.append("s", [Message.user("x")], turn_id="t1")
    # Reported as not saved, so really not saved: no message, no turn id.
    assert await contents(store, "s") == []
    assert await store.turn_status("s", "t1") == "unknown"
    assert await redis_client.get(index) == b"not a sorted set"
