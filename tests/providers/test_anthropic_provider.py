"""AnthropicProvider against a loopback HTTP server and MockTransport, plus conversion."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import pytest

from promptkit_async import Message, ToolCall
from promptkit_async._exceptions import (
    ProviderAuthError,
    ProviderStatusError,
    ProviderStreamError,
    ProviderUnavailable,
    RateLimited,
)
from promptkit_async.providers import AnthropicProvider, ReplyDone, TextDelta
from promptkit_async.providers._anthropic_wire import to_anthropic_messages

from ._fakeapi import HANG, FakeAPI, Script, anthropic_sse

if TYPE_CHECKING:
    from collections.abc import Sequence

    from promptkit_async.providers import StreamEvent

KEY = "sk-ant-test-SECRET-987654321"

START = anthropic_sse(
    {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": "claude-test",
            "stop_reason": None,
            "usage": {"input_tokens": 25, "output_tokens": 1},
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
)


def text(t: str, index: int = 0) -> bytes:
    return anthropic_sse(
        {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": t}}
    )


def end(stop_reason: str = "end_turn", output_tokens: int = 15) -> bytes:
    return anthropic_sse(
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
        },
        {"type": "message_stop"},
    )


HELLO = [START, text("Hel"), text("lo ☃"), end()]


def make(api: FakeAPI, **kw: Any) -> AnthropicProvider:
    kw.setdefault("retry_backoff", 0.01)
    return AnthropicProvider(
        "claude-test", kw.pop("api_key", KEY), api.base_url, client=api.client(), **kw
    )


async def collect(
    provider: AnthropicProvider, messages: Sequence[Message] = (), **kw: Any
) -> tuple[list[str], Message]:
    events: list[StreamEvent] = [e async for e in provider.stream_reply(messages, **kw)]
    *deltas, done = events
    assert isinstance(done, ReplyDone)
    return [d.text for d in deltas if isinstance(d, TextDelta)], done.message


async def test_streams_text_and_sends_the_documented_request(api: FakeAPI) -> None:
    api.queue(Script(items=HELLO))
    async with make(api, max_tokens=99, params={"temperature": 0}) as provider:
        history = [Message.system("from history"), Message.user("hi")]
        texts, message = await collect(provider, history, system="be nice")
    assert texts == ["Hel", "lo ☃"]
    assert message.content == "Hello ☃"
    assert message.metadata == {
        "finish_reason": "end_turn",
        "usage": {"input_tokens": 25, "output_tokens": 15},
        "model": "claude-test",
        "provider": "anthropic",
        "id": "msg_1",
    }
    (served,) = api.served
    assert (served.method, served.path) == ("POST", "/v1/messages")
    assert served.headers["x-api-key"] == KEY
    assert served.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in served.headers
    assert served.json() == {
        "model": "claude-test",
        "max_tokens": 99,
        "temperature": 0,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "stream": True,
        "system": "be nice\n\nfrom history",
    }


async def test_tool_use_blocks_are_assembled(api: FakeAPI) -> None:
    def tool_start(index: int, tool_id: str, name: str) -> bytes:
        block = {"type": "tool_use", "id": tool_id, "name": name, "input": {}}
        return anthropic_sse(
            {"type": "content_block_start", "index": index, "content_block": block}
        )

    def json_delta(index: int, partial: str) -> bytes:
        delta = {"type": "input_json_delta", "partial_json": partial}
        return anthropic_sse({"type": "content_block_delta", "index": index, "delta": delta})

    api.queue(
        Script(
            items=[
                START,
                text("Checking."),
                anthropic_sse({"type": "content_block_stop", "index": 0}),
                tool_start(1, "toolu_a", "weather"),
                json_delta(1, ""),
                json_delta(1, '{"city": "Pa'),
                json_delta(1, 'ris"}'),
                anthropic_sse({"type": "content_block_stop", "index": 1}),
                tool_start(2, "toolu_b", "now"),
                anthropic_sse({"type": "content_block_stop", "index": 2}),
                end("tool_use", 40),
            ]
        )
    )
    async with make(api) as provider:
        texts, message = await collect(provider, [Message.user("weather?")])
    assert texts == ["Checking."]
    assert message.tool_calls == (
        ToolCall("toolu_a", "weather", '{"city": "Paris"}'),
        ToolCall("toolu_b", "now", "{}"),
    )
    assert message.metadata["finish_reason"] == "tool_use"
    assert message.metadata["usage"] == {"input_tokens": 25, "output_tokens": 40}


async def test_first_delta_arrives_before_the_rest_is_sent(api: FakeAPI) -> None:
    release = asyncio.Event()
    api.queue(Script(items=[START, text("Hel"), release, text("lo"), end()]))
    async with make(api) as provider:
        stream = provider.stream_reply([Message.user("hi")])
        assert await asyncio.wait_for(anext(stream), timeout=5) == TextDelta("Hel")
        assert not api.served[0].finished.is_set()
        release.set()
        rest = [e async for e in stream]
    assert rest[0] == TextDelta("lo")


async def test_cancel_mid_stream_closes_the_connection(api: FakeAPI) -> None:
    never = asyncio.Event()
    api.queue(Script(items=[START, text("Hel"), never, end()]))
    async with make(api) as provider:
        stream = provider.stream_reply([Message.user("hi")])
        assert await anext(stream) == TextDelta("Hel")
        task = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(api.served[0].closed.wait(), timeout=2)
        assert not api.served[0].finished.is_set()


async def test_error_event_mid_stream(api: FakeAPI) -> None:
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    api.queue(Script(items=[START, text("Hel"), anthropic_sse(error)]))
    async with make(api) as provider:
        stream = provider.stream_reply([Message.user("hi")])
        assert await anext(stream) == TextDelta("Hel")
        with pytest.raises(ProviderStreamError, match="overloaded_error: Overloaded"):
            await anext(stream)


async def test_missing_message_stop(api: FakeAPI) -> None:
    api.queue(Script(items=[START, text("Hel")]))
    async with make(api) as provider:
        with pytest.raises(ProviderStreamError, match="message_stop"):
            await collect(provider, [Message.user("hi")])


async def test_read_timeout_between_chunks(api: FakeAPI) -> None:
    api.queue(Script(items=[START, text("Hel"), HANG]))
    async with make(api, read_timeout=0.2) as provider:
        stream = provider.stream_reply([Message.user("hi")])
        assert await anext(stream) == TextDelta("Hel")
        with pytest.raises(ProviderUnavailable):
            await anext(stream)


async def test_overloaded_is_retried_then_auth_error_is_not(api: FakeAPI) -> None:
    overloaded = (
        b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}'
    )
    denied = b'{"type": "error", "error": {"type": "authentication_error", "message": "bad key"}}'
    api.queue(
        Script(status=529, items=[overloaded]),
        Script(status=401, headers={"request-id": "req_a"}, items=[denied]),
    )
    async with make(api) as provider:
        with pytest.raises(ProviderAuthError) as info:
            await collect(provider, [Message.user("hi")])
    assert info.value.status_code == 401
    assert info.value.request_id == "req_a"
    assert "bad key" in str(info.value)
    assert len(api.served) == 2


async def test_rate_limited_then_success(api: FakeAPI) -> None:
    limited = b'{"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}'
    api.queue(
        Script(status=429, headers={"retry-after": "0"}, items=[limited]), Script(items=HELLO)
    )
    async with make(api) as provider:
        _, message = await collect(provider, [Message.user("hi")])
    assert message.content == "Hello ☃"
    api.queue(*(Script(status=429, items=[limited]) for _ in range(2)))
    async with make(api, max_retries=1) as provider:
        with pytest.raises(RateLimited, match="slow"):
            await collect(provider, [Message.user("hi")])


async def test_the_key_never_shows(api: FakeAPI, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    body = b'{"type": "error", "error": {"message": "key ' + KEY.encode() + b' is invalid"}}'
    api.queue(Script(status=503, items=[body]), Script(status=400, items=[body]))
    provider = make(api)
    assert KEY not in repr(provider) and KEY not in str(vars(provider))
    with pytest.raises(ProviderStatusError) as info:
        await collect(provider, [Message.user("hi")])
    await provider.aclose()
    for shown in (str(info.value), repr(info.value), info.value.body, caplog.text):
        assert KEY not in shown


async def test_environment(monkeypatch: pytest.MonkeyPatch, api: FakeAPI) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "env-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", api.base_url)
    api.queue(Script(items=HELLO))
    async with AnthropicProvider("claude-test", client=api.client()) as provider:
        await collect(provider, [Message.user("hi")])
    assert api.served[0].headers["x-api-key"] == "env-key"


async def test_the_request_for_a_two_turn_conversation_with_a_tool_call(api: FakeAPI) -> None:
    api.queue(Script(items=HELLO))
    history = [
        Message.user("What's the weather in Paris?"),
        Message.assistant(
            "Let me check.", tool_calls=[ToolCall("toolu_1", "get_weather", '{"city": "Paris"}')]
        ),
        Message.tool('{"temp_c": 18}', tool_call_id="toolu_1"),
        Message.assistant("18 °C."),
        Message.user("And tomorrow?"),
    ]
    async with make(api) as provider:
        await collect(provider, history, system="Be brief.")
    # Request shape: https://docs.anthropic.com/en/api/messages (tool_use blocks in the
    # assistant turn, tool_result blocks in the next user turn).
    assert api.served[0].json() == {
        "model": "claude-test",
        "max_tokens": 1024,
        "system": "Be brief.",
        "stream": True,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "What's the weather in Paris?"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me check."},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": '{"temp_c": 18}'}
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "18 °C."}]},
            {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]},
        ],
    }


# -- the sans-IO parts ----------------------------------------------------------


def test_conversion_alternates_and_merges_tool_results() -> None:
    calls = [ToolCall("t1", "f", '{"a": 1}'), ToolCall("t2", "g", "not json")]
    history = [
        Message.assistant("greeting before any user turn"),  # dropped
        Message.tool("orphan", tool_call_id="t0"),  # dropped
        Message.user("first"),
        Message.user("second"),  # merged with first
        Message.system("be brief"),  # moved into system
        Message.assistant("let me look", tool_calls=calls),
        Message.tool("1", tool_call_id="t1"),
        Message.tool("2", tool_call_id="t2"),  # merged with the previous result
        Message.user("thanks"),  # joins the results, after them
        Message.assistant(""),  # empty: dropped
        Message.assistant("you're welcome"),
    ]
    system, wire = to_anthropic_messages(history, "sys")
    assert system == "sys\n\nbe brief"
    assert wire == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "let me look"},
                {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
                {"type": "tool_use", "id": "t2", "name": "g", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "1"},
                {"type": "tool_result", "tool_use_id": "t2", "content": "2"},
                {"type": "text", "text": "thanks"},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "you're welcome"}]},
    ]
    roles = [m["role"] for m in wire]
    assert all(a != b for a, b in zip(roles, roles[1:], strict=False))


def test_conversion_puts_tool_results_before_text_and_handles_no_system() -> None:
    history = [
        Message.user("q"),
        Message.assistant(tool_calls=[ToolCall("t1", "f", "")]),
        Message.user("also this"),
        Message.tool("r", tool_call_id="t1"),
    ]
    system, wire = to_anthropic_messages(history, None)
    assert system is None
    assert wire[1]["content"] == [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]
    assert [b["type"] for b in wire[2]["content"]] == ["tool_result", "text"]
