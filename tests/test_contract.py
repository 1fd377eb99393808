"""The behaviour every store must have, run on MemoryStore, fakeredis and real Redis."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from promptkit_async import (
    CorruptHistory,
    InvalidSessionId,
    MemoryStore,
    Message,
    RedisStore,
    Session,
    SessionBusy,
    ToolCall,
)

from .conftest import raw_client

if TYPE_CHECKING:
    from promptkit_async.stores import Store


def u(text: str) -> Message:
    return Message.user(text)


def a(text: str) -> Message:
    return Message.assistant(text)


async def test_second_turn_sees_the_first(store: Store) -> None:
    async with Session(store, "user-123") as s:
        assert s.history == ()
        s.add(u("my name is Ada"), a("hello Ada"))
    async with Session(store, "user-123") as s:
        assert [m.content for m in s.history] == ["my name is Ada", "hello Ada"]
        assert s.history[0] == u("my name is Ada")


async def test_round_trip_keeps_every_field(store: Store) -> None:
    msgs = [
        Message.system("be terse", source="config"),
        Message.user("what's the weather?", name="ada"),
        Message.assistant(
            "", tool_calls=[ToolCall("call_1", "get_weather", '{"city": "Paris"}')], n=1
        ),
        Message.tool('{"temp": 21}', tool_call_id="call_1"),
        Message.assistant("21°C ☀️ \x00 \r\n", usage={"in": 3, "out": [1, 2.5, None, True]}),
    ]
    await store.append("s", msgs, max_messages=None)
    assert await store.load("s") == msgs


async def test_nothing_staged_writes_nothing(store: Store) -> None:
    async with Session(store, "quiet"):
        pass
    assert await store.load("quiet") == []
    assert not await store.exists("quiet")  # type: ignore[attr-defined]


async def test_trims_in_storage_and_on_load(store: Store) -> None:
    await store.append("t", [u(str(i)) for i in range(30)], max_messages=None)
    async with Session(store, "t", max_messages=5) as s:
        assert [m.content for m in s.history] == ["25", "26", "27", "28", "29"]
        s.add(u("30"))
    # storage is capped to max_messages by the commit
    assert [m.content for m in await store.load("t")] == ["26", "27", "28", "29", "30"]
    assert [m.content for m in await store.load("t", limit=2)] == ["29", "30"]


async def test_unlimited_history(store: Store) -> None:
    for i in range(3):
        async with Session(store, "big", max_messages=None) as s:
            s.add(*(u(f"{i}-{j}") for j in range(10)))
    async with Session(store, "big", max_messages=None) as s:
        assert len(s.history) == 30


async def test_window_never_starts_with_an_orphan_tool_result(store: Store) -> None:
    call = ToolCall("call_9", "lookup", "{}")
    call2 = ToolCall("call_10", "lookup", "{}")
    msgs = [
        u("q"),
        Message.assistant("", tool_calls=[call, call2]),
        Message.tool("r1", tool_call_id="call_9"),
        Message.tool("r2", tool_call_id="call_10"),
        a("done"),
    ]
    await store.append("tools", msgs, max_messages=None)
    # A window of 3 would start with the second tool result: it is dropped.
    async with Session(store, "tools", max_messages=3) as s:
        assert [m.role for m in s.history] == ["assistant"]
        assert s.history[0].content == "done"
    # A window of 4 starts with the assistant's tool_calls: kept whole.
    async with Session(store, "tools", max_messages=4) as s:
        assert [m.role for m in s.history] == ["assistant", "tool", "tool", "assistant"]


async def test_system_prompt_is_sent_first_and_never_stored(store: Store) -> None:
    for i in range(3):
        async with Session(store, "sys", system="You are terse.", max_messages=2) as s:
            assert s.messages[0] == Message.system("You are terse.")
            assert all(m.role != "system" for m in s.history)
            s.add(u(f"q{i}"), a(f"a{i}"))
    stored = await store.load("sys")
    assert [m.content for m in stored] == ["q2", "a2"]


async def test_ttl_set_on_write(store: Store) -> None:
    async with Session(store, "ttl", ttl=timedelta(hours=1)) as s:
        s.add(u("x"))
    left = await store.ttl("ttl")  # type: ignore[attr-defined]
    assert left is not None and 3590 < left <= 3600


async def test_ttl_none_keeps_forever(store: Store) -> None:
    async with Session(store, "forever", ttl=100) as s:
        s.add(u("x"))
    assert await store.ttl("forever") is not None  # type: ignore[attr-defined]
    async with Session(store, "forever", ttl=None) as s:
        s.add(u("y"))
    assert await store.ttl("forever") is None  # type: ignore[attr-defined]
    assert len(await store.load("forever")) == 2


async def test_ttl_is_sliding_refreshed_by_each_write(store: Store, store_kind: str) -> None:
    async with Session(store, "slide", ttl=1000) as s:
        s.add(u("x"))
    if isinstance(store, RedisStore):
        # Age the session: only 5 s left.
        await raw_client(store).pexpire(store.key("slide"), 5000)
    else:
        assert isinstance(store, MemoryStore)
        store._data["slide"].expires_at = store._clock() + 5  # age the entry
    left = await store.ttl("slide")
    assert left is not None and left <= 5
    async with Session(store, "slide", ttl=1000) as s:
        s.add(u("y"))
    left = await store.ttl("slide")
    assert left is not None and left > 990


async def test_expired_session_is_gone() -> None:
    now = [1000.0]
    store = MemoryStore(clock=lambda: now[0])
    async with Session(store, "e", ttl=10) as s:
        s.add(u("x"))
    now[0] += 9.9
    assert len(await store.load("e")) == 1
    now[0] += 0.2
    assert await store.load("e") == []
    assert "e" not in store._data


async def test_expired_sessions_are_swept_without_being_read() -> None:
    now = [0.0]
    store = MemoryStore(clock=lambda: now[0])
    for i in range(100):
        await store.append(f"s{i}", [u("x")], ttl=10)
    now[0] += 11
    await store.append("fresh", [u("x")], ttl=10)
    assert list(store._data) == ["fresh"]


async def test_redis_ttl_expires_for_real(store: Store, store_kind: str) -> None:
    if store_kind == "memory":
        pytest.skip("MemoryStore expiry is tested with a fake clock")
    await store.append("short", [u("x")], ttl=0.05)
    await asyncio.sleep(0.15)
    assert await store.load("short") == []


async def test_50_concurrent_turns_on_one_session_keep_pairs_adjacent(store: Store) -> None:
    seen_before: list[int] = []

    async def turn(i: int) -> None:
        async with Session(store, "same-id", max_messages=None) as s:
            seen_before.append(len(s.history))
            s.add(u(f"q{i}"))
            await asyncio.sleep(0)  # let the others pile up on the lock
            s.add(a(f"a{i}"))

    await asyncio.gather(*(turn(i) for i in range(50)))
    stored = await store.load("same-id")
    assert len(stored) == 100
    for k in range(0, 100, 2):
        q, ans = stored[k], stored[k + 1]
        assert q.role == "user" and ans.role == "assistant"
        assert q.content[1:] == ans.content[1:]
    # each turn saw every earlier turn: they ran one after another
    assert sorted(seen_before) == list(range(0, 100, 2))
    assert len(store.locks) == 0  # type: ignore[attr-defined]


async def test_different_sessions_do_not_block_each_other(store: Store) -> None:
    inside = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with Session(store, "one"):
            inside.set()
            await release.wait()

    task = asyncio.create_task(holder())
    await inside.wait()
    async with Session(store, "two", lock_timeout=1) as s:
        s.add(u("not blocked"))
    release.set()
    await task


async def test_lock_timeout_raises_session_busy(store: Store) -> None:
    inside = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with Session(store, "busy") as s:
            s.add(u("first"))
            inside.set()
            await release.wait()

    task = asyncio.create_task(holder())
    await inside.wait()
    with pytest.raises(SessionBusy) as info:
        async with Session(store, "busy", lock_timeout=0.05):
            pass
    assert info.value.session_id == "busy"
    assert isinstance(info.value, TimeoutError)
    assert "busy" in str(info.value)
    release.set()
    await task
    assert len(store.locks) == 0  # type: ignore[attr-defined]
    assert [m.content for m in await store.load("busy")] == ["first"]


async def test_exception_in_block_writes_nothing_and_releases(store: Store) -> None:
    with pytest.raises(ZeroDivisionError):
        async with Session(store, "err") as s:
            s.add(u("lost"))
            1 / 0  # noqa: B018
    assert await store.load("err") == []
    assert len(store.locks) == 0  # type: ignore[attr-defined]
    async with Session(store, "err", lock_timeout=1) as s:
        s.add(u("next works"))
    assert len(await store.load("err")) == 1


async def test_on_error_commit_writes_what_was_staged(store: Store) -> None:
    with pytest.raises(RuntimeError):
        async with Session(store, "keep", on_error="commit") as s:
            s.add(u("kept"))
            raise RuntimeError("handler failed")
    assert [m.content for m in await store.load("keep")] == ["kept"]


async def test_cancelled_block_writes_nothing_and_releases_the_lock(store: Store) -> None:
    inside = asyncio.Event()

    async def turn() -> None:
        async with Session(store, "cancel") as s:
            s.add(u("never saved"))
            inside.set()
            await asyncio.sleep(60)
            s.add(a("never"))

    task = asyncio.create_task(turn())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await store.load("cancel") == []
    assert len(store.locks) == 0  # type: ignore[attr-defined]
    async with Session(store, "cancel", lock_timeout=1) as s:
        s.add(u("the next turn works"))
    assert len(await store.load("cancel")) == 1


async def test_cancelled_waiter_leaves_the_registry_clean(store: Store) -> None:
    inside = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with Session(store, "w"):
            inside.set()
            await release.wait()

    async def waiter() -> None:
        async with Session(store, "w") as s:
            s.add(u("waiter"))

    h = asyncio.create_task(holder())
    await inside.wait()
    waiters = [asyncio.create_task(waiter()) for _ in range(3)]
    await asyncio.sleep(0.01)
    waiters[1].cancel()
    release.set()
    await h
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert isinstance(results[1], asyncio.CancelledError)
    assert len(await store.load("w")) == 2
    assert len(store.locks) == 0  # type: ignore[attr-defined]


IDS = [
    "a:b",
    "a{b}",
    "a}b{",
    "a*b",
    "a",
    "a:{b}",
    "a%7Bb%7D",
    "a%b",
    "{a}",
    "{}",
    "*",
    "a\\*b",
    "a?b",
    "a[b]",
    "user-1",
    "user-1:conv-2",
    "üñî©ødé 🎉",
    "x" * 600,
    "x" * 601,
    " ",
    "a\nb",
]


async def test_ids_differing_only_in_special_characters_never_share(store: Store) -> None:
    for sid in IDS:
        await store.append(sid, [u(sid)])
    for sid in IDS:
        assert [m.content for m in await store.load(sid)] == [sid]
    if isinstance(store, RedisStore):
        keys = {store.key(sid) for sid in IDS}
        assert len(keys) == len(IDS)


async def test_all_keys_of_a_session_share_one_hash_tag(store: Store) -> None:
    if not isinstance(store, RedisStore):
        pytest.skip("key layout is a Redis matter")
    from redis.crc import key_slot

    for sid in IDS:
        slots = {key_slot(store.key(sid, kind)) for kind in ("h", "t", "l")}
        assert len(slots) == 1, sid


@pytest.mark.parametrize("bad", ["", 42, None, b"bytes", "x" * 5000, "\ud800"])
async def test_bad_session_id_is_a_clear_error(store: Store, bad: object) -> None:
    with pytest.raises(InvalidSessionId):
        Session(store, bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidSessionId):
        await store.load(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidSessionId):
        await store.append(bad, [u("x")])  # type: ignore[arg-type]
    with pytest.raises(InvalidSessionId):
        await store.delete(bad)  # type: ignore[arg-type]


async def test_delete(store: Store) -> None:
    await store.append("gone", [u("x")])
    await store.append("kept", [u("y")])
    assert await store.delete("gone") is True
    assert await store.delete("gone") is False
    assert await store.load("gone") == []
    assert len(await store.load("kept")) == 1
    if isinstance(store, RedisStore):
        client = raw_client(store)
        assert not await client.exists(store.key("gone"), store.key("gone", "t"))


async def test_corrupt_stored_record_raises_corrupt_history(store: Store) -> None:
    if not isinstance(store, RedisStore):
        pytest.skip("MemoryStore keeps Message objects, which cannot be corrupt")
    await store.append("bad", [u("fine"), a("fine too")])
    client = raw_client(store)
    await client.rpush(store.key("bad"), b"{not json")
    with pytest.raises(CorruptHistory) as info:
        async with Session(store, "bad"):
            pass
    assert info.value.session_id == "bad"
    assert info.value.index is not None
    assert "bad" in str(info.value)
    assert len(store.locks) == 0
    with pytest.raises(CorruptHistory) as info2:
        await store.load("bad")
    assert info2.value.index == 2
    await client.rpush(store.key("bad2"), b'{"v":1,"r":"wizard","c":"x"}')
    with pytest.raises(CorruptHistory, match="wizard"):
        await store.load("bad2")
    await client.rpush(store.key("bad3"), b"[1, 2]", b"\xff\xfe")
    with pytest.raises(CorruptHistory):
        await store.load("bad3")


async def test_wrong_redis_type_is_corrupt_history(store: Store) -> None:
    if not isinstance(store, RedisStore):
        pytest.skip("Redis key types")
    await raw_client(store).set(store.key("str"), b"a string, not a list")
    with pytest.raises(CorruptHistory):
        await store.load("str")


async def test_newer_format_records_still_load(store: Store) -> None:
    if not isinstance(store, RedisStore):
        pytest.skip("stored bytes")
    await raw_client(store).rpush(
        store.key("future"),
        b'{"v":7,"r":"user","c":"hi","new_field":{"x":1},"m":{"k":"v"}}',
    )
    [m] = await store.load("future")
    assert m == Message.user("hi", k="v")


async def test_append_with_the_same_turn_id_applies_once(store: Store) -> None:
    await store.append("idem", [u("q"), a("r")], turn_id="turn-1")
    await store.append("idem", [u("q"), a("r")], turn_id="turn-1")
    await store.append("idem", [u("q2")], turn_id="turn-2")
    assert [m.content for m in await store.load("idem")] == ["q", "r", "q2"]


async def test_a_million_ids_leave_the_registry_empty(store: Store) -> None:
    # Memory-only to keep it fast: the registry is the same class for every store.
    if not isinstance(store, MemoryStore):
        pytest.skip("registry growth is store-independent")
    for i in range(1_000_000):
        entry = await store.locks.acquire(f"s{i}")
        store.locks.release(f"s{i}", entry)
    assert len(store.locks) == 0
    for i in range(2000):
        async with Session(store, f"user-{i}"):
            pass
    assert len(store.locks) == 0


async def test_sessions_listing_with_glob_characters(store: Store) -> None:
    ids = ["user-42-conv-1", "user-42-conv-2", "user-42*", "user-4", "user-42-[x]", "other"]
    for sid in ids:
        await store.append(sid, [u("x")])
    found = {s async for s in store.sessions("user-42")}  # type: ignore[attr-defined]
    assert found == {"user-42-conv-1", "user-42-conv-2", "user-42*", "user-42-[x]"}
    star = {s async for s in store.sessions("user-42*")}  # type: ignore[attr-defined]
    assert star == {"user-42*"}
    assert await store.delete_prefix("user-42-") == 3  # type: ignore[attr-defined]
    left = {s async for s in store.sessions("")}  # type: ignore[attr-defined]
    assert left == {"user-42*", "user-4", "other"}
