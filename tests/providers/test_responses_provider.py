"""OpenAIResponsesProvider against a loopback HTTP server and MockTransport, plus its parser."""

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
from promptkit_async.providers import OpenAIResponsesProvider, ReplyDone, SSEDecoder, TextDelta
from promptkit_async.providers._responses_wire import ResponsesEventParser, to_responses_input

from ._fakeapi import CHUNKINGS, FakeAPI, Script, chunked

if TYPE_CHECKING:
    from collections.abc import Sequence

    from promptkit_async import JSONValue
    from promptkit_async.providers import StreamEvent

KEY = "sk-test-RESPONSES-0123456789"
RESP_ID = "resp_68a1c2e0f7d48190b3a7c1d2e3f40516"
MSG_ID = "msg_68a1c2e1a9b08190a1b2c3d4e5f60718"
USAGE = {
    "input_tokens": 41,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 12,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 53,
}


def response(status: str, output: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """A Response object with the keys a real stream carries (notes/wire.md 1.2;
    SDK ``openai/types/responses/response.py``)."""
    return {
        "id": RESP_ID,
        "object": "response",
        "created_at": 1755427552,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": "Be brief.",
        "max_output_tokens": None,
        "model": "gpt-4.1-mini-2025-04-14",
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "auto",
        "store": False,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": None,
        "user": None,
        "metadata": {},
        **fields,
    }


def stream(*events: dict[str, Any]) -> bytes:
    """SSE framing of the Responses API: ``event: <type>`` equal to ``data.type``, a
    ``sequence_number`` rising from 0, no ``[DONE]`` (notes/wire.md 1.2)."""
    out = []
    for n, event in enumerate(events):
        payload = {"type": event["type"], "sequence_number": n, **event}
        out.append(f"event: {event['type']}\ndata: {json.dumps(payload)}\n\n")
    return "".join(out).encode()


def text_delta(delta: str, item_id: str = MSG_ID) -> dict[str, Any]:
    return {
        "type": "response.output_text.delta",
        "item_id": item_id,
        "output_index": 0,
        "content_index": 0,
        "delta": delta,
        "logprobs": [],
    }


FINAL_TEXT = "It is 18 °C — cloudy ☁."
MESSAGE_ITEM = {
    "id": MSG_ID,
    "type": "message",
    "status": "completed",
    "role": "assistant",
    "content": [{"type": "output_text", "annotations": [], "text": FINAL_TEXT}],
}

# A plain text answer. Event types and fields: SDK openai/types/responses/
# response_{created,in_progress,output_item_added,content_part_added,text_delta,text_done,
# content_part_done,output_item_done,completed}_event.py (openai 3.57.0); the order is that
# of https://platform.openai.com/docs/guides/streaming-responses.
TEXT = stream(
    {"type": "response.created", "response": response("in_progress", [])},
    {"type": "response.in_progress", "response": response("in_progress", [])},
    {
        "type": "response.output_item.added",
        "output_index": 0,
        "item": {**MESSAGE_ITEM, "status": "in_progress", "content": []},
    },
    {
        "type": "response.content_part.added",
        "item_id": MSG_ID,
        "output_index": 0,
        "content_index": 0,
        "part": {"type": "output_text", "annotations": [], "text": ""},
    },
    text_delta("It is 18 °C"),
    text_delta(" — cloudy"),
    text_delta(" ☁."),
    {
        "type": "response.output_text.done",
        "item_id": MSG_ID,
        "output_index": 0,
        "content_index": 0,
        "text": FINAL_TEXT,
        "logprobs": [],
    },
    {
        "type": "response.content_part.done",
        "item_id": MSG_ID,
        "output_index": 0,
        "content_index": 0,
        "part": MESSAGE_ITEM["content"][0],
    },
    {"type": "response.output_item.done", "output_index": 0, "item": MESSAGE_ITEM},
    {
        "type": "response.completed",
        "response": response("completed", [MESSAGE_ITEM], usage=USAGE),
    },
)

RS_ID = "rs_68a1c3100c2c8190a7e1f0e2d3c4b5a6"
FC_ID = "fc_68a1c3122d3c8190b8f2e1d3c4b5a6f7"
CALL_ID = "call_Xq3pT0aRk9bLmN2vWc4ZyH7e"
REASONING_DONE = {
    "id": RS_ID,
    "type": "reasoning",
    "encrypted_content": "gAAAAABoocMS-final-opaque-blob==",
    "summary": [{"type": "summary_text", "text": "**Looking up the weather**"}],
}
CALL_ITEM = {
    "id": FC_ID,
    "type": "function_call",
    "status": "completed",
    "arguments": '{"city":"Paris"}',
    "call_id": CALL_ID,
    "name": "get_weather",
}

# A reasoning model with store:false: an encrypted reasoning item (its .added copy differs
# from the .done one, SDK docstring of ResponseOutputItemAddedEvent), then a function call
# whose arguments stream as deltas. Shapes: SDK response_reasoning_item.py,
# response_function_tool_call.py, response_function_call_arguments_{delta,done}_event.py,
# response_reasoning_summary_{part_added,text_delta,text_done,part_done}_event.py;
# https://platform.openai.com/docs/guides/reasoning#encrypted-reasoning-items.
REASONING_AND_CALL = stream(
    {"type": "response.created", "response": response("in_progress", [])},
    {
        "type": "response.output_item.added",
        "output_index": 0,
        "item": {**REASONING_DONE, "encrypted_content": "gAAAAABoocMQ-partial", "summary": []},
    },
    {
        "type": "response.reasoning_summary_part.added",
        "item_id": RS_ID,
        "output_index": 0,
        "summary_index": 0,
        "part": {"type": "summary_text", "text": ""},
    },
    {
        "type": "response.reasoning_summary_text.delta",
        "item_id": RS_ID,
        "output_index": 0,
        "summary_index": 0,
        "delta": "**Looking up the weather**",
        "obfuscation": "Zq81",
    },
    {
        "type": "response.reasoning_summary_text.done",
        "item_id": RS_ID,
        "output_index": 0,
        "summary_index": 0,
        "text": "**Looking up the weather**",
    },
    {"type": "response.output_item.done", "output_index": 0, "item": REASONING_DONE},
    {
        "type": "response.output_item.added",
        "output_index": 1,
        "item": {**CALL_ITEM, "status": "in_progress", "arguments": ""},
    },
    {
        "type": "response.function_call_arguments.delta",
        "item_id": FC_ID,
        "output_index": 1,
        "delta": '{"city":',
        "obfuscation": "k2",
    },
    {
        "type": "response.function_call_arguments.delta",
        "item_id": FC_ID,
        "output_index": 1,
        "delta": '"Paris"}',
        "obfuscation": "9Lm",
    },
    {
        "type": "response.function_call_arguments.done",
        "item_id": FC_ID,
        "output_index": 1,
        "arguments": '{"city":"Paris"}',
    },
    {"type": "response.output_item.done", "output_index": 1, "item": CALL_ITEM},
    {
        "type": "response.completed",
        "response": response("completed", [REASONING_DONE, CALL_ITEM], usage=USAGE),
    },
)


def call_events(index: int, item_id: str, call_id: str, name: str, args: str) -> list[Any]:
    item = {
        "id": item_id,
        "type": "function_call",
        "status": "completed",
        "arguments": args,
        "call_id": call_id,
        "name": name,
    }
    half = len(args) // 2
    return [
        {
            "type": "response.output_item.added",
            "output_index": index,
            "item": {**item, "status": "in_progress", "arguments": ""},
        },
        {
            "type": "response.function_call_arguments.delta",
            "item_id": item_id,
            "output_index": index,
            "delta": args[:half],
        },
        {
            "type": "response.function_call_arguments.delta",
            "item_id": item_id,
            "output_index": index,
            "delta": args[half:],
        },
        {
            "type": "response.function_call_arguments.done",
            "item_id": item_id,
            "output_index": index,
            "arguments": args,
        },
        {"type": "response.output_item.done", "output_index": index, "item": item},
    ]


# Parallel calls (parallel_tool_calls: true): one function_call output item each, in
# output_index order. Shapes as above (SDK response_function_tool_call.py).
PARALLEL = stream(
    {"type": "response.created", "response": response("in_progress", [])},
    *call_events(0, "fc_a1", "call_paris", "get_weather", '{"city": "Paris"}'),
    *call_events(1, "fc_b2", "call_tokyo", "get_weather", '{"city": "Tōkyō"}'),
    {"type": "response.completed", "response": response("completed", [], usage=USAGE)},
)

# A refusal: a "refusal" content part with refusal deltas (SDK response_refusal_delta_event.py,
# response_refusal_done_event.py, response_output_refusal.py).
REFUSAL = stream(
    {"type": "response.created", "response": response("in_progress", [])},
    {
        "type": "response.content_part.added",
        "item_id": MSG_ID,
        "output_index": 0,
        "content_index": 0,
        "part": {"type": "refusal", "refusal": ""},
    },
    {
        "type": "response.refusal.delta",
        "item_id": MSG_ID,
        "output_index": 0,
        "content_index": 0,
        "delta": "I can't help with that.",
    },
    {
        "type": "response.refusal.done",
        "item_id": MSG_ID,
        "output_index": 0,
        "content_index": 0,
        "refusal": "I can't help with that.",
    },
    {"type": "response.completed", "response": response("completed", [], usage=USAGE)},
)

# Cut short by max_output_tokens: response.incomplete is the terminal event
# (SDK response_incomplete_event.py; Response.incomplete_details.reason).
INCOMPLETE = stream(
    {"type": "response.created", "response": response("in_progress", [])},
    text_delta("Once upon"),
    text_delta(" a"),
    {
        "type": "response.incomplete",
        "response": response(
            "incomplete",
            [],
            incomplete_details={"reason": "max_output_tokens"},
            usage={**USAGE, "output_tokens": 2},
        ),
    },
)

QUOTA_MESSAGE = "You exceeded your current quota, please check your plan and billing details."
# An error after HTTP 200: an `error` event with the fields nested under "error" (as real
# streams send it), then response.failed (SDK response_error_event.py,
# response_failed_event.py; https://platform.openai.com/docs/guides/error-codes).
ERROR_THEN_FAILED = stream(
    {"type": "response.created", "response": response("in_progress", [])},
    text_delta("It is"),
    {
        "type": "error",
        "error": {
            "type": "insufficient_quota",
            "code": "insufficient_quota",
            "message": QUOTA_MESSAGE,
            "param": None,
        },
    },
    {
        "type": "response.failed",
        "response": response(
            "failed", [], error={"code": "insufficient_quota", "message": QUOTA_MESSAGE}
        ),
    },
)


def make(api: FakeAPI, **kw: Any) -> OpenAIResponsesProvider:
    kw.setdefault("retry_backoff", 0.01)
    kw.setdefault("api_key", KEY)
    return OpenAIResponsesProvider(
        "gpt-4.1-mini", base_url=api.base_url + "/v1", client=api.client(), **kw
    )


async def collect(
    provider: OpenAIResponsesProvider, messages: Sequence[Message] = (), **kw: Any
) -> tuple[list[str], Message]:
    events: list[StreamEvent] = [e async for e in provider.stream_reply(messages, **kw)]
    *deltas, done = events
    assert isinstance(done, ReplyDone)
    assert all(isinstance(d, TextDelta) for d in deltas)
    return [d.text for d in deltas if isinstance(d, TextDelta)], done.message


@pytest.mark.parametrize("how", CHUNKINGS)
async def test_text_reply(api: FakeAPI, how: str) -> None:
    api.queue(Script(items=chunked(TEXT, how)))
    async with make(api) as provider:
        texts, message = await collect(provider, [Message.user("Weather in Paris?")])
    assert texts == ["It is 18 °C", " — cloudy", " ☁."]  # one per delta, however cut
    assert message.content == FINAL_TEXT
    assert message.tool_calls == ()
    assert message.metadata == {
        "finish_reason": "stop",
        "usage": USAGE,
        "model": "gpt-4.1-mini-2025-04-14",
        "provider": "openai-responses",
        "id": RESP_ID,
    }
    (served,) = api.served
    assert (served.method, served.path) == ("POST", "/v1/responses")
    assert served.headers["authorization"] == f"Bearer {KEY}"
    assert served.headers["accept"] == "text/event-stream"


@pytest.mark.parametrize("how", CHUNKINGS)
async def test_reasoning_and_a_tool_call(api: FakeAPI, how: str) -> None:
    api.queue(Script(items=chunked(REASONING_AND_CALL, how)))
    async with make(api) as provider:
        texts, message = await collect(provider, [Message.user("Weather in Paris?")])
    assert texts == []
    assert message.content == ""
    assert message.tool_calls == (ToolCall(CALL_ID, "get_weather", '{"city":"Paris"}'),)
    assert message.metadata["finish_reason"] == "tool_calls"
    # The .done copy, whole: it is what the next request sends back.
    assert message.metadata["openai_reasoning"] == [REASONING_DONE]


@pytest.mark.parametrize("how", CHUNKINGS)
async def test_parallel_tool_calls(api: FakeAPI, how: str) -> None:
    api.queue(Script(items=chunked(PARALLEL, how)))
    async with make(api) as provider:
        _, message = await collect(provider, [Message.user("Paris and Tokyo?")])
    assert message.tool_calls == (
        ToolCall("call_paris", "get_weather", '{"city": "Paris"}'),
        ToolCall("call_tokyo", "get_weather", '{"city": "Tōkyō"}'),
    )
    assert message.metadata["usage"] == USAGE
    assert "openai_reasoning" not in message.metadata


async def test_refusal_is_text_and_marked(api: FakeAPI) -> None:
    api.queue(Script(items=chunked(REFUSAL, "events")))
    async with make(api) as provider:
        texts, message = await collect(provider, [Message.user("...")])
    assert texts == ["I can't help with that."]
    assert message.metadata["refusal"] is True
    assert message.metadata["finish_reason"] == "stop"


async def test_an_incomplete_response_is_still_a_reply(api: FakeAPI) -> None:
    api.queue(Script(items=chunked(INCOMPLETE, "events")))
    async with make(api) as provider:
        texts, message = await collect(provider, [Message.user("Tell me a story")])
    assert message.content == "Once upon a"
    assert message.metadata["finish_reason"] == "max_output_tokens"
    assert message.metadata["usage"] == {**USAGE, "output_tokens": 2}


@pytest.mark.parametrize("how", ["events", "bytes"])
async def test_error_event_mid_stream(api: FakeAPI, how: str) -> None:
    api.queue(Script(items=chunked(ERROR_THEN_FAILED, how)))
    async with make(api) as provider:
        stream_ = provider.stream_reply([Message.user("hi")])
        assert await anext(stream_) == TextDelta("It is")
        with pytest.raises(ProviderStreamError) as info:
            await anext(stream_)
    assert str(info.value) == (
        f"openai-responses: error event in stream: {QUOTA_MESSAGE} (insufficient_quota)"
    )


def test_error_event_in_the_sdk_shape_and_failed_alone() -> None:
    # ResponseErrorEvent as the SDK types it: code/message/param at the top level.
    flat = {"type": "error", "code": "server_error", "message": "Sorry.", "param": None}
    with pytest.raises(
        ProviderStreamError, match=r"error event in stream: Sorry\. \(server_error\)"
    ):
        parse(stream(flat))
    # A null code falls back to the type (the shape of a real server_error capture).
    nested = {"type": "error", "error": {"type": "server_error", "code": None, "message": "Oops"}}
    with pytest.raises(ProviderStreamError, match=r"Oops \(server_error\)"):
        parse(stream(nested))
    failed = {
        "type": "response.failed",
        "response": response(
            "failed", [], error={"code": "rate_limit_exceeded", "message": "Request too large."}
        ),
    }
    with pytest.raises(
        ProviderStreamError, match=r"response failed: Request too large\. \(rate_limit_exceeded\)"
    ):
        parse(stream(failed))


async def test_a_truncated_stream_is_a_stream_error(api: FakeAPI) -> None:
    cut = TEXT[: TEXT.index(b"event: response.completed")]
    api.queue(Script(items=chunked(cut, "events")))
    async with make(api) as provider:
        with pytest.raises(ProviderStreamError, match="without response.completed"):
            await collect(provider, [Message.user("hi")])


async def test_stopping_mid_stream_closes_the_connection(api: FakeAPI) -> None:
    never = asyncio.Event()
    events = chunked(TEXT, "events")
    api.queue(Script(items=[*events[:5], never, *events[5:]]))
    async with make(api) as provider:
        reply = provider.stream_reply([Message.user("hi")])
        assert await anext(reply) == TextDelta("It is 18 °C")
        task = asyncio.ensure_future(anext(reply))
        await asyncio.sleep(0.05)  # let it block on the socket read
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(api.served[0].closed.wait(), timeout=2)
        assert not api.served[0].finished.is_set()


# Error bodies: {"error": {message, type, param, code}}
# (https://platform.openai.com/docs/guides/error-codes#api-errors).
def error_body(message: str, kind: str, code: str | None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": kind, "param": None, "code": code}}
    ).encode()


JSON = {"content-type": "application/json", "x-request-id": "req_7f3a"}


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(400, ProviderStatusError), (401, ProviderAuthError), (500, ProviderStatusError)],
)
async def test_error_statuses(
    api: FakeAPI, status: int, error_type: type[ProviderStatusError]
) -> None:
    body = error_body("Unsupported parameter: 'temperature'.", "invalid_request_error", None)
    api.queue(*(Script(status=status, headers=JSON, items=[body]) for _ in range(3)))
    async with make(api) as provider:
        with pytest.raises(error_type) as info:
            await collect(provider, [Message.user("hi")])
    assert type(info.value) is error_type
    assert info.value.status_code == status
    assert info.value.request_id == "req_7f3a"
    assert "Unsupported parameter" in str(info.value)
    assert len(api.served) == (3 if status == 500 else 1)  # 5xx retried twice


async def test_a_rate_limit_is_retried(api: FakeAPI) -> None:
    body = error_body("Rate limit reached for requests", "requests", "rate_limit_exceeded")
    api.queue(
        Script(status=429, headers={**JSON, "retry-after": "0"}, items=[body]),
        Script(items=[TEXT]),
    )
    async with make(api) as provider:
        _, message = await collect(provider, [Message.user("hi")])
    assert message.content == FINAL_TEXT
    assert len(api.served) == 2


async def test_an_exhausted_quota_is_not_retried(api: FakeAPI) -> None:
    body = error_body(QUOTA_MESSAGE, "insufficient_quota", "insufficient_quota")
    api.queue(Script(status=429, headers=JSON, items=[body]), Script(items=[TEXT]))
    async with make(api) as provider:
        with pytest.raises(RateLimited) as info:
            await collect(provider, [Message.user("hi")])
    assert QUOTA_MESSAGE in str(info.value) and info.value.request_id == "req_7f3a"
    assert len(api.served) == 1


WEATHER_CALL = ToolCall("call_w1", "get_weather", '{"city": "Paris"}')
REASONING: dict[str, JSONValue] = {
    "id": "rs_prev",
    "type": "reasoning",
    "encrypted_content": "gAAAAAB-prev==",
    "summary": [],
}


def two_turns() -> list[Message]:
    return [
        Message.user("What's the weather in Paris?"),
        Message.assistant("Let me check.", tool_calls=[WEATHER_CALL], openai_reasoning=[REASONING]),
        Message.tool('{"temp_c": 18, "sky": "cloudy"}', tool_call_id="call_w1"),
        Message.assistant("18 °C and cloudy."),
        Message.user("And tomorrow?"),
    ]


async def test_the_request_for_a_two_turn_conversation_with_a_tool_call(api: FakeAPI) -> None:
    api.queue(Script(items=[TEXT]))
    tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
    async with make(api, params={"tools": [tool], "max_output_tokens": 500}) as provider:
        await collect(provider, two_turns(), system="Be brief.")
    # Request shape: SDK openai/types/responses/response_create_params.py,
    # easy_input_message_param.py, response_output_message_param.py,
    # response_function_tool_call_param.py, response_input_item_param.py (FunctionCallOutput).
    assert api.served[0].json() == {
        "model": "gpt-4.1-mini",
        "tools": [tool],
        "max_output_tokens": 500,
        "instructions": "Be brief.",
        "stream": True,
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "input": [
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "What's the weather in Paris?"}],
            },
            REASONING,
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Let me check.", "annotations": []}],
            },
            {
                "type": "function_call",
                "call_id": "call_w1",
                "name": "get_weather",
                "arguments": '{"city": "Paris"}',
            },
            {
                "type": "function_call_output",
                "call_id": "call_w1",
                "output": '{"temp_c": 18, "sky": "cloudy"}',
            },
            {
                "type": "message",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": "18 °C and cloudy.", "annotations": []}
                ],
            },
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "And tomorrow?"}],
            },
        ],
    }


async def test_a_reply_round_trips_into_the_next_request(api: FakeAPI) -> None:
    api.queue(Script(items=[REASONING_AND_CALL]), Script(items=[TEXT]))
    async with make(api) as provider:
        question = Message.user("Weather in Paris?")
        _, call = await collect(provider, [question])
        result = Message.tool("18 °C", tool_call_id=CALL_ID)
        await collect(provider, [question, call, result])
    assert api.served[1].json()["input"][1:] == [
        REASONING_DONE,
        {
            "type": "function_call",
            "call_id": CALL_ID,
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
        },
        {"type": "function_call_output", "call_id": CALL_ID, "output": "18 °C"},
    ]


async def test_store_and_include_and_the_environment(
    monkeypatch: pytest.MonkeyPatch, api: FakeAPI
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    monkeypatch.setenv("OPENAI_BASE_URL", api.base_url + "/v1/")
    api.queue(Script(items=[TEXT]), Script(items=[TEXT]))
    async with OpenAIResponsesProvider("m", client=api.client(), store=True) as provider:
        assert provider.base_url == api.base_url + "/v1"
        await collect(provider, [Message.user("hi")])
    params = {"include": ["message.output_text.logprobs"]}
    async with OpenAIResponsesProvider("m", api_key="", client=api.client(), params=params) as p:
        await collect(p, [Message.user("hi")])
    first, second = (s.json() for s in api.served)
    assert api.served[0].headers["authorization"] == "Bearer sk-from-env"
    assert first["store"] is True and "include" not in first and "instructions" not in first
    assert "authorization" not in api.served[1].headers
    assert second["store"] is False
    assert second["include"] == ["message.output_text.logprobs", "reasoning.encrypted_content"]


# -- the sans-IO parts ----------------------------------------------------------


def parse(body: bytes) -> tuple[list[str], Message]:
    parser = ResponsesEventParser()
    texts = [parser.feed(e) for e in SSEDecoder().feed(body)]
    assert parser.done
    return [t for t in texts if t], parser.message()


def test_unknown_events_are_ignored_and_nothing_counts_after_the_end() -> None:
    texts, message = parse(
        stream(
            {"type": "response.created", "response": response("in_progress", [])},
            {"type": "response.output_text.annotation.added", "annotation": {}},
            {"type": "response.some_future_event", "whatever": [1]},
            text_delta("ok"),
            {"type": "response.completed", "response": response("completed", [])},
            text_delta("after the end"),
            {"type": "error", "message": "after the end"},
        )
    )
    assert texts == ["ok"] and message.content == "ok"


def test_interleaved_argument_deltas_are_kept_apart_by_item() -> None:
    _, message = parse(
        stream(
            {
                "type": "response.output_item.added",
                "item": {"id": "fc_1", "type": "function_call", "call_id": "c1", "name": "f"},
            },
            {
                "type": "response.output_item.added",
                "item": {"id": "fc_2", "type": "function_call", "call_id": "c2", "name": "g"},
            },
            {"type": "response.function_call_arguments.delta", "item_id": "fc_2", "delta": '{"b"'},
            {"type": "response.function_call_arguments.delta", "item_id": "fc_1", "delta": '{"a"'},
            {"type": "response.function_call_arguments.delta", "item_id": "fc_1", "delta": ": 1}"},
            {"type": "response.function_call_arguments.delta", "item_id": "fc_2", "delta": ": 2}"},
            {"type": "response.completed", "response": {}},
        )
    )
    assert message.tool_calls == (ToolCall("c1", "f", '{"a": 1}'), ToolCall("c2", "g", '{"b": 2}'))


def test_text_that_arrived_only_in_the_done_item_is_kept() -> None:
    texts, message = parse(
        stream(
            {"type": "response.output_item.done", "item": MESSAGE_ITEM},
            {"type": "response.completed", "response": response("completed", [])},
        )
    )
    assert texts == [FINAL_TEXT] and message.content == FINAL_TEXT


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ("not json", "malformed"),
        ("[1]", "not an object"),
        (
            json.dumps(
                {"type": "response.output_item.done", "item": {"id": "x", "type": "function_call"}}
            ),
            "without call_id or name",
        ),
    ],
)
def test_parser_errors(data: str, match: str) -> None:
    parser = ResponsesEventParser()
    with pytest.raises(ProviderStreamError, match=match):
        for event in SSEDecoder().feed(f"data: {data}\n\n".encode()):
            parser.feed(event)
        parser.message()


def test_history_conversion_drops_results_without_their_call() -> None:
    history = [
        Message.tool("orphan", tool_call_id="gone"),
        Message.system("Answer in French."),
        Message.user("hi"),
        Message.assistant(""),
    ]
    assert to_responses_input(history) == [
        {
            "type": "message",
            "role": "system",
            "content": [{"type": "input_text", "text": "Answer in French."}],
        },
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
    ]


def test_odd_but_valid_payloads() -> None:
    texts, message = parse(
        stream(
            {"type": "response.created", "response": None},
            text_delta(""),
            {"type": "response.output_text.delta", "delta": "no item id, "},
            {"type": "response.output_item.done", "item": "junk"},
            {"type": "response.output_item.done", "item": {"id": "m1", "type": "message"}},
            {
                "type": "response.output_item.done",
                "item": {
                    "id": "m2",
                    "type": "message",
                    "content": ["junk", {"type": "refusal", "refusal": "refused in full"}],
                },
            },
            {"type": "response.output_item.done", "item": {"id": "m3", "type": "message"}},
            {
                "type": "response.output_item.added",
                "item": {"id": "fc", "type": "function_call", "call_id": "c", "name": "f"},
            },
            {"type": "response.function_call_arguments.delta", "item_id": "fc", "delta": None},
            {"type": "response.function_call_arguments.done", "item_id": "fc", "arguments": 7},
            {
                "type": "response.output_item.done",
                "item": {
                    "id": "whole",
                    "type": "function_call",
                    "call_id": "d",
                    "name": "g",
                    "arguments": '{"x": 1}',
                },
            },
            {"type": "response.incomplete", "response": {"incomplete_details": None}},
        )
    )
    assert texts == ["no item id, ", "refused in full"]
    assert message.metadata["refusal"] is True
    assert message.metadata["finish_reason"] == "incomplete"
    assert message.tool_calls == (ToolCall("c", "f", "{}"), ToolCall("d", "g", '{"x": 1}'))
    with pytest.raises(ProviderStreamError, match=r"error event in stream: unknown error$"):
        parse(stream({"type": "error", "error": {"code": ""}}))
    with pytest.raises(ProviderStreamError, match="unusable reply"):
        parse(b'data: {"type": "response.completed", "response": {"usage": {"n": NaN}}}\n\n')


async def test_organization_header() -> None:
    async with OpenAIResponsesProvider("m", api_key="", organization="org-7") as provider:
        assert provider._headers["OpenAI-Organization"] == "org-7"
