"""Session lifecycle, failure policies and the Conversations app object."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pytest

import promptkit_async
from promptkit_async import (
    Conversations,
    InvalidMessage,
    MemoryStore,
    Message,
    MessageTooLarge,
    PromptKitError,
    RedisStore,
    Session,
    SessionStateError,
    StoreUnavailable,
    Turn,
)

from .conftest import free_port

if TYPE_CHECKING:
    from promptkit_async import TTL


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.loads = 0
        self.writes = 0

    async def load(self, session_id: str, limit: int | None = None) -> list[Message]:
        self.loads += 1
        return await super().load(session_id, limit)

    async def commit(self, turn: Turn) -> None:  # sessions write through commit()
        self.writes += 1
        await super().commit(turn)


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


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_messages": 0}, ValueError),
        ({"max_messages": "20"}, TypeError),
        ({"ttl": 0}, ValueError),
        ({"ttl": -5}, ValueError),
        ({"ttl": "1h"}, TypeError),
        ({"on_error": "ignore"}, ValueError),
        ({"on_load_error": "skip"}, ValueError),
        ({"lock_timeout": -1}, ValueError),
        ({"system": 3}, TypeError),
    ],
)
def test_bad_settings_fail_at_construction(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        Session(MemoryStore(), "x", **kwargs)


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


async def test_redis_unreachable_raises_store_unavailable_quickly() -> None:
    store = unreachable()
    async with store:
        with pytest.raises(StoreUnavailable) as info:
            async with Session(store, "x"):
                pass
        assert "unavailable" in str(info.value)
        assert len(store.locks) == 0


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


async def test_failed_save_on_a_real_server_carries_unsaved(redis_url: str, prefix: str) -> None:
    store = RedisStore.from_url(redis_url, prefix=prefix)
    async with store:
        async with Session(store, "ok") as s:
            s.add(Message.user("saved"))
        broken = unreachable()
        async with broken:
            with pytest.raises(StoreUnavailable) as info:
                await broken.append("ok", [Message.user("lost?")])
            assert info.value.unsaved == (Message.user("lost?"),)
        assert [m.content for m in await store.load("ok")] == ["saved"]
        await store.delete("ok")


async def test_from_url_rejects_bad_urls() -> None:
    with pytest.raises(ValueError, match="not a Redis URL"):
        RedisStore.from_url("http://user:secret@localhost")
    with pytest.raises(ValueError) as info:
        RedisStore.from_url("ftp://user:hunter2@host")
    assert "hunter2" not in str(info.value)


def test_redis_store_rejects_decoded_clients() -> None:
    import redis.asyncio as aioredis

    with pytest.raises(ValueError, match="decode_responses=False"):
        RedisStore(aioredis.Redis(decode_responses=True), compress_above=100)
    with pytest.raises(TypeError):
        RedisStore("redis://localhost")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="braces"):
        RedisStore(aioredis.Redis(), prefix="a{b}")


async def test_borrowed_client_is_left_open(redis_url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    async with RedisStore(client):
        pass
    assert await client.ping()
    await client.aclose()


async def test_conversations_hold_settings_once() -> None:
    chats = Conversations(MemoryStore(), max_messages=4, system="Be brief.", ttl=60)
    async with chats:
        for i in range(3):
            async with chats.session("user-1") as s:
                assert s.messages[0].content == "Be brief."
                s.add(Message.user(f"q{i}"), Message.assistant(f"a{i}"))
        assert [m.content for m in await chats.history("user-1")] == ["q1", "a1", "q2", "a2"]
        async with chats.session("user-1", max_messages=2) as s:
            assert len(s.history) == 2
        assert await chats.execute("user-1", "user", "no provider: appended") is None
        assert (await chats.history("user-1"))[-1].content == "no provider: appended"
        assert await chats.delete("user-1")
        assert await chats.history("user-1") == []


def test_public_names() -> None:
    for name in [
        "Session",
        "Message",
        "MemoryStore",
        "RedisStore",
        "PromptKitError",
        "StoreUnavailable",
        "CorruptHistory",
        "SessionBusy",
        "InvalidSessionId",
        "InvalidMessage",
    ]:
        assert name in promptkit_async.__all__
        assert getattr(promptkit_async, name).__module__ == "promptkit_async"
    for name in promptkit_async.__all__:
        obj = getattr(promptkit_async, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, PromptKitError)


def test_ttl_alias_is_exported_for_typing() -> None:
    t: TTL = 5
    assert t == 5


async def test_a_client_with_decode_responses_works(redis_url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    store = RedisStore(client, prefix=prefix, near_cache=10)
    try:
        for i in range(2):
            async with Session(store, "text:{1}", max_messages=3) as s:
                s.add(Message.user(f"q{i} é"), Message.assistant(f"a{i}"))
        assert [m.content for m in await store.load("text:{1}")] == ["a0", "q1 é", "a1"]
        async with Session(store, "text:{1}") as s:
            assert len(s.history) == 3  # served by the near cache, revalidated
        assert await store.list_sessions("text:") == ["text:{1}"]
        assert (await store.metrics()).active_sessions == 1
        assert await store.delete("text:{1}")
    finally:
        await client.delete(f"{prefix}:index")
        await client.aclose()


def test_tool_calls_may_be_given_as_dicts() -> None:
    from promptkit_async import ToolCall

    wire = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    flat = {"id": "c2", "name": "g", "arguments": '{"x":1}'}
    m = Message.assistant("", tool_calls=[wire, flat])
    assert m.tool_calls == (ToolCall("c1", "f", "{}"), ToolCall("c2", "g", '{"x":1}'))
    assert Message("assistant", tool_calls=[wire]).tool_calls == (ToolCall("c1", "f", "{}"),)  # type: ignore[arg-type]
    with pytest.raises(InvalidMessage, match="needs id and name"):
        Message.assistant("", tool_calls=[{"function": {}}])
    with pytest.raises(InvalidMessage, match="ToolCall or dict"):
        Message.assistant("", tool_calls=["call"])  # type: ignore[list-item]


async def test_list_sessions_is_sorted_and_literal() -> None:
    store = MemoryStore()
    for sid in ["b-2", "a-1", "a-*", "a-10"]:
        await store.append(sid, [Message.user("x")])
    assert await store.list_sessions("a-") == ["a-*", "a-1", "a-10"]
    assert await store.list_sessions("a-*") == ["a-*"]
    assert await store.list_sessions() == ["a-*", "a-1", "a-10", "b-2"]


async def test_the_provider_can_be_given_per_call() -> None:
    from promptkit_async import ScriptedProvider

    store = MemoryStore()
    async with Session(store, "p") as s:
        reply = await s.send("hi", provider=ScriptedProvider(["hello"]))
        assert reply.content == "hello"
        pieces = [t async for t in s.stream("again", provider=ScriptedProvider(["a b"]))]
        assert pieces == ["a ", "b"]
    assert len(await store.load("p")) == 4
