"""ScriptedProvider: replies replayed through the SSE decoder and OpenAI chunk parser."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from promptkit_async import Message, ToolCall
from promptkit_async._exceptions import ProviderError, ProviderStreamError
from promptkit_async.providers import (
    Provider,
    ReplyDone,
    ScriptedCall,
    ScriptedProvider,
    StreamEvent,
    TextDelta,
)

if TYPE_CHECKING:
    from collections.abc import Sequence


async def collect(provider: Provider, messages: Sequence[Message], **kw: str) -> list[StreamEvent]:
    return [event async for event in provider.stream_reply(messages, **kw)]


def split(events: list[StreamEvent]) -> tuple[list[str], Message]:
    *deltas, done = events
    assert isinstance(done, ReplyDone)
    assert all(isinstance(d, TextDelta) for d in deltas)
    return [d.text for d in deltas if isinstance(d, TextDelta)], done.message


async def test_is_a_provider() -> None:
    assert isinstance(ScriptedProvider(), Provider)


async def test_replays_text_word_by_word() -> None:
    provider = ScriptedProvider(["Hello there,  world!"])
    texts, message = split(await collect(provider, [Message.user("hi")]))
    assert texts == ["Hello ", "there,  ", "world!"]
    assert message.content == "Hello there,  world!"
    assert message.role == "assistant"
    assert message.metadata["finish_reason"] == "stop"
    assert message.metadata["provider"] == "scripted"
    assert message.metadata["model"] == "scripted"
    usage = message.metadata["usage"]
    assert isinstance(usage, dict) and usage["completion_tokens"] == 3


@pytest.mark.parametrize(("chunk", "expected"), [("char", ["a", "b", " ", "c"]), ("all", ["ab c"])])
async def test_chunk_modes(chunk: str, expected: list[str]) -> None:
    provider = ScriptedProvider(["ab c"], chunk=chunk)  # type: ignore[arg-type]
    texts, _ = split(await collect(provider, []))
    assert texts == expected


async def test_default_echo_reply_shows_memory() -> None:
    provider = ScriptedProvider()
    _, first = split(await collect(provider, [Message.user("my name is Ana")]))
    assert "my name is Ana" in first.content
    history = [Message.user("my name is Ana"), first, Message.user("what is my name?")]
    _, second = split(await collect(provider, history))
    assert "what is my name?" in second.content
    assert "my name is Ana" in second.content
    assert "1 earlier message" in second.content
    _, empty = split(await collect(provider, []))
    assert empty.content


async def test_tool_calls_message_and_callable_and_metadata() -> None:
    call_a = ToolCall("call_a", "get_weather", '{"city": "Paris"}')
    call_b = ToolCall("call_b", "get_time", "{}")
    provider = ScriptedProvider(
        [
            Message.assistant("Let me check.", tool_calls=[call_a, call_b], note="scripted"),
            lambda messages: f"{len(messages)} messages seen",
        ]
    )
    _, message = split(await collect(provider, [Message.user("weather?")], system="be brief"))
    assert message.tool_calls == (call_a, call_b)
    assert message.content == "Let me check."
    assert message.metadata["finish_reason"] == "tool_calls"
    assert message.metadata["note"] == "scripted"
    _, second = split(await collect(provider, [Message.user("a"), Message.user("b")]))
    assert second.content == "2 messages seen"
    assert provider.calls == [
        ScriptedCall((Message.user("weather?"),), "be brief"),
        ScriptedCall((Message.user("a"), Message.user("b")), None),
    ]


async def test_scripted_exception_and_running_out() -> None:
    provider = ScriptedProvider([ProviderStreamError("boom"), "ok"])
    with pytest.raises(ProviderStreamError, match="boom"):
        await collect(provider, [])
    assert split(await collect(provider, []))[1].content == "ok"
    with pytest.raises(ProviderError, match="no reply left"):
        await collect(provider, [])


async def test_delay_streams_and_can_be_cancelled() -> None:
    provider = ScriptedProvider(["one two three four"], delay=0.05)
    stream = provider.stream_reply([])
    first = await anext(stream)
    assert first == TextDelta("one ")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(anext(stream), timeout=0.001)
    await stream.aclose()


async def test_closed_and_repr() -> None:
    async with ScriptedProvider(["x"]) as provider:
        assert "ScriptedProvider(replies=1" in repr(provider)
    await provider.aclose()
    with pytest.raises(ProviderError, match="closed"):
        await collect(provider, [])


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="chunk"):
        ScriptedProvider(chunk="line")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="delay"):
        ScriptedProvider(delay=-1)
