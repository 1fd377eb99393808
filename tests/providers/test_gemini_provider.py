"""GeminiProvider against a loopback HTTP server and MockTransport, plus its chunk parser."""

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
from promptkit_async.providers import GeminiProvider, ReplyDone, SSEDecoder, TextDelta
from promptkit_async.providers._gemini_wire import GeminiChunkParser, to_gemini_contents

from ._fakeapi import CHUNKINGS, FakeAPI, Script, chunked

if TYPE_CHECKING:
    from collections.abc import Sequence

    from promptkit_async.providers import StreamEvent

KEY = "AIzaSy-test-GEMINI-0123456789"
MODEL = "gemini-2.5-flash"
RESPONSE_ID = "q0xcaPq2Lo-5nvgPnYXK4Qs"
CRLF = b"\r\n\r\n"


def sse(*chunks: dict[str, Any]) -> bytes:
    """``data: <GenerateContentResponse>`` then a blank line, CRLF-framed as the live API
    sends it, no ``event:`` lines and no terminator (notes/wire.md 4.2)."""
    return b"".join(b"data: " + json.dumps(c).encode() + CRLF for c in chunks)


def chunk(
    parts: list[dict[str, Any]],
    usage: dict[str, Any],
    finish: str | None = None,
    **candidate: Any,
) -> dict[str, Any]:
    """A streamed GenerateContentResponse: one candidate, cumulative usageMetadata,
    modelVersion and responseId on every chunk (google/genai/types.py
    GenerateContentResponse, Candidate, Part; https://ai.google.dev/api/generate-content)."""
    cand: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, **candidate}
    if finish is not None:
        cand["finishReason"] = finish
        cand["index"] = 0
    return {
        "candidates": [cand],
        "usageMetadata": usage,
        "modelVersion": MODEL,
        "responseId": RESPONSE_ID,
    }


PROMPT_ONLY = {
    "promptTokenCount": 24,
    "totalTokenCount": 24,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 24}],
}
FINAL_USAGE = {
    "promptTokenCount": 24,
    "candidatesTokenCount": 14,
    "totalTokenCount": 38,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 24}],
}

# Plain text: intermediate chunks carry only prompt counts, the last one the totals and
# finishReason STOP (https://ai.google.dev/api/generate-content#method:-models.streamgeneratecontent;
# UsageMetadata and FinishReason in google/genai/types.py, google-genai 3.6.1).
TEXT = sse(
    chunk([{"text": "In Paris it is"}], PROMPT_ONLY),
    chunk([{"text": " 18 °C"}], PROMPT_ONLY),
    chunk([{"text": " and cloudy ☁."}], FINAL_USAGE, "STOP"),
)
FINAL_TEXT = "In Paris it is 18 °C and cloudy ☁."

SIGNATURE = "CiQB0e2Kb8xqR3mFh0TQ1nVw5yB2cVb0Hn9pXk2uL4sGd7Y="
# Gemini 3 with includeThoughts: a thought summary, then a functionCall part carrying the
# thoughtSignature, then an empty text part with finishReason STOP
# (https://ai.google.dev/gemini-api/docs/thought-signatures; Part.thought,
# Part.thought_signature, FunctionCall in google/genai/types.py).
THOUGHT_AND_CALL = sse(
    chunk(
        [{"text": "**Checking the weather**\n\nThe user wants Paris.", "thought": True}],
        PROMPT_ONLY,
    ),
    chunk(
        [
            {
                "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                "thoughtSignature": SIGNATURE,
            }
        ],
        {**FINAL_USAGE, "thoughtsTokenCount": 61},
    ),
    chunk([{"text": ""}], {**FINAL_USAGE, "thoughtsTokenCount": 61}, "STOP"),
)

# Parallel calls: several functionCall parts in one turn, only the first with a
# signature (https://ai.google.dev/gemini-api/docs/thought-signatures, "parallel").
PARALLEL = sse(
    chunk(
        [
            {
                "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                "thoughtSignature": SIGNATURE,
            },
            {"functionCall": {"name": "get_weather", "args": {"city": "Tōkyō"}}},
        ],
        FINAL_USAGE,
        "STOP",
    ),
)

TEXT_SIGNATURE = "EpgCCpUCAdHtim9-text-signature"
# A text answer whose signature comes last, on an empty text part (the streaming case of
# https://ai.google.dev/gemini-api/docs/thought-signatures).
TEXT_THEN_SIGNATURE = sse(
    chunk([{"text": "Hello"}], PROMPT_ONLY),
    chunk([{"text": "", "thoughtSignature": TEXT_SIGNATURE}], FINAL_USAGE, "STOP"),
)

# finishReason other than STOP (FinishReason enum, google/genai/types.py): MAX_TOKENS ends
# a reply normally; SAFETY stops it with safetyRatings naming the category.
MAX_TOKENS = sse(
    chunk([{"text": "Once upon"}], PROMPT_ONLY),
    chunk([{"text": " a time"}], FINAL_USAGE, "MAX_TOKENS"),
)
SAFETY = sse(
    chunk([{"text": "Here is how"}], PROMPT_ONLY),
    chunk(
        [{"text": ""}],
        FINAL_USAGE,
        "SAFETY",
        safetyRatings=[
            {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}
        ],
    ),
)
# A prompt refused before any candidate: promptFeedback.blockReason, no candidates
# (PromptFeedback, BlockedReason in google/genai/types.py).
PROMPT_BLOCKED = sse(
    {
        "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
        "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12},
        "modelVersion": MODEL,
        "responseId": RESPONSE_ID,
    }
)
# An error after HTTP 200: a chunk that is a google.rpc.Status, the shape
# google/genai/_api_client.py request_streamed raises on.
MID_STREAM_ERROR = sse(
    chunk([{"text": "In Paris"}], PROMPT_ONLY),
    {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}},
)


def make(api: FakeAPI, **kw: Any) -> GeminiProvider:
    kw.setdefault("retry_backoff", 0.01)
    kw.setdefault("api_key", KEY)
    return GeminiProvider(MODEL, base_url=api.base_url, client=api.client(), **kw)


async def collect(
    provider: GeminiProvider, messages: Sequence[Message] = (), **kw: Any
) -> tuple[list[str], Message]:
    events: list[StreamEvent] = [e async for e in provider.stream_reply(messages, **kw)]
    *deltas, done = events
    assert isinstance(done, ReplyDone)
    assert all(isinstance(d, TextDelta) for d in deltas)
    return [d.text for d in deltas if isinstance(d, TextDelta)], done.message


@pytest.mark.parametrize("how", CHUNKINGS)
async def test_text_reply(api: FakeAPI, how: str) -> None:
    api.queue(Script(items=chunked(TEXT, how, separator=CRLF)))
    async with make(api) as provider:
        texts, message = await collect(provider, [Message.user("Weather in Paris?")])
    assert texts == ["In Paris it is", " 18 °C", " and cloudy ☁."]
    assert message.content == FINAL_TEXT
    assert message.metadata == {
        "finish_reason": "stop",
        "usage": FINAL_USAGE,  # cumulative: the last one
        "model": MODEL,
        "provider": "gemini",
        "id": RESPONSE_ID,
    }
    (served,) = api.served
    assert served.method == "POST"
    assert served.path == f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    assert served.headers["x-goog-api-key"] == KEY
    assert KEY not in served.path


@pytest.mark.parametrize("how", CHUNKINGS)
async def test_thought_then_a_signed_call(api: FakeAPI, how: str) -> None:
    api.queue(Script(items=chunked(THOUGHT_AND_CALL, how, separator=CRLF)))
    async with make(api) as provider:
        texts, message = await collect(provider, [Message.user("Weather in Paris?")])
    assert texts == []  # a thought summary is not reply text
    assert message.content == ""
    assert message.tool_calls == (ToolCall("call_1", "get_weather", '{"city": "Paris"}'),)
    assert message.metadata["gemini_signatures"] == {"calls": {"call_1": SIGNATURE}}
    assert "gemini_call_ids" not in message.metadata  # Gemini gave none: the ids are ours
    assert message.metadata["finish_reason"] == "stop"
    assert "blocked" not in message.metadata


@pytest.mark.parametrize("how", CHUNKINGS)
async def test_parallel_calls(api: FakeAPI, how: str) -> None:
    api.queue(Script(items=chunked(PARALLEL, how, separator=CRLF)))
    async with make(api) as provider:
        _, message = await collect(provider, [Message.user("Paris and Tokyo?")])
    assert message.tool_calls == (
        ToolCall("call_1", "get_weather", '{"city": "Paris"}'),
        ToolCall("call_2", "get_weather", '{"city": "Tōkyō"}'),
    )
    assert message.metadata["gemini_signatures"] == {"calls": {"call_1": SIGNATURE}}
    assert message.metadata["usage"] == FINAL_USAGE


async def test_a_signature_on_the_last_empty_part_belongs_to_the_text(api: FakeAPI) -> None:
    api.queue(Script(items=chunked(TEXT_THEN_SIGNATURE, "events", separator=CRLF)))
    async with make(api) as provider:
        _, message = await collect(provider, [Message.user("hi")])
    assert message.content == "Hello"
    assert message.metadata["gemini_signatures"] == {"text": TEXT_SIGNATURE}
    _, contents = to_gemini_contents([Message.user("hi"), message], None)
    assert contents[1] == {
        "role": "model",
        "parts": [{"text": "Hello", "thoughtSignature": TEXT_SIGNATURE}],
    }


async def test_max_tokens_is_a_reply_cut_at_its_length(api: FakeAPI) -> None:
    api.queue(Script(items=chunked(MAX_TOKENS, "events", separator=CRLF)))
    async with make(api) as provider:
        _, message = await collect(provider, [Message.user("A story")])
    assert message.content == "Once upon a time"
    assert message.metadata["finish_reason"] == "length"
    assert "blocked" not in message.metadata


@pytest.mark.parametrize("how", ["events", "bytes"])
async def test_a_safety_stop_is_a_marked_reply_with_the_text_so_far(api: FakeAPI, how: str) -> None:
    api.queue(Script(items=chunked(SAFETY, how, separator=CRLF)))
    async with make(api) as provider:
        texts, message = await collect(provider, [Message.user("...")])
    assert texts == ["Here is how"]
    assert message.content == "Here is how"
    assert message.metadata["blocked"] is True
    assert message.metadata["finish_reason"] == "safety"


async def test_a_blocked_prompt_is_a_marked_empty_reply(api: FakeAPI) -> None:
    api.queue(Script(items=[PROMPT_BLOCKED]))
    async with make(api) as provider:
        texts, message = await collect(provider, [Message.user("...")])
    assert texts == []
    assert message.content == ""
    assert message.metadata["blocked"] is True
    assert message.metadata["finish_reason"] == "prohibited_content"
    assert message.metadata["usage"] == {"promptTokenCount": 12, "totalTokenCount": 12}


@pytest.mark.parametrize("how", ["events", "bytes"])
async def test_error_chunk_mid_stream(api: FakeAPI, how: str) -> None:
    api.queue(Script(items=chunked(MID_STREAM_ERROR, how, separator=CRLF)))
    async with make(api) as provider:
        reply = provider.stream_reply([Message.user("hi")])
        assert await anext(reply) == TextDelta("In Paris")
        with pytest.raises(ProviderStreamError) as info:
            await anext(reply)
    assert str(info.value) == "gemini: error in stream: The model is overloaded. (UNAVAILABLE)"


async def test_a_truncated_stream_is_a_stream_error(api: FakeAPI) -> None:
    cut = TEXT[: TEXT.rindex(b"data: ")]  # the chunk with finishReason never came
    api.queue(Script(items=chunked(cut, "events", separator=CRLF)))
    async with make(api) as provider:
        with pytest.raises(ProviderStreamError, match="without a finishReason"):
            await collect(provider, [Message.user("hi")])


async def test_stopping_mid_stream_closes_the_connection(api: FakeAPI) -> None:
    never = asyncio.Event()
    first, *rest = chunked(TEXT, "events", separator=CRLF)
    api.queue(Script(items=[first, never, *rest]))
    async with make(api) as provider:
        reply = provider.stream_reply([Message.user("hi")])
        assert await anext(reply) == TextDelta("In Paris it is")
        task = asyncio.ensure_future(anext(reply))
        await asyncio.sleep(0.05)  # let it block on the socket read
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(api.served[0].closed.wait(), timeout=2)
        assert not api.served[0].finished.is_set()


def status_body(code: int, status: str, message: str, details: list[Any] | None = None) -> bytes:
    """A google.rpc.Status error body (google/genai/errors.py APIError;
    https://ai.google.dev/gemini-api/docs/troubleshooting#error-codes)."""
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details is not None:
        error["details"] = details
    return json.dumps({"error": error}).encode()


JSON = {"content-type": "application/json; charset=UTF-8"}


@pytest.mark.parametrize(
    ("status", "rpc_status", "error_type"),
    [
        (400, "INVALID_ARGUMENT", ProviderStatusError),
        (401, "UNAUTHENTICATED", ProviderAuthError),
        (403, "PERMISSION_DENIED", ProviderAuthError),
        (500, "INTERNAL", ProviderStatusError),
    ],
)
async def test_error_statuses(
    api: FakeAPI, status: int, rpc_status: str, error_type: type[ProviderStatusError]
) -> None:
    body = status_body(status, rpc_status, "Request contains an invalid argument.")
    api.queue(*(Script(status=status, headers=JSON, items=[body]) for _ in range(3)))
    async with make(api) as provider:
        with pytest.raises(error_type) as info:
            await collect(provider, [Message.user("hi")])
    assert type(info.value) is error_type
    assert info.value.status_code == status
    assert "Request contains an invalid argument." in str(info.value)
    assert KEY not in str(info.value)
    assert len(api.served) == (3 if status == 500 else 1)


def quota_details(quota_id: str) -> list[dict[str, Any]]:
    # The details of a 429 RESOURCE_EXHAUSTED (https://ai.google.dev/gemini-api/docs/rate-limits).
    return [
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [
                {
                    "quotaMetric": "generativelanguage.googleapis.com/generate_requests",
                    "quotaId": quota_id,
                    "quotaDimensions": {"location": "global", "model": MODEL},
                    "quotaValue": "10",
                }
            ],
        },
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0s"},
    ]


async def test_a_per_minute_limit_is_retried(api: FakeAPI) -> None:
    details = quota_details("GenerateRequestsPerMinutePerProjectPerModel-FreeTier")
    body = status_body(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota.", details)
    api.queue(Script(status=429, headers=JSON, items=[body]), Script(items=[TEXT]))
    async with make(api) as provider:
        _, message = await collect(provider, [Message.user("hi")])
    assert message.content == FINAL_TEXT
    assert len(api.served) == 2


async def test_a_spent_daily_quota_is_not_retried(api: FakeAPI) -> None:
    details = quota_details("GenerateRequestsPerDayPerProjectPerModel-FreeTier")
    body = status_body(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota.", details)
    api.queue(Script(status=429, headers=JSON, items=[body]), Script(items=[TEXT]))
    async with make(api) as provider:
        with pytest.raises(RateLimited, match="You exceeded your current quota"):
            await collect(provider, [Message.user("hi")])
    assert len(api.served) == 1


async def test_depleted_credits_are_not_retried(api: FakeAPI) -> None:
    # https://discuss.ai.google.dev/t/api-update-depleted-prepay-credits-now-return-http-402-
    # instead-of-429/183654
    message = "Your prepayment credits are depleted."
    api.queue(
        Script(status=402, headers=JSON, items=[status_body(402, "RESOURCE_EXHAUSTED", message)])
    )
    async with make(api) as provider:
        with pytest.raises(ProviderStatusError, match=message) as info:
            await collect(provider, [Message.user("hi")])
    assert info.value.status_code == 402
    assert len(api.served) == 1


WEATHER_CALL = ToolCall("call_1", "get_weather", '{"city": "Paris"}')


def two_turns() -> list[Message]:
    return [
        Message.user("What's the weather in Paris?"),
        Message.assistant(
            "Let me check.",
            tool_calls=[WEATHER_CALL],
            gemini_signatures={"calls": {"call_1": SIGNATURE}},
        ),
        Message.tool('{"temp_c": 18, "sky": "cloudy"}', tool_call_id="call_1"),
        Message.assistant("18 °C and cloudy."),
        Message.user("And tomorrow?"),
    ]


async def test_the_request_for_a_two_turn_conversation_with_a_tool_call(api: FakeAPI) -> None:
    api.queue(Script(items=[TEXT]))
    tools = [{"functionDeclarations": [{"name": "get_weather", "description": "Weather"}]}]
    params = {"tools": tools, "generationConfig": {"maxOutputTokens": 500}}
    async with make(api, params=params) as provider:
        await collect(provider, two_turns(), system="Be brief.")
    # Request shape: https://ai.google.dev/api/generate-content#request-body; Content, Part,
    # FunctionCall, FunctionResponse in google/genai/types.py (camelCase on the wire).
    assert api.served[0].json() == {
        "tools": tools,
        "generationConfig": {"maxOutputTokens": 500},
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "What's the weather in Paris?"}]},
            {
                "role": "model",
                "parts": [
                    {"text": "Let me check."},
                    {
                        "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                        "thoughtSignature": SIGNATURE,
                    },
                ],
            },
            {
                "role": "user",
                "parts": [
                    {
                        "functionResponse": {
                            "name": "get_weather",
                            "response": {"temp_c": 18, "sky": "cloudy"},
                        }
                    }
                ],
            },
            {"role": "model", "parts": [{"text": "18 °C and cloudy."}]},
            {"role": "user", "parts": [{"text": "And tomorrow?"}]},
        ],
    }


async def test_a_reply_round_trips_into_the_next_request(api: FakeAPI) -> None:
    api.queue(Script(items=[PARALLEL]), Script(items=[TEXT]))
    async with make(api) as provider:
        question = Message.user("Paris and Tokyo?")
        _, calls = await collect(provider, [question])
        results = [
            Message.tool("18 °C", tool_call_id="call_1"),
            Message.tool("25 °C", tool_call_id="call_2"),
        ]
        await collect(provider, [question, calls, *results])
    assert api.served[1].json()["contents"][1:] == [
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                    "thoughtSignature": SIGNATURE,
                },
                {"functionCall": {"name": "get_weather", "args": {"city": "Tōkyō"}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"output": "18 °C"}}},
                {"functionResponse": {"name": "get_weather", "response": {"output": "25 °C"}}},
            ],
        },
    ]


async def test_the_environment_and_model_paths(
    monkeypatch: pytest.MonkeyPatch, api: FakeAPI
) -> None:
    monkeypatch.setenv("GOOGLE_API_KEY", "google-key")
    api.queue(*(Script(items=[TEXT]) for _ in range(3)))
    async with GeminiProvider(
        "tunedModels/mine", base_url=api.base_url + "/", client=api.client()
    ) as p:
        await collect(p, [Message.user("hi")])
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-key")  # wins over GOOGLE_API_KEY
    async with GeminiProvider("models/gemini-pro", base_url=api.base_url, client=api.client()) as p:
        await collect(p, [Message.user("hi")])
    async with GeminiProvider("m", api_key="", base_url=api.base_url, client=api.client()) as p:
        await collect(p, [Message.user("hi")])
    first, second, third = api.served
    assert first.path == "/v1beta/tunedModels/mine:streamGenerateContent?alt=sse"
    assert first.headers["x-goog-api-key"] == "google-key"
    assert second.path == "/v1beta/models/gemini-pro:streamGenerateContent?alt=sse"
    assert second.headers["x-goog-api-key"] == "gemini-key"
    assert "x-goog-api-key" not in third.headers
    assert GeminiProvider("m").base_url == "https://generativelanguage.googleapis.com"


# -- the sans-IO parts ----------------------------------------------------------


def parse(*chunks: dict[str, Any]) -> tuple[list[str], Message]:
    parser = GeminiChunkParser()
    texts = [parser.feed(e) for e in SSEDecoder().feed(sse(*chunks))]
    assert parser.done
    return [t for t in texts if t], parser.message()


def test_ids_given_by_gemini_are_kept_and_sent_back() -> None:
    _, message = parse(
        chunk(
            [
                {"functionCall": {"id": "fc-7d1", "name": "a", "args": {}}},
                {"functionCall": {"name": "b"}},
            ],
            FINAL_USAGE,
            "STOP",
        )
    )
    assert message.tool_calls == (ToolCall("fc-7d1", "a", "{}"), ToolCall("call_2", "b", "{}"))
    assert message.metadata["gemini_call_ids"] == ["fc-7d1"]
    history = [
        message,
        Message.tool("[1, 2]", tool_call_id="fc-7d1"),
        Message.tool("not json", tool_call_id="call_2"),
    ]
    _, contents = to_gemini_contents(history, None)
    assert contents == [
        {
            "role": "model",
            "parts": [
                {"functionCall": {"name": "a", "args": {}, "id": "fc-7d1"}},
                {"functionCall": {"name": "b", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {
                    "functionResponse": {
                        "name": "a",
                        "response": {"output": "[1, 2]"},
                        "id": "fc-7d1",
                    }
                },
                {"functionResponse": {"name": "b", "response": {"output": "not json"}}},
            ],
        },
    ]


@pytest.mark.parametrize(
    ("reason", "finish_reason", "blocked"),
    [
        ("STOP", "stop", False),
        ("MAX_TOKENS", "length", False),
        ("SAFETY", "safety", True),
        ("RECITATION", "recitation", True),
        ("PROHIBITED_CONTENT", "prohibited_content", True),
        ("BLOCKLIST", "blocklist", True),
        ("SPII", "spii", True),
        ("OTHER", "other", True),
        ("MALFORMED_FUNCTION_CALL", "malformed_function_call", True),
        ("SOME_FUTURE_REASON", "some_future_reason", True),
    ],
)
def test_finish_reasons(reason: str, finish_reason: str, blocked: bool) -> None:
    _, message = parse(chunk([{"text": "x"}], FINAL_USAGE, reason, finishMessage="Why."))
    assert message.metadata["finish_reason"] == finish_reason
    assert message.metadata.get("blocked", False) is blocked
    assert message.metadata["finish_message"] == "Why."
    assert message.content == "x"


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ("not json", "malformed"),
        ("[1]", "not an object"),
        ('{"error": "plain"}', "error in stream: plain"),
        ('{"candidates": [{"content": {"parts": [{"functionCall": {}}]}}]}', "without a name"),
    ],
)
def test_parser_errors(data: str, match: str) -> None:
    parser = GeminiChunkParser()
    with pytest.raises(ProviderStreamError, match=match):
        for event in SSEDecoder().feed(f"data: {data}\n\n".encode()):
            parser.feed(event)


def test_other_candidates_and_parts_are_ignored() -> None:
    texts, message = parse(
        {"candidates": None},
        {
            "candidates": [
                {"index": 1, "content": {"parts": [{"text": "second candidate"}]}},
                {"index": 0, "content": {"parts": [{"executableCode": {"code": "1+1"}}, "junk"]}},
            ]
        },
        {"candidates": [{"content": {"parts": [{"text": "ok"}]}, "finishReason": "STOP"}]},
    )
    assert texts == ["ok"]
    assert message.metadata["usage"] is None


def test_history_conversion() -> None:
    history = [
        Message.tool("orphan", tool_call_id="gone"),  # its call is not in the window: dropped
        Message.system("Answer in French."),
        Message.user("first"),
        Message.user("second"),  # merged with first
        Message.assistant(""),  # empty: dropped
        Message.assistant(tool_calls=[ToolCall("c1", "f", "not json")]),
        Message.user("and also"),
        Message.tool("42", tool_call_id="c1"),  # function responses come first in the turn
    ]
    instruction, contents = to_gemini_contents(history, "Be brief.")
    assert instruction == {"parts": [{"text": "Be brief.\n\nAnswer in French."}]}
    assert contents == [
        {"role": "user", "parts": [{"text": "first"}, {"text": "second"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "f", "response": {"output": "42"}}},
                {"text": "and also"},
            ],
        },
    ]
    assert to_gemini_contents([], None) == (None, [])


def test_a_signature_alone_on_a_tool_call_turn_is_sent_after_the_calls() -> None:
    _, message = parse(
        chunk([{"functionCall": {"name": "f", "args": {"a": 1}}}], PROMPT_ONLY),
        chunk([{"text": "", "thoughtSignature": TEXT_SIGNATURE}], FINAL_USAGE, "STOP"),
    )
    assert message.metadata["gemini_signatures"] == {"text": TEXT_SIGNATURE}
    _, contents = to_gemini_contents([message], None)
    assert contents == [
        {
            "role": "model",
            "parts": [
                {"functionCall": {"name": "f", "args": {"a": 1}}},
                {"text": "", "thoughtSignature": TEXT_SIGNATURE},
            ],
        }
    ]


def test_a_block_reason_message_and_unusable_metadata() -> None:
    _, message = parse(
        {"promptFeedback": {"blockReason": "OTHER", "blockReasonMessage": "Not allowed."}}
    )
    assert message.metadata["finish_message"] == "Not allowed."
    assert message.metadata["finish_reason"] == "other"
    parser = GeminiChunkParser()
    for event in SSEDecoder().feed(b'data: {"usageMetadata": {"n": NaN}}\n\n'):
        parser.feed(event)
    with pytest.raises(ProviderStreamError, match="unusable reply"):
        parser.message()


def test_stored_metadata_of_the_wrong_shape_is_ignored() -> None:
    odd = Message.assistant(
        "hi",
        tool_calls=[ToolCall("c1", "f", "{}")],
        gemini_signatures={"text": 5, "calls": {"c1": 7}},
        gemini_call_ids=[1, "c1"],
    )
    worse = Message.assistant("there", gemini_signatures="junk", gemini_call_ids="junk")
    _, contents = to_gemini_contents([odd, worse], None)
    assert contents == [
        {
            "role": "model",
            "parts": [
                {"text": "hi"},
                {"functionCall": {"name": "f", "args": {}, "id": "c1"}},
                {"text": "there"},
            ],
        }
    ]
