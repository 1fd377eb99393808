"""OpenAIProvider against a loopback HTTP server and MockTransport, plus its chunk parser."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from promptkit_async import Message, ToolCall
from promptkit_async._exceptions import (
    ProviderAuthError,
    ProviderError,
    ProviderStatusError,
    ProviderStreamError,
    ProviderUnavailable,
    RateLimited,
)
from promptkit_async.providers import OpenAIProvider, ReplyDone, SSEDecoder, TextDelta
from promptkit_async.providers._openai_wire import OpenAIChunkParser, to_openai_messages

from ._fakeapi import HANG, FakeAPI, Script, sse

if TYPE_CHECKING:
    from collections.abc import Sequence

    from promptkit_async.providers import StreamEvent

KEY = "sk-test-SECRET-0123456789"


def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "gpt-test",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


USAGE = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
HELLO = [
    sse(chunk({"role": "assistant", "content": ""})),
    sse(chunk({"content": "Hel"})),
    sse(chunk({"content": "lo ☃"})),
    sse(chunk({}, "stop")),
    sse({"id": "chatcmpl-1", "choices": [], "usage": USAGE, "model": "gpt-test"}),
    sse("[DONE]"),
]


def make(api: FakeAPI, **kw: Any) -> OpenAIProvider:
    kw.setdefault("retry_backoff", 0.01)
    return OpenAIProvider(
        "gpt-test", kw.pop("api_key", KEY), api.base_url + "/v1", client=api.client(), **kw
    )


async def collect(
    provider: OpenAIProvider, messages: Sequence[Message] = (), **kw: Any
) -> tuple[list[str], Message]:
    events: list[StreamEvent] = [e async for e in provider.stream_reply(messages, **kw)]
    *deltas, done = events
    assert isinstance(done, ReplyDone)
    return [d.text for d in deltas if isinstance(d, TextDelta)], done.message


async def test_streams_text_and_sends_the_documented_request(api: FakeAPI) -> None:
    api.queue(Script(items=HELLO))
    async with make(api, params={"temperature": 0.2}, organization="org-1") as provider:
        history = [Message.user("hi"), Message.assistant("hey"), Message.user("again")]
        texts, message = await collect(provider, history, system="be nice")
    assert texts == ["Hel", "lo ☃"]
    assert message.content == "Hello ☃"
    assert message.metadata == {
        "finish_reason": "stop",
        "usage": USAGE,
        "model": "gpt-test",
        "provider": "openai",
        "id": "chatcmpl-1",
    }
    (served,) = api.served
    assert (served.method, served.path) == ("POST", "/v1/chat/completions")
    assert served.headers["authorization"] == f"Bearer {KEY}"
    assert served.headers["openai-organization"] == "org-1"
    assert served.json() == {
        "model": "gpt-test",
        "temperature": 0.2,
        "messages": [
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hey"},
            {"role": "user", "content": "again"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_parallel_interleaved_tool_call_fragments(api: FakeAPI) -> None:
    def call(index: int, **fields: Any) -> bytes:
        return sse(chunk({"tool_calls": [{"index": index, "type": "function", **fields}]}))

    api.queue(
        Script(
            items=[
                sse(chunk({"role": "assistant", "content": None})),
                call(
                    0, id="call_a", type="function", function={"name": "weather", "arguments": ""}
                ),
                call(
                    1, id="call_b", type="function", function={"name": "time", "arguments": '{"tz'}
                ),
                call(0, function={"arguments": '{"city": '}),
                call(1, function={"arguments": '": "UTC"}'}),
                call(0, function={"arguments": '"Paris"}'}),
                sse(chunk({}, "tool_calls")),
                sse({"choices": [], "usage": USAGE}),
                sse("[DONE]"),
            ]
        )
    )
    async with make(api) as provider:
        texts, message = await collect(provider, [Message.user("weather and time?")])
    assert texts == []
    assert message.tool_calls == (
        ToolCall("call_a", "weather", '{"city": "Paris"}'),
        ToolCall("call_b", "time", '{"tz": "UTC"}'),
    )
    assert message.metadata["finish_reason"] == "tool_calls"
    assert message.metadata["usage"] == USAGE


async def test_first_delta_arrives_before_the_rest_is_sent(api: FakeAPI) -> None:
    release = asyncio.Event()
    api.queue(Script(items=[HELLO[1], release, *HELLO[2:]]))
    async with make(api) as provider:
        stream = provider.stream_reply([Message.user("hi")])
        first = await asyncio.wait_for(anext(stream), timeout=5)
        assert first == TextDelta("Hel")
        assert not api.served[0].finished.is_set()
        release.set()
        rest = [e async for e in stream]
    assert rest[0] == TextDelta("lo ☃")
    assert isinstance(rest[-1], ReplyDone)


@pytest.mark.parametrize("how", ["cancel", "aclose"])
async def test_stopping_mid_stream_closes_the_connection_at_once(api: FakeAPI, how: str) -> None:
    never = asyncio.Event()
    api.queue(Script(items=[HELLO[1], never, *HELLO[2:]]))
    async with make(api) as provider:
        stream = provider.stream_reply([Message.user("hi")])
        assert await anext(stream) == TextDelta("Hel")
        if how == "cancel":
            task = asyncio.ensure_future(anext(stream))
            await asyncio.sleep(0.05)  # let it block on the socket read
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            await stream.aclose()
        served = api.served[0]
        await asyncio.wait_for(served.closed.wait(), timeout=2)
        assert not served.finished.is_set()


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(400, ProviderStatusError), (401, ProviderAuthError), (403, ProviderAuthError)],
)
async def test_error_statuses_carry_the_message_and_request_id(
    api: FakeAPI, status: int, error_type: type[ProviderStatusError]
) -> None:
    body = b'{"error": {"message": "model not found", "type": "invalid_request_error"}}'
    headers = {"content-type": "application/json", "x-request-id": "req_42"}
    api.queue(Script(status=status, headers=headers, items=[body]))
    async with make(api) as provider:
        with pytest.raises(error_type) as info:
            await collect(provider, [Message.user("hi")])
    error = info.value
    assert type(error) is error_type
    assert error.status_code == status
    assert error.request_id == "req_42"
    assert "model not found" in str(error) and "req_42" in str(error)
    assert error.body == body.decode()
    assert len(api.served) == 1  # 4xx other than 408/409/429 are not retried


async def test_429_with_retry_after_is_retried_then_succeeds(api: FakeAPI) -> None:
    limited = Script(status=429, headers={"retry-after": "0"}, items=[b'{"error": "slow down"}'])
    api.queue(limited, Script(status=503), Script(items=HELLO))
    async with make(api) as provider:
        texts, message = await collect(provider, [Message.user("hi")])
    assert message.content == "Hello ☃"
    assert len(api.served) == 3


async def test_retries_are_bounded(api: FakeAPI) -> None:
    body = b'{"error": {"message": "rate limit reached"}}'
    api.queue(*(Script(status=429, headers={"retry-after": "0"}, items=[body]) for _ in range(5)))
    async with make(api, max_retries=2) as provider:
        with pytest.raises(RateLimited) as info:
            await collect(provider, [Message.user("hi")])
    assert info.value.retry_after == 0
    assert "rate limit reached" in str(info.value)
    assert len(api.served) == 3


async def test_a_long_retry_after_is_raised_not_waited(api: FakeAPI) -> None:
    api.queue(Script(status=429, headers={"retry-after": "3600"}))
    async with make(api, max_retry_wait=10) as provider:
        with pytest.raises(RateLimited) as info:
            await collect(provider, [Message.user("hi")])
    assert info.value.retry_after == 3600
    assert len(api.served) == 1


async def test_no_retry_after_the_first_byte(api: FakeAPI) -> None:
    api.queue(Script(items=HELLO[:2], drop=True), Script(items=HELLO))
    async with make(api) as provider:
        stream = provider.stream_reply([Message.user("hi")])
        assert await anext(stream) == TextDelta("Hel")
        with pytest.raises(ProviderUnavailable):
            await anext(stream)
    assert len(api.served) == 1


async def test_error_event_mid_stream(api: FakeAPI) -> None:
    error = {"error": {"message": "The server had an error", "type": "server_error"}}
    api.queue(Script(items=[HELLO[1], sse(error)]))
    async with make(api) as provider:
        stream = provider.stream_reply([Message.user("hi")])
        assert await anext(stream) == TextDelta("Hel")
        with pytest.raises(ProviderStreamError, match="The server had an error"):
            await anext(stream)


async def test_missing_done_is_a_stream_error(api: FakeAPI) -> None:
    api.queue(Script(items=HELLO[:-1]))
    async with make(api) as provider:
        with pytest.raises(ProviderStreamError, match=r"\[DONE\]"):
            await collect(provider, [Message.user("hi")])


async def test_read_timeout_between_chunks(api: FakeAPI) -> None:
    api.queue(Script(items=[HELLO[1], HANG]))
    async with make(api, read_timeout=0.2) as provider:
        stream = provider.stream_reply([Message.user("hi")])
        assert await anext(stream) == TextDelta("Hel")
        with pytest.raises(ProviderUnavailable, match="timed out"):
            await anext(stream)


async def test_connect_refused_is_unavailable_after_retries() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with OpenAIProvider(
        "m", KEY, f"http://127.0.0.1:{port}/v1", retry_backoff=0.01, max_retries=1
    ) as provider:
        with pytest.raises(ProviderUnavailable) as info:
            await collect(provider, [Message.user("hi")])
    assert isinstance(info.value.__cause__, httpx.ConnectError)


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("refused"),
        httpx.ConnectTimeout("slow"),
        httpx.ReadTimeout("slow"),
        httpx.PoolTimeout("busy"),
        httpx.ReadError("reset"),
        httpx.RemoteProtocolError("bad"),
        httpx.UnsupportedProtocol("ftp"),
        httpx.DecodingError("gzip"),
        httpx.TooManyRedirects("loop"),
        httpx.InvalidURL("bad url"),
        httpx.StreamClosed(),
    ],
)
async def test_no_httpx_error_escapes(exc: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        provider = OpenAIProvider("m", KEY, "http://x/v1", client=client, retry_backoff=0.001)
        with pytest.raises(ProviderError) as info:
            await collect(provider, [Message.user("hi")])
    assert info.value.__cause__ is exc
    if isinstance(exc, httpx.TransportError) and not isinstance(exc, httpx.DecodingError):
        assert isinstance(info.value, ProviderUnavailable)


async def test_the_key_never_shows(api: FakeAPI, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    echo = b'{"error": {"message": "Incorrect API key provided: ' + KEY.encode() + b'"}}'
    api.queue(
        Script(status=500, items=[echo]),
        Script(status=401, items=[echo]),
    )
    provider = make(api)
    assert KEY not in repr(provider) and KEY not in str(provider)
    assert KEY not in repr(provider._api_key) and KEY not in str(vars(provider))
    with pytest.raises(ProviderAuthError) as info:
        await collect(provider, [Message.user("hi")])
    await provider.aclose()
    error = info.value
    for text in (str(error), repr(error), error.body, caplog.text):
        assert KEY not in text
    assert "Incorrect API key provided: ***" in str(error)
    assert len(api.served) == 2  # the 500 was retried (and logged)


async def test_client_ownership_and_lifecycle(api: FakeAPI) -> None:
    borrowed = httpx.AsyncClient()
    provider = OpenAIProvider("m", client=borrowed)
    await provider.aclose()
    await provider.aclose()
    assert not borrowed.is_closed
    await borrowed.aclose()
    with pytest.raises(ProviderError, match="closed"):
        await collect(provider, [])

    owned = OpenAIProvider("m")
    async with owned:
        pass
    assert owned._client.is_closed


async def test_environment_and_no_key(monkeypatch: pytest.MonkeyPatch, api: FakeAPI) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    monkeypatch.setenv("OPENAI_BASE_URL", api.base_url + "/v1/")
    api.queue(Script(items=HELLO), Script(items=HELLO))
    async with OpenAIProvider("m", client=api.client()) as provider:
        assert provider.base_url == api.base_url + "/v1"
        await collect(provider, [Message.user("hi")])
    async with OpenAIProvider("m", "", client=api.client(), include_usage=False) as provider:
        await collect(provider, [Message.user("hi")])
    assert api.served[0].headers["authorization"] == "Bearer sk-from-env"
    assert "authorization" not in api.served[1].headers
    assert "stream_options" not in api.served[1].json()


async def test_timeouts_for_a_borrowed_client() -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0)) as client:
        default = OpenAIProvider("m", client=client)
        assert default._timeout is None  # the client's own timeouts apply
        custom = OpenAIProvider("m", client=client, read_timeout=1.0)
        assert custom._timeout == httpx.Timeout(5.0, read=1.0)
    with pytest.raises(ValueError, match="max_retries"):
        OpenAIProvider("m", max_retries=-1)


# -- the sans-IO parts ----------------------------------------------------------


def parse(*payloads: dict[str, Any] | str) -> tuple[list[str], Message]:
    decoder = SSEDecoder()
    parser = OpenAIChunkParser()
    texts = [parser.feed(e) for e in decoder.feed(sse(*payloads))]
    assert parser.done
    return [t for t in texts if t], parser.message()


def test_tolerates_what_compatible_servers_send() -> None:
    texts, message = parse(
        {"choices": [{"delta": {"role": "assistant", "content": None}}]},  # no index, null
        {"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}]},
        {"choices": None, "usage": None},
        {"choices": [{"index": 1, "delta": {"content": "other choice"}}]},
        "[DONE]",
    )
    assert texts == ["Hi"]
    assert message.content == "Hi"
    assert message.metadata["finish_reason"] == "stop"
    assert message.metadata["usage"] is None


def test_tool_calls_without_index_and_with_reused_index() -> None:
    def calls(*fragments: dict[str, Any]) -> dict[str, Any]:
        return {"choices": [{"index": 0, "delta": {"tool_calls": list(fragments)}}]}

    _, message = parse(
        calls({"id": "a", "function": {"name": "f", "arguments": '{"x":'}}),
        calls({"function": {"arguments": " 1}"}}),
        calls({"index": 0, "id": "b", "function": {"name": "g", "arguments": {"y": 2}}}),
        calls({"index": 0, "id": "c", "function": {"name": "h"}}),
        "[DONE]",
    )
    assert message.tool_calls == (
        ToolCall("a", "f", '{"x": 1}'),
        ToolCall("b", "g", '{"y": 2}'),
        ToolCall("c", "h", "{}"),
    )


def test_tool_call_without_id_gets_one_and_without_name_fails() -> None:
    frag = {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"name": "f"}}]}}]}
    _, message = parse(frag, "[DONE]")
    assert message.tool_calls[0].id.startswith("call_")
    nameless = {"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "x"}]}}]}
    with pytest.raises(ProviderStreamError, match="no name"):
        parse(nameless, "[DONE]")


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ("not json", "malformed"),
        ("[1, 2]", "not an object"),
        ({"object": "error", "message": "vLLM says no", "type": "BadRequestError"}, "vLLM says no"),
        ({"error": "plain string error"}, "plain string error"),
    ],
)
def test_stream_errors(payload: dict[str, Any] | str, match: str) -> None:
    with pytest.raises(ProviderStreamError, match=match):
        parse(payload, "[DONE]")


def test_refusal_is_text_and_marked() -> None:
    texts, message = parse({"choices": [{"delta": {"refusal": "I can't"}}]}, "[DONE]")
    assert texts == ["I can't"] and message.metadata["refusal"] is True


def test_history_conversion() -> None:
    call = ToolCall("c1", "f", '{"a": 1}')
    history = [
        Message.tool("orphan", tool_call_id="c0"),
        Message.user("hi", name="ana"),
        Message.assistant(tool_calls=[call]),
        Message.tool("42", tool_call_id="c1"),
        Message.assistant("done"),
    ]
    assert to_openai_messages(history, None) == [
        {"role": "user", "content": "hi", "name": "ana"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
            ],
        },
        {"role": "tool", "content": "42", "tool_call_id": "c1"},
        {"role": "assistant", "content": "done"},
    ]


async def test_the_request_for_a_two_turn_conversation_with_a_tool_call(api: FakeAPI) -> None:
    api.queue(Script(items=HELLO))
    history = [
        Message.user("What's the weather in Paris?"),
        Message.assistant(
            "Let me check.", tool_calls=[ToolCall("call_1", "get_weather", '{"city": "Paris"}')]
        ),
        Message.tool('{"temp_c": 18}', tool_call_id="call_1"),
        Message.assistant("18 °C."),
        Message.user("And tomorrow?"),
    ]
    async with make(api) as provider:
        await collect(provider, history, system="Be brief.")
    # Request shape: https://platform.openai.com/docs/api-reference/chat/create (messages,
    # assistant tool_calls, tool messages with tool_call_id).
    assert api.served[0].json() == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What's the weather in Paris?"},
            {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "content": '{"temp_c": 18}', "tool_call_id": "call_1"},
            {"role": "assistant", "content": "18 °C."},
            {"role": "user", "content": "And tomorrow?"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
