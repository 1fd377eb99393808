"""Sessions talking to providers: memory across turns, staging, failures, cancellation."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
import redis.asyncio as aioredis

from promptkit_async import (
    AnthropicProvider,
    Conversations,
    MemoryStore,
    Message,
    OpenAIProvider,
    ProviderError,
    ProviderStatusError,
    ProviderStreamError,
    RedisStore,
    ScriptedProvider,
    Session,
    SessionStateError,
    ToolCall,
)

from ._fakeapi import HANG, FakeAPI, Script, anthropic_sse, sse

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from promptkit_async.stores import Store


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "c1",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def openai_reply(*pieces: str, done: bool = True) -> Script:
    items = [sse(chunk({"content": p})) for p in pieces]
    items.append(sse(chunk({}, "stop")))
    items.append(
        sse({"id": "c1", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}})
    )
    if done:
        items.append(sse("[DONE]"))
    return Script(items=items)


@pytest.fixture(params=["memory", "redis"])
async def any_store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    url: str = request.getfixturevalue("redis_url")
    prefix: str = request.getfixturevalue("prefix")
    client = aioredis.Redis.from_url(url)
    try:
        yield RedisStore(client, prefix=prefix)
    finally:
        async for k in client.scan_iter(match=f"{prefix}:*"):
            await client.delete(k)
        await client.aclose()


def openai(api: FakeAPI) -> OpenAIProvider:
    return OpenAIProvider(
        "gpt-test", "sk-key", api.base_url + "/v1", client=api.client(), retry_backoff=0.01
    )


async def test_turn_two_sees_turn_one(api: FakeAPI, any_store: Store) -> None:
    api.queue(openai_reply("Hello ", "Ada."), openai_reply("You are ", "Ada."))
    async with openai(api) as provider:
        async with Session(any_store, "u1", provider=provider, system="Be brief.") as s:
            pieces = [p async for p in s.stream("I am Ada.")]
            assert pieces == ["Hello ", "Ada."]
        async with Session(any_store, "u1", provider=provider, system="Be brief.") as s:
            reply = await s.send("Who am I?")
    assert reply.content == "You are Ada."
    assert reply.metadata["finish_reason"] == "stop"
    assert reply.metadata["usage"] == {"prompt_tokens": 5, "completion_tokens": 2}
    sent = api.served[1].json()["messages"]
    assert sent == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "I am Ada."},
        {"role": "assistant", "content": "Hello Ada."},
        {"role": "user", "content": "Who am I?"},
    ]
    stored = await any_store.load("u1")
    assert [m.content for m in stored] == ["I am Ada.", "Hello Ada.", "Who am I?", "You are Ada."]
    assert stored[1].metadata["usage"] == {"prompt_tokens": 5, "completion_tokens": 2}


async def test_anthropic_session_sends_system_top_level(api: FakeAPI, any_store: Store) -> None:
    def reply(text: str) -> Script:
        return Script(
            items=[
                anthropic_sse(
                    {"type": "message_start", "message": {"id": "m", "model": "c", "usage": {}}},
                    {"type": "content_block_start", "index": 0,
                     "content_block": {"type": "text", "text": ""}},
                    {"type": "content_block_delta", "index": 0,
                     "delta": {"type": "text_delta", "text": text}},
                    {"type": "content_block_stop", "index": 0},
                    {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                     "usage": {"output_tokens": 3}},
                    {"type": "message_stop"},
                )
            ]
        )  # fmt: skip

    api.queue(reply("Hi Ada"), reply("Ada"))
    provider = AnthropicProvider("claude-test", "key", api.base_url, client=api.client())
    async with provider:
        for text in ("I am Ada", "Who am I?"):
            async with Session(any_store, "a1", provider=provider, system="Be brief.") as s:
                await s.send(text)
    body = api.served[1].json()
    assert body["system"] == "Be brief."
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert len(await any_store.load("a1")) == 4


async def test_tool_calls_round_trip_through_the_session(any_store: Store) -> None:
    call = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    provider = ScriptedProvider([Message.assistant("", tool_calls=[call]), "It is 21°C."])
    async with Session(any_store, "t", provider=provider) as s:
        first = await s.send("Weather in Paris?")
        assert first.tool_calls == (call,)
        assert first.metadata["finish_reason"] == "tool_calls"
        s.add(Message.tool('{"temp": 21}', tool_call_id="call_1"))
        second = await s.send(Message.tool('{"unit": "C"}', tool_call_id="call_1"))
    assert second.content == "It is 21°C."
    roles = [m.role for m in await any_store.load("t")]
    assert roles == ["user", "assistant", "tool", "tool", "assistant"]
    last_call = provider.calls[-1].messages
    assert [m.role for m in last_call] == ["user", "assistant", "tool", "tool"]


async def test_a_broken_stream_writes_nothing(api: FakeAPI, any_store: Store) -> None:
    api.queue(openai_reply("partial", done=False))
    async with openai(api) as provider:
        with pytest.raises(ProviderStreamError):
            async with Session(any_store, "b", provider=provider) as s:
                async for _ in s.stream("hello"):
                    pass
    assert await any_store.load("b") == []
    assert len(any_store.locks) == 0  # type: ignore[attr-defined]


async def test_a_failed_call_caught_in_the_block_stages_nothing(any_store: Store) -> None:
    provider = ScriptedProvider([ProviderStatusError("boom", status_code=500), "ok"])
    async with Session(any_store, "c", provider=provider) as s:
        with pytest.raises(ProviderStatusError):
            await s.send("first try")
        assert s.pending == ()
        await s.send("second try")
    assert [m.content for m in await any_store.load("c")] == ["second try", "ok"]


async def test_save_unanswered_keeps_the_user_message(any_store: Store) -> None:
    provider = ScriptedProvider([ProviderStreamError("cut")])
    async with Session(any_store, "d", provider=provider, save_unanswered=True) as s:
        with pytest.raises(ProviderStreamError):
            await s.send("please remember me")
    assert [m.content for m in await any_store.load("d")] == ["please remember me"]


async def test_cancel_mid_stream_closes_the_response_and_writes_nothing(
    loopback: FakeAPI, any_store: Store
) -> None:
    first_sent = asyncio.Event()
    loopback.queue(Script(items=[sse(chunk({"content": "Hel"})), HANG]), openai_reply("next"))
    async with openai(loopback) as provider:
        await any_store.append("x", [Message.user("before")])

        async def turn() -> None:
            async with Session(any_store, "x", provider=provider) as s:
                async for _ in s.stream("hi"):
                    first_sent.set()

        task = asyncio.create_task(turn())
        await first_sent.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(loopback.served[0].closed.wait(), 5)
        assert [m.content for m in await any_store.load("x")] == ["before"]
        assert len(any_store.locks) == 0  # type: ignore[attr-defined]
        async with Session(any_store, "x", provider=provider, lock_timeout=1) as s:
            assert (await s.send("again")).content == "next"
    assert len(await any_store.load("x")) == 3


async def test_leaving_the_block_mid_stream_closes_it(loopback: FakeAPI, any_store: Store) -> None:
    loopback.queue(Script(items=[sse(chunk({"content": "Hel"})), HANG]))
    async with openai(loopback) as provider:
        async with Session(any_store, "y", provider=provider) as s:
            s.add(Message.user("staged before"))
            async for _ in s.stream("hi"):
                break  # stop reading: the reply is incomplete
        await asyncio.wait_for(loopback.served[0].closed.wait(), 5)
    # the incomplete turn is not staged; what was added before is
    assert [m.content for m in await any_store.load("y")] == ["staged before"]


async def test_stream_as_context_manager_and_text() -> None:
    store = MemoryStore()
    async with Session(store, "z", provider=ScriptedProvider(["one two three"])) as s:
        async with s.stream("go") as reply:
            assert await reply.text() == "one two three"
        assert reply.message is not None and reply.message.content == "one two three"
        with pytest.raises(ProviderError, match="no reply left"):
            await s.send("no reply scripted")
    # the failed second call staged nothing; the first turn is written
    assert [m.content for m in await store.load("z")] == ["go", "one two three"]


async def test_stream_needs_a_provider_and_an_open_session() -> None:
    store = MemoryStore()
    async with Session(store, "n") as s:
        with pytest.raises(SessionStateError, match="no provider"):
            s.stream("hi")
    with pytest.raises(SessionStateError):
        Session(store, "n", provider=ScriptedProvider()).stream("hi")


async def test_one_stream_at_a_time() -> None:
    async with Session(MemoryStore(), "o", provider=ScriptedProvider(["a b", "c"])) as s:
        first = s.stream("1")
        await first.__anext__()
        with pytest.raises(SessionStateError, match="already streaming"):
            s.stream("2")
        await first.aclose()
        assert (await s.send("3")).content == "c"  # the closed stream used "a b"


async def test_conversations_execute_runs_a_whole_turn() -> None:
    chats = Conversations(MemoryStore(), provider=ScriptedProvider(), system="Be brief.")
    async with chats:
        reply = await chats.execute("user-9", "user", "I like tea.")
        assert reply is not None and "I like tea." in reply.content
        reply = await chats.execute("user-9", "user", "What do I like?")
        assert reply is not None and "I like tea." in reply.content
        assert len(await chats.history("user-9")) == 4
