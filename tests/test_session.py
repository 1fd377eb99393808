"""Session lifecycle: staging, size limits, lazy loads, load failures, token windows."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest

from promptkit_async import (
    InvalidMessage,
    MemoryStore,
    Message,
    MessageTooLarge,
    ProviderStreamError,
    RedisStore,
    ScriptedProvider,
    Session,
    SessionStateError,
    StoreUnavailable,
    ToolCall,
    Turn,
)

from .conftest import free_port
from .samples import u

if TYPE_CHECKING:
    from promptkit_async.stores import Store


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.loads = 0
        self.writes = 0

    async def load(
        self, session_id: str, limit: int | None = None, *, before: str | None = None
    ) -> list[Message]:
        self.loads += 1
        return await super().load(session_id, limit, before=before)

    async def commit(self, turn: Turn) -> tuple[Message, ...]:  # sessions write through it
        self.writes += 1
        return await super().commit(turn)


def unreachable() -> RedisStore:
    return RedisStore.from_url(
        f"redis://127.0.0.1:{free_port()}/0", connect_timeout=0.5, socket_timeout=0.5, retries=0
    )


async def test_add_outside_the_block_is_a_state_error() -> None:
    s = Session(MemoryStore(), "x")
    with pytest.raises(SessionStateError, match="inside `async with"):
        s.add(Message.user("hi"))
    with pytest.raises(SessionStateError):
        _ = s.history


async def test_a_session_is_single_use() -> None:
    store = MemoryStore()
    s = Session(store, "x")
    async with s:
        pass
    with pytest.raises(SessionStateError, match="already entered"):
        async with s:
            pass
    with pytest.raises(SessionStateError):
        s.add(Message.user("late"))


async def test_add_rejects_non_messages() -> None:
    async with Session(MemoryStore(), "x") as s:
        with pytest.raises(InvalidMessage, match="Message.user"):
            s.add("just a string")  # type: ignore[arg-type]
        assert s.pending == ()


async def test_history_is_read_only() -> None:
    store = MemoryStore()
    await store.append("x", [Message.user("a")])
    async with Session(store, "x") as s:
        assert isinstance(s.history, tuple)
        with pytest.raises(AttributeError):
            s.history.append(Message.user("b"))  # type: ignore[attr-defined]


async def test_size_limits() -> None:
    store = MemoryStore()
    async with Session(store, "x", max_message_bytes=10, max_turn_bytes=15) as s:
        with pytest.raises(MessageTooLarge) as info:
            s.add(Message.user("x" * 11))
        assert (info.value.size, info.value.limit) == (11, 10)
        s.add(Message.user("x" * 10))
        with pytest.raises(MessageTooLarge, match="max_turn_bytes=15"):
            s.add(Message.user("é" * 3))  # 6 bytes in UTF-8
        s.add(Message.user("y" * 5))
    assert [m.content for m in await store.load("x")] == ["x" * 10, "y" * 5]


async def test_lazy_session_appends_without_loading() -> None:
    store = CountingStore()
    async with Session(store, "log", lazy=True) as s:
        assert not s.loaded
        with pytest.raises(SessionStateError, match="await session.load"):
            _ = s.history
        s.add(Message.system("user logged in"))
    assert (store.loads, store.writes) == (0, 1)
    async with Session(store, "log", lazy=True) as s:
        history = await s.load()
        assert [m.content for m in history] == ["user logged in"]
        assert s.history == history
        await s.load()
    assert store.loads == 1


async def test_on_load_error_empty_continues_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = unreachable()
    async with store:
        with caplog.at_level(logging.WARNING, logger="promptkit_async"):
            with pytest.raises(StoreUnavailable) as info:
                async with Session(store, "x", on_load_error="empty") as s:
                    assert s.history == ()
                    s.add(Message.user("hi"), Message.assistant("hello"))
        assert "continuing with an empty" in caplog.text
        # The failed save carries what was not written.
        assert [m.content for m in info.value.unsaved] == ["hi", "hello"]
        assert info.value.session_id == "x"
        assert len(store.locks) == 0


async def test_the_provider_can_be_given_per_call() -> None:
    from promptkit_async import ScriptedProvider

    store = MemoryStore()
    async with Session(store, "p") as s:
        reply = await s.send("hi", provider=ScriptedProvider(["hello"]))
        assert reply.content == "hello"
        pieces = [t async for t in s.stream("again", provider=ScriptedProvider(["a b"]))]
        assert pieces == ["a ", "b"]
    assert len(await store.load("p")) == 4


async def test_closing_a_stream_is_not_an_unanswered_question() -> None:
    store = MemoryStore()
    provider = ScriptedProvider(["one two three"])
    async with Session(store, "s", provider=provider, save_unanswered=True) as s:
        async with s.stream("hi") as reply:
            async for _ in reply:
                break
    assert await store.load("s") == []
    failing = ScriptedProvider([ProviderStreamError("cut")])
    async with Session(store, "s", provider=failing, save_unanswered=True) as s:
        with pytest.raises(ProviderStreamError):
            await s.send("kept")
    assert [m.content for m in await store.load("s")] == ["kept"]


async def test_a_tool_result_over_the_budget_still_carries_its_call() -> None:
    store = MemoryStore()
    call = ToolCall("c1", "lookup", "{}")
    provider = ScriptedProvider([Message.assistant("", tool_calls=[call]), "done"])
    async with Session(store, "t", provider=provider, max_tokens=12) as s:
        await s.send("look it up please")
        await s.send(Message.tool("r" * 400, tool_call_id="c1"))
    sent = provider.calls[-1].messages
    assert [m.role for m in sent] == ["assistant", "tool"]
    assert sent[0].tool_calls == (call,)


async def test_token_budget_window(store: Store) -> None:
    await store.append("tok", [u("x" * 400) for _ in range(5)] + [u("tiny")])
    async with Session(store, "tok", max_tokens=250) as s:
        assert [len(m.content) for m in s.history] == [400, 400, 4]

    async with Session(store, "tok", max_tokens=10, token_counter=lambda m: 1) as s:
        assert len(s.history) == 6


def test_each_store_has_its_own_plan_and_a_gone_store_leaves_none_behind() -> None:
    import gc

    from promptkit_async import LockRegistry
    from promptkit_async._plan import plan_for

    a, b = MemoryStore(), MemoryStore()
    assert plan_for(a) is plan_for(a) and plan_for(b) is not plan_for(a)
    assert plan_for(a) is plan_for(a) and plan_for(a).locks is a.locks
    locks_a = LockRegistry.of(a)
    del a
    gc.collect()
    c = MemoryStore()
    assert plan_for(c).locks is c.locks and plan_for(c).locks is not locks_a
