"""Shared HTTP plumbing (Retry-After, error bodies) and the Anthropic event parser edges."""

from __future__ import annotations

import email.utils
import json
from typing import Any

import httpx
import pytest

import promptkit_async.providers as providers
from promptkit_async import Message
from promptkit_async._exceptions import ProviderStatusError, ProviderStreamError
from promptkit_async.providers import OpenAIProvider, ServerSentEvent
from promptkit_async.providers._anthropic_wire import AnthropicEventParser
from promptkit_async.providers._errors import parse_retry_after

from ._fakeapi import FakeAPI, Script


def test_public_names() -> None:
    assert providers.__all__ == sorted(providers.__all__)
    for name in providers.__all__:
        obj = getattr(providers, name)
        if isinstance(obj, type):  # the top-level package may claim some names
            assert obj.__module__ in {"promptkit_async", "promptkit_async.providers"}, name


NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "5"}, 5.0),
        ({"retry-after": " 1.5 "}, 1.5),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "soon"}, None),
        ({"retry-after": email.utils.formatdate(NOW + 30, usegmt=True)}, 30.0),
        ({"retry-after": email.utils.formatdate(NOW - 30, usegmt=True)}, 0.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 -0000"}, None),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after-ms": "x", "retry-after": "9"}, 9.0),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(httpx.Headers(headers), now=NOW) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"detail": "Not Found: model"}', "Not Found: model"),
        (b'{"message": "plain message"}', "plain message"),
        (b'{"error": "ollama style"}', "ollama style"),
        (b'["not", "an", "object"]', "HTTP 404: Status"),
        (b"<html>nginx</html>", "HTTP 404: Status"),
        (b"", "HTTP 404: Status"),
    ],
)
async def test_error_body_shapes(loopback: FakeAPI, body: bytes, expected: str) -> None:
    loopback.queue(Script(status=404, items=[body]))
    async with OpenAIProvider("m", None, loopback.base_url) as provider:
        with pytest.raises(ProviderStatusError, match=expected):
            async for _ in provider.stream_reply([Message.user("hi")]):
                pass


async def test_huge_error_body_is_truncated_and_5xx_retry_after_is_honoured(
    api: FakeAPI,
) -> None:
    huge = b"x" * 200_000
    api.queue(
        Script(status=503, headers={"retry-after": "0"}),
        Script(status=500, items=[huge[:100_000], huge[100_000:]]),
    )
    async with OpenAIProvider(
        "m", None, api.base_url, client=api.client(), max_retries=1, retry_backoff=0.001
    ) as provider:
        with pytest.raises(ProviderStatusError) as info:
            async for _ in provider.stream_reply([]):
                pass
    assert info.value.status_code == 500
    assert len(info.value.body) == 64 * 1024
    assert len(api.served) == 2


# -- Anthropic parser edges ----------------------------------------------------------


def feed(parser: AnthropicEventParser, payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return parser.feed(ServerSentEvent(event="message", data=data))


def test_anthropic_parser_ignores_what_it_does_not_know() -> None:
    parser = AnthropicEventParser()
    feed(parser, {"type": "message_start", "message": {"usage": {"input_tokens": 3}}})
    start = {"type": "text", "text": "Pre"}
    assert feed(parser, {"type": "content_block_start", "index": 0, "content_block": start}) == (
        "Pre"
    )
    thinking = {"type": "thinking_delta", "thinking": "hmm"}
    assert feed(parser, {"type": "content_block_delta", "index": 0, "delta": thinking}) == ""
    assert feed(parser, {"type": "some_future_event"}) == ""
    assert feed(parser, {"type": "content_block_start", "index": 1}) == ""
    stop = {"type": "message_delta", "delta": {"stop_sequence": "END"}}
    feed(parser, stop)
    feed(parser, {"type": "message_stop"})
    assert parser.done
    assert feed(parser, {"type": "error"}) == ""  # after the terminator nothing counts
    message = parser.message()
    assert message.content == "Pre"
    assert message.metadata["stop_sequence"] == "END"
    assert message.metadata["usage"] == {"input_tokens": 3}


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ("not json", "malformed"),
        ("[]", "not an object"),
        ({"type": "error"}, "error: unknown error"),
        (
            {
                "type": "content_block_delta",
                "index": 5,
                "delta": {"type": "input_json_delta", "partial_json": "{"},
            },
            "not a tool_use",
        ),
        (
            {"type": "content_block_delta", "delta": {"type": "input_json_delta"}},
            "without index",
        ),
        (
            {"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use"}},
            "without id or name",
        ),
    ],
)
def test_anthropic_parser_errors(payload: dict[str, Any] | str, match: str) -> None:
    with pytest.raises(ProviderStreamError, match=match):
        feed(AnthropicEventParser(), payload)


async def test_a_json_reply_to_a_stream_request_is_a_stream_error(api: FakeAPI) -> None:
    body = b'{"error": {"message": "streaming is not supported"}}'
    api.queue(Script(headers={"content-type": "application/json"}, items=[body]))
    async with OpenAIProvider("m", None, api.base_url, client=api.client()) as provider:
        with pytest.raises(ProviderStreamError, match="streaming is not supported"):
            async for _ in provider.stream_reply([]):
                pass
    assert len(api.served) == 1
