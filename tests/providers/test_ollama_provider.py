"""OllamaProvider against a loopback HTTP server and MockTransport, plus its line parser."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import pytest

from promptkit_async import Message, ToolCall
from promptkit_async._exceptions import (
    ProviderAuthError,
    ProviderStatusError,
    ProviderStreamError,
    RateLimited,
)
from promptkit_async.providers import OllamaProvider, ReplyDone, TextDelta
from promptkit_async.providers._ollama import ollama_base_url
from promptkit_async.providers._ollama_wire import OllamaLineParser, to_ollama_messages

from ._fakeapi import CHUNKINGS, FakeAPI, Script, chunked

if TYPE_CHECKING:
    from collections.abc import Sequence

    from promptkit_async.providers import StreamEvent

NDJSON = {"content-type": "application/x-ndjson"}
LF = b"\n"


def ndjson(*lines: dict[str, Any]) -> bytes:
    """One compact JSON object per line, each ending in LF (docs/api/streaming.mdx;
    server/routes.go streamResponse writes json.Marshal output plus "\\n")."""
    return b"".join(json.dumps(line, separators=(",", ":")).encode() + LF for line in lines)


def line(content: str = "", **message: Any) -> dict[str, Any]:
    """A streamed /api/chat line: model, created_at, message, done:false, in Go struct
    order (api/types.go ChatResponse, Message)."""
    return {
        "model": "qwen3:8b",
        "created_at": "2025-11-05T10:00:00.101Z",
        "message": {"role": "assistant", "content": content, **message},
        "done": False,
    }


# The last line: done:true, done_reason and the metrics in nanoseconds (api/types.go Metrics).
DONE = {
    "model": "qwen3:8b",
    "created_at": "2025-11-05T10:00:01.431Z",
    "message": {"role": "assistant", "content": ""},
    "done": True,
    "done_reason": "stop",
    "total_duration": 1830611958,
    "load_duration": 15585583,
    "prompt_eval_count": 31,
    "prompt_eval_duration": 110918500,
    "eval_count": 9,
    "eval_duration": 1573546083,
}
USAGE = {"prompt_eval_count": 31, "eval_count": 9}

# Plain text, one token per line (docs/api.md "Chat request (streaming)").
TEXT = ndjson(line("In Paris"), line(" it is"), line(" 18 °C ☁."), DONE)
FINAL_TEXT = "In Paris it is 18 °C ☁."

# A thinking model calling two tools at once: thinking lines, then one line carrying the
# whole calls with ids and index (server/routes.go toolCallId; api/types.go ToolCall,
# ToolCallFunction; ids since 0.12.10).
PARALLEL_WITH_IDS = ndjson(
    line("", thinking="The user wants"),
    line("", thinking=" two cities."),
    line(
        "",
        tool_calls=[
            {
                "id": "call_k3j9x0ab",
                "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}},
            },
            {
                "id": "call_p2m8z1cd",
                "function": {"index": 1, "name": "get_weather", "arguments": {"city": "Tōkyō"}},
            },
        ],
    ),
    DONE,
)

# An older server: no ids, one call per line, index left out when 0 (the /api/chat tool
# call example of docs/api.md before ids were added).
CALLS_WITHOUT_IDS = ndjson(
    line("", tool_calls=[{"function": {"name": "calculator", "arguments": {"expr": "20+22"}}}]),
    line(
        "",
        tool_calls=[
            {"function": {"index": 1, "name": "calculator", "arguments": {"expr": "sqrt(169)"}}}
        ],
    ),
    DONE,
)

# A failure after streaming started: one more line {"error": ...}, HTTP status still 200,
# no done line (docs/api/errors.mdx, "Errors that occur while streaming").
MID_STREAM_ERROR = ndjson(
    line("In Paris"), {"error": "an error was encountered while running the model"}
)


def make(api: FakeAPI, **kw: Any) -> OllamaProvider:
    kw.setdefault("retry_backoff", 0.01)
    return OllamaProvider("qwen3:8b", base_url=api.base_url, client=api.client(), **kw)


async def collect(
    provider: OllamaProvider, messages: Sequence[Message] = (), **kw: Any
) -> tuple[list[str], Message]:
    events: list[StreamEvent] = [e async for e in provider.stream_reply(messages, **kw)]
    *deltas, done = events
    assert isinstance(done, ReplyDone)
    assert all(isinstance(d, TextDelta) for d in deltas)
    return [d.text for d in deltas if isinstance(d, TextDelta)], done.message


@pytest.mark.parametrize("how", CHUNKINGS)
async def test_text_reply(api: FakeAPI, how: str) -> None:
    api.queue(Script(headers=NDJSON, items=chunked(TEXT, how, separator=LF)))
    async with make(api) as provider:
        texts, message = await collect(provider, [Message.user("Weather in Paris?")])
    assert texts == ["In Paris", " it is", " 18 °C ☁."]
    assert message.content == FINAL_TEXT
    assert message.metadata == {
        "finish_reason": "stop",
        "usage": USAGE,
        "model": "qwen3:8b",
        "provider": "ollama",
        "id": None,
    }
    (served,) = api.served
    assert (served.method, served.path) == ("POST", "/api/chat")
    assert served.headers["accept"] == "application/x-ndjson"
    assert "authorization" not in served.headers


@pytest.mark.parametrize("how", CHUNKINGS)
async def test_parallel_tool_calls_keep_the_servers_ids(api: FakeAPI, how: str) -> None:
    api.queue(Script(headers=NDJSON, items=chunked(PARALLEL_WITH_IDS, how, separator=LF)))
    async with make(api) as provider:
        texts, message = await collect(provider, [Message.user("Paris and Tokyo?")])
    assert texts == []  # thinking is not reply text
    assert message.tool_calls == (
        ToolCall("call_k3j9x0ab", "get_weather", '{"city": "Paris"}'),
        ToolCall("call_p2m8z1cd", "get_weather", '{"city": "Tōkyō"}'),
    )
    assert message.metadata["finish_reason"] == "stop"


@pytest.mark.parametrize("how", CHUNKINGS)
async def test_calls_without_ids_get_stable_ones(api: FakeAPI, how: str) -> None:
    api.queue(Script(headers=NDJSON, items=chunked(CALLS_WITHOUT_IDS, how, separator=LF)))
    async with make(api) as provider:
        _, message = await collect(provider, [Message.user("20+22 and sqrt(169)?")])
    assert message.tool_calls == (
        ToolCall("call_1", "calculator", '{"expr": "20+22"}'),
        ToolCall("call_2", "calculator", '{"expr": "sqrt(169)"}'),
    )


@pytest.mark.parametrize("how", ["events", "bytes"])
async def test_error_line_mid_stream(api: FakeAPI, how: str) -> None:
    api.queue(Script(headers=NDJSON, items=chunked(MID_STREAM_ERROR, how, separator=LF)))
    async with make(api) as provider:
        reply = provider.stream_reply([Message.user("hi")])
        assert await anext(reply) == TextDelta("In Paris")
        with pytest.raises(ProviderStreamError) as info:
            await anext(reply)
    assert str(info.value) == (
        "ollama: error in stream: an error was encountered while running the model"
    )


async def test_a_truncated_stream_is_a_stream_error(api: FakeAPI) -> None:
    cut = TEXT[: TEXT.index(b'{"model":"qwen3:8b","created_at":"2025-11-05T10:00:01.431Z"')]
    api.queue(Script(headers=NDJSON, items=chunked(cut, "events", separator=LF)))
    async with make(api) as provider:
        with pytest.raises(ProviderStreamError, match="without a done line"):
            await collect(provider, [Message.user("hi")])


async def test_a_line_cut_in_the_middle_is_reported(api: FakeAPI) -> None:
    api.queue(Script(headers=NDJSON, items=[TEXT[:-40]]))  # ends inside the done line
    async with make(api) as provider:
        with pytest.raises(ProviderStreamError, match=r"^ollama: malformed NDJSON line 4"):
            await collect(provider, [Message.user("hi")])


async def test_stopping_mid_stream_closes_the_connection(api: FakeAPI) -> None:
    never = asyncio.Event()
    first, *rest = chunked(TEXT, "events", separator=LF)
    api.queue(Script(headers=NDJSON, items=[first, never, *rest]))
    async with make(api) as provider:
        reply = provider.stream_reply([Message.user("hi")])
        assert await anext(reply) == TextDelta("In Paris")
        task = asyncio.ensure_future(anext(reply))
        await asyncio.sleep(0.05)  # let it block on the socket read
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(api.served[0].closed.wait(), timeout=2)
        assert not api.served[0].finished.is_set()


JSON = {"content-type": "application/json; charset=utf-8"}


# HTTP errors are {"error": "<message>"} (docs/api/errors.mdx; server/routes.go).
@pytest.mark.parametrize(
    ("status", "message", "error_type"),
    [
        (400, '"llama3.2" does not support thinking', ProviderStatusError),
        (401, "unauthorized", ProviderAuthError),
        (404, "model 'qwen3:8b' not found", ProviderStatusError),
        (500, "llama runner process has terminated", ProviderStatusError),
    ],
)
async def test_error_statuses(
    api: FakeAPI, status: int, message: str, error_type: type[ProviderStatusError]
) -> None:
    body = json.dumps({"error": message}).encode()
    api.queue(*(Script(status=status, headers=JSON, items=[body]) for _ in range(3)))
    async with make(api) as provider:
        with pytest.raises(error_type) as info:
            await collect(provider, [Message.user("hi")])
    assert type(info.value) is error_type
    assert info.value.status_code == status
    assert message in str(info.value)
    assert len(api.served) == (3 if status == 500 else 1)


async def test_a_busy_server_is_retried(api: FakeAPI) -> None:
    body = json.dumps({"error": "server busy, please try again. maximum pending requests exceeded"})
    api.queue(
        Script(status=429, headers={**JSON, "retry-after": "0"}, items=[body.encode()]),
        Script(headers=NDJSON, items=[TEXT]),
    )
    async with make(api) as provider:
        _, message = await collect(provider, [Message.user("hi")])
    assert message.content == FINAL_TEXT
    assert len(api.served) == 2
    api.queue(*(Script(status=429, headers=JSON, items=[body.encode()]) for _ in range(2)))
    async with make(api, max_retries=1) as provider:
        with pytest.raises(RateLimited, match="server busy"):
            await collect(provider, [Message.user("hi")])


def two_turns() -> list[Message]:
    return [
        Message.user("What's the weather in Paris?"),
        Message.assistant(
            "Let me check.", tool_calls=[ToolCall("call_1", "get_weather", '{"city": "Paris"}')]
        ),
        Message.tool('{"temp_c": 18}', tool_call_id="call_1"),
        Message.assistant("18 °C."),
        Message.user("And tomorrow?"),
    ]


async def test_the_request_for_a_two_turn_conversation_with_a_tool_call(api: FakeAPI) -> None:
    api.queue(Script(headers=NDJSON, items=[TEXT]))
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    params = {"tools": tools, "options": {"temperature": 0.2, "num_ctx": 8192}}
    async with make(api, params=params, api_key="ollama-key") as provider:
        await collect(provider, two_turns(), system="Be brief.")
    # Request shape: docs/api.md "Generate a chat completion"; api/types.go ChatRequest,
    # Message (tool_name, tool_call_id), ToolCall, ToolCallFunction (arguments: an object).
    assert api.served[0].headers["authorization"] == "Bearer ollama-key"
    assert api.served[0].json() == {
        "model": "qwen3:8b",
        "tools": tools,
        "options": {"temperature": 0.2, "num_ctx": 8192},
        "stream": True,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What's the weather in Paris?"},
            {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                    }
                ],
            },
            {
                "role": "tool",
                "content": '{"temp_c": 18}',
                "tool_name": "get_weather",
                "tool_call_id": "call_1",
            },
            {"role": "assistant", "content": "18 °C."},
            {"role": "user", "content": "And tomorrow?"},
        ],
    }


async def test_a_reply_round_trips_into_the_next_request(api: FakeAPI) -> None:
    api.queue(
        Script(headers=NDJSON, items=[CALLS_WITHOUT_IDS]), Script(headers=NDJSON, items=[TEXT])
    )
    async with make(api) as provider:
        question = Message.user("20+22 and sqrt(169)?")
        _, calls = await collect(provider, [question])
        results = [
            Message.tool("42", tool_call_id="call_1"),
            Message.tool("13", tool_call_id="call_2"),
        ]
        await collect(provider, [question, calls, *results])
    assert api.served[1].json()["messages"][1:] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "function": {"name": "calculator", "arguments": {"expr": "20+22"}},
                },
                {
                    "id": "call_2",
                    "function": {"name": "calculator", "arguments": {"expr": "sqrt(169)"}},
                },
            ],
        },
        {"role": "tool", "content": "42", "tool_name": "calculator", "tool_call_id": "call_1"},
        {"role": "tool", "content": "13", "tool_name": "calculator", "tool_call_id": "call_2"},
    ]


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("localhost:11434", "http://localhost:11434"),
        ("example.com", "http://example.com:11434"),
        ("  gpu-box:8080 ", "http://gpu-box:8080"),
        (":11435", "http://127.0.0.1:11435"),
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("0.0.0.0:9999", "http://127.0.0.1:9999"),
        ("[::]:11434", "http://[::1]:11434"),
        ("[fe80::1]", "http://[fe80::1]:11434"),
        ("http://ollama.internal", "http://ollama.internal"),  # a scheme: its own default port
        ("https://ollama.example.com/", "https://ollama.example.com"),
        ("https://proxy.example.com/ollama/", "https://proxy.example.com/ollama"),
        ("http://localhost:11434", "http://localhost:11434"),
    ],
)
def test_ollama_host_values(host: str, url: str) -> None:
    assert ollama_base_url(host) == url


def test_a_bad_port_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="invalid Ollama host 'localhost:abc'"):
        OllamaProvider("m", base_url="localhost:abc")


async def test_the_environment(monkeypatch: pytest.MonkeyPatch, api: FakeAPI) -> None:
    assert OllamaProvider("m").base_url == "http://localhost:11434"
    if api.kind == "loopback":
        monkeypatch.setenv("OLLAMA_HOST", api.base_url.removeprefix("http://"))
    api.queue(Script(headers=NDJSON, items=[TEXT]))
    base_url = None if api.kind == "loopback" else api.base_url
    async with OllamaProvider("m", base_url=base_url, client=api.client()) as provider:
        assert provider.base_url == api.base_url
        await collect(provider, [Message.user("hi")])
    assert len(api.served) == 1


# -- the sans-IO parts ----------------------------------------------------------


def test_history_conversion() -> None:
    history = [
        Message.tool("orphan", tool_call_id="gone"),  # no call: sent without a tool_name
        Message.system("Answer in French."),
        Message.assistant(tool_calls=[ToolCall("c1", "f", "not json")]),
        Message.tool("r", tool_call_id="c1"),
    ]
    assert to_ollama_messages(history, None) == [
        {"role": "tool", "content": "orphan", "tool_call_id": "gone"},
        {"role": "system", "content": "Answer in French."},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": {}}}],
        },
        {"role": "tool", "content": "r", "tool_name": "f", "tool_call_id": "c1"},
    ]


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ([1, 2], "not an object"),
        ({"error": {"message": "nested"}}, "error in stream: nested"),
        ({"error": None}, "error in stream: unknown error"),
        ({"message": {"tool_calls": [{"function": {"arguments": {}}}]}}, "without a name"),
    ],
)
def test_parser_errors(value: Any, match: str) -> None:
    with pytest.raises(ProviderStreamError, match=match):
        OllamaLineParser().feed(value)


def test_parser_edges() -> None:
    parser = OllamaLineParser()
    assert parser.feed({"message": {"content": None, "tool_calls": ["junk"]}}) == ""
    text_args = {"function": {"name": "f", "arguments": '{"already": "text"}'}}
    assert parser.feed({"message": {"content": "x", "tool_calls": [text_args]}}) == "x"
    assert parser.feed({"done": True, "eval_count": True}) == ""  # a bool is no count
    assert parser.done
    assert parser.feed({"error": "after the end"}) == ""
    message = parser.message()
    assert message.tool_calls == (ToolCall("call_1", "f", '{"already": "text"}'),)
    assert message.metadata["usage"] is None
    assert message.metadata["finish_reason"] is None


async def test_a_last_line_without_its_newline_still_counts(api: FakeAPI) -> None:
    api.queue(Script(headers=NDJSON, items=[TEXT.rstrip(LF)]))
    async with make(api) as provider:
        _, message = await collect(provider, [Message.user("hi")])
    assert message.content == FINAL_TEXT
    assert message.metadata["usage"] == USAGE


def test_a_lone_surrogate_is_an_unusable_reply() -> None:
    parser = OllamaLineParser()
    parser.feed(json.loads('{"message": {"content": "\\ud800"}, "done": true}'))
    with pytest.raises(ProviderStreamError, match="unusable reply"):
        parser.message()
