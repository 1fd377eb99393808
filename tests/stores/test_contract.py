"""The behaviour every store must have, run on every backend (see tests/backends.py)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest

from promptkit_async import (
    CorruptHistory,
    InvalidSessionId,
    MemoryStore,
    Message,
    RedisStore,
    Session,
    SessionBusy,
    StoreUnavailable,
    ToolCall,
)

from ..conftest import free_port
from ..samples import IDS, a, u

if TYPE_CHECKING:
    from promptkit_async import BaseStore

    from ..backends import Backend


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_load(self, session_id: str, seconds: float, messages: int) -> None:
        self.events.append(("load", session_id, messages, seconds))

    def on_save(self, session_id: str, seconds: float, messages: int) -> None:
        self.events.append(("save", session_id, messages, seconds))

    def on_error(self, operation: str, session_id: str | None, error: BaseException) -> None:
        self.events.append(("error", operation, session_id, type(error).__name__))


async def test_second_turn_sees_the_first(store: BaseStore) -> None:
    async with Session(store, "user-123") as s:
        assert s.history == ()
        s.add(u("my name is Ada"), a("hello Ada"))
    async with Session(store, "user-123") as s:
        assert [m.content for m in s.history] == ["my name is Ada", "hello Ada"]
        assert s.history[0] == u("my name is Ada")


async def test_round_trip_keeps_every_field(store: BaseStore) -> None:
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


async def test_nothing_staged_writes_nothing(store: BaseStore) -> None:
    async with Session(store, "quiet"):
        pass
    assert await store.load("quiet") == []
    assert not await store.exists("quiet")


async def test_the_window_trims_what_is_sent_never_what_is_kept(store: BaseStore) -> None:
    await store.append("t", [u(str(i)) for i in range(30)], max_messages=None)
    async with Session(store, "t", max_messages=5) as s:
        assert [m.content for m in s.history] == ["25", "26", "27", "28", "29"]
        s.add(u("30"))
    assert [m.content for m in await store.load("t")] == [str(i) for i in range(31)]
    assert [m.content for m in await store.load("t", limit=2)] == ["29", "30"]


async def test_unlimited_history(store: BaseStore) -> None:
    for i in range(3):
        async with Session(store, "big", max_messages=None) as s:
            s.add(*(u(f"{i}-{j}") for j in range(10)))
    async with Session(store, "big", max_messages=None) as s:
        assert len(s.history) == 30


async def test_window_never_starts_with_an_orphan_tool_result(store: BaseStore) -> None:
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


async def test_system_prompt_is_sent_first_and_never_stored(store: BaseStore) -> None:
    for i in range(3):
        async with Session(store, "sys", system="You are terse.", max_messages=2) as s:
            assert s.messages[0] == Message.system("You are terse.")
            assert all(m.role != "system" for m in s.history)
            s.add(u(f"q{i}"), a(f"a{i}"))
    stored = await store.load("sys")
    assert [m.content for m in stored] == ["q0", "a0", "q1", "a1", "q2", "a2"]


async def test_ttl_set_on_write(store: BaseStore) -> None:
    async with Session(store, "ttl", ttl=timedelta(hours=1)) as s:
        s.add(u("x"))
    left = await store.ttl("ttl")
    assert left is not None and 3590 < left <= 3600


async def test_ttl_none_keeps_forever(store: BaseStore) -> None:
    async with Session(store, "forever", ttl=100) as s:
        s.add(u("x"))
    assert await store.ttl("forever") is not None
    async with Session(store, "forever", ttl=None) as s:
        s.add(u("y"))
    assert await store.ttl("forever") is None
    assert len(await store.load("forever")) == 2


async def test_ttl_is_sliding_refreshed_by_each_write(backend: Backend) -> None:
    store = backend.store
    async with Session(store, "slide", ttl=1000) as s:
        s.add(u("x"))
    await backend.age("slide", seconds_left=5)
    left = await store.ttl("slide")
    assert left is not None and left <= 5
    async with Session(store, "slide", ttl=1000) as s:
        s.add(u("y"))
    left = await store.ttl("slide")
    assert left is not None and left > 990


async def test_a_session_expires_after_its_ttl(backend: Backend) -> None:
    store = backend.store
    await store.append("short", [u("x")], ttl=0.05)
    await store.append("long", [u("x")], ttl=100)
    await backend.advance(0.15)
    assert await store.load("short") == []
    assert not await store.exists("short")
    assert not await backend.holds("short")
    assert len(await store.load("long")) == 1


async def test_50_concurrent_turns_on_one_session_keep_pairs_adjacent(store: BaseStore) -> None:
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
    assert len(store.locks) == 0


async def test_different_sessions_do_not_block_each_other(store: BaseStore) -> None:
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


async def test_lock_timeout_raises_session_busy(store: BaseStore) -> None:
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
    assert len(store.locks) == 0
    assert [m.content for m in await store.load("busy")] == ["first"]


async def test_exception_in_block_writes_nothing_and_releases(store: BaseStore) -> None:
    with pytest.raises(ZeroDivisionError):
        async with Session(store, "err") as s:
            s.add(u("lost"))
            1 / 0  # noqa: B018
    assert await store.load("err") == []
    assert len(store.locks) == 0
    async with Session(store, "err", lock_timeout=1) as s:
        s.add(u("next works"))
    assert len(await store.load("err")) == 1


async def test_on_error_commit_writes_what_was_staged(store: BaseStore) -> None:
    with pytest.raises(RuntimeError):
        async with Session(store, "keep", on_error="commit") as s:
            s.add(u("kept"))
            raise RuntimeError("handler failed")
    assert [m.content for m in await store.load("keep")] == ["kept"]


async def test_cancelled_block_writes_nothing_and_releases_the_lock(store: BaseStore) -> None:
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
    assert len(store.locks) == 0
    async with Session(store, "cancel", lock_timeout=1) as s:
        s.add(u("the next turn works"))
    assert len(await store.load("cancel")) == 1


async def test_cancelled_waiter_leaves_the_registry_clean(store: BaseStore) -> None:
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
    assert len(store.locks) == 0


async def test_ids_differing_only_in_special_characters_never_share(store: BaseStore) -> None:
    for sid in IDS:
        await store.append(sid, [u(sid)])
    for sid in IDS:
        assert [m.content for m in await store.load(sid)] == [sid]
    for i, sid in enumerate(IDS):
        assert await store.delete(sid)
        for other in IDS[i + 1 :]:
            assert [m.content for m in await store.load(other)] == [other]


@pytest.mark.parametrize("bad", ["", 42, None, b"bytes", "x" * 5000, "\ud800"])
async def test_bad_session_id_is_a_clear_error(store: BaseStore, bad: object) -> None:
    with pytest.raises(InvalidSessionId):
        Session(store, bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidSessionId):
        await store.load(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidSessionId):
        await store.append(bad, [u("x")])  # type: ignore[arg-type]
    with pytest.raises(InvalidSessionId):
        await store.delete(bad)  # type: ignore[arg-type]


async def test_delete(backend: Backend) -> None:
    store = backend.store
    await store.append("gone", [u("x")])
    await store.append("kept", [u("y")])
    assert await store.delete("gone") is True
    assert await store.delete("gone") is False
    assert await store.load("gone") == []
    assert len(await store.load("kept")) == 1
    assert not await backend.holds("gone")  # erased, not just hidden
    assert await backend.holds("kept")


async def test_corrupt_stored_record_raises_corrupt_history(backend: Backend) -> None:
    raw = backend.need_raw()
    store = backend.store
    await store.append("bad", [u("fine"), a("fine too")])
    await raw.push("bad", b"{not json")
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
    await raw.push("bad2", b'{"v":1,"r":"wizard","c":"x"}')
    with pytest.raises(CorruptHistory, match="wizard"):
        await store.load("bad2")
    await raw.push("bad3", b"[1, 2]", b"\xff\xfe")
    with pytest.raises(CorruptHistory):
        await store.load("bad3")


async def test_a_history_of_the_wrong_kind_is_corrupt_history(backend: Backend) -> None:
    await backend.need_raw().clobber("str")
    with pytest.raises(CorruptHistory):
        await backend.store.load("str")


async def test_newer_format_records_still_load(backend: Backend) -> None:
    await backend.need_raw().push(
        "future", b'{"v":7,"r":"user","c":"hi","new_field":{"x":1},"m":{"k":"v"}}'
    )
    [m] = await backend.store.load("future")
    assert m == Message.user("hi", k="v")


async def test_append_with_the_same_turn_id_applies_once(store: BaseStore) -> None:
    await store.append("idem", [u("q"), a("r")], turn_id="turn-1")
    await store.append("idem", [u("q"), a("r")], turn_id="turn-1")
    await store.append("idem", [u("q2")], turn_id="turn-2")
    assert [m.content for m in await store.load("idem")] == ["q", "r", "q2"]


async def test_sessions_listing_with_glob_characters(store: BaseStore) -> None:
    ids = ["user-42-conv-1", "user-42-conv-2", "user-42*", "user-4", "user-42-[x]", "other"]
    for sid in ids:
        await store.append(sid, [u("x")])
    found = {s async for s in store.sessions("user-42")}
    assert found == {"user-42-conv-1", "user-42-conv-2", "user-42*", "user-42-[x]"}
    star = {s async for s in store.sessions("user-42*")}
    assert star == {"user-42*"}
    assert await store.delete_prefix("user-42-") == 3
    left = {s async for s in store.sessions("")}
    assert left == {"user-42*", "user-4", "other"}


async def test_metrics_count_sessions_sizes_and_latency(store: BaseStore) -> None:
    empty = await store.metrics()
    assert empty.active_sessions == 0 and empty.storage_used == 0
    for i in range(5):
        async with Session(store, f"m-{i}") as s:
            s.add(*(u("x" * 100) for _ in range(i + 1)))
    for i in range(5):
        async with Session(store, f"m-{i}"):
            pass
    m = await store.metrics()
    assert m.active_sessions == 5
    assert m.avg_history_size == pytest.approx(3.0)
    assert m.storage_used >= 15 * 100
    assert m.exact and m.sampled == 5
    assert m.load_latency.count >= 10
    assert m.load_latency.p50 is not None and m.load_latency.p99 is not None
    assert 0 <= m.load_latency.p50 <= m.load_latency.p99 < 5
    assert m.save_latency.count == 5
    await store.delete("m-0")
    assert (await store.metrics()).active_sessions == 4


async def test_metrics_sample_estimates_large_stores(store: BaseStore) -> None:
    for i in range(30):
        await store.append(f"s{i}", [u("y" * 50)] * 2)
    m = await store.metrics(sample=10)
    assert m.active_sessions == 30
    assert m.avg_history_size == pytest.approx(2.0)
    # A store either counts exactly or says it sampled: never a silent estimate.
    assert m.exact == (m.sampled == m.active_sessions)
    assert m.sampled in (10, 30)


async def test_expired_sessions_leave_the_count(backend: Backend) -> None:
    store = backend.store
    await store.append("short", [u("x")], ttl=0.05)
    await store.append("long", [u("x")], ttl=100)
    await backend.advance(0.15)
    assert (await store.metrics()).active_sessions == 1


async def test_observers_see_every_load_and_save(store: BaseStore) -> None:
    rec = Recorder()
    store.add_observer(rec)
    async with Session(store, "obs") as s:
        s.add(u("q"), a("r"))
    async with Session(store, "obs"):
        pass
    kinds = [(e[0], e[1], e[2]) for e in rec.events]
    assert kinds == [("load", "obs", 0), ("save", "obs", 2), ("load", "obs", 2)]
    assert all(isinstance(e[3], float) and e[3] >= 0 for e in rec.events)


async def test_observers_see_errors_and_cannot_break_a_turn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken:
        def on_save(self, *args: object) -> None:
            raise RuntimeError("observer bug")

    rec = Recorder()
    down = RedisStore.from_url(
        f"redis://127.0.0.1:{free_port()}", connect_timeout=0.3, retries=0, observers=[rec]
    )
    async with down:
        with pytest.raises(StoreUnavailable):
            await down.load("x")
    assert rec.events == [("error", "load", "x", "StoreUnavailable")]
    mem = MemoryStore(observers=[Broken()])
    async with Session(mem, "x") as s:
        s.add(u("still saved"))
    assert len(await mem.load("x")) == 1
    assert "observer bug" in caplog.text
    with pytest.raises(TypeError):
        mem.add_observer(object())


async def test_erasing_a_user_removes_every_key(backend: Backend) -> None:
    store = backend.store
    for sid in ["user-42", "user-42-conv-1", "user-42-conv-2", "user-420", "user-4"]:
        await store.append(sid, [u(sid)])
    assert await store.delete("user-42")
    assert await store.delete_prefix("user-42-") == 2
    left = sorted([s async for s in store.sessions()])
    assert left == ["user-4", "user-420"]
    for sid in ["user-42", "user-42-conv-1", "user-42-conv-2"]:
        assert not await backend.holds(sid)
    with pytest.raises(ValueError):
        await store.delete_prefix("")


async def test_list_sessions_is_sorted_and_literal(store: BaseStore) -> None:
    for sid in ["b-2", "a-1", "a-*", "a-10"]:
        await store.append(sid, [Message.user("x")])
    assert await store.list_sessions("a-") == ["a-*", "a-1", "a-10"]
    assert await store.list_sessions("a-*") == ["a-*"]
    assert await store.list_sessions() == ["a-*", "a-1", "a-10", "b-2"]
