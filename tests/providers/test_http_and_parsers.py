"""Shared HTTP plumbing (Retry-After, error bodies) and the Anthropic event parser edges."""

from __future__ import annotations

import email.utils
import json
from typing import Any

import httpx
import pytest

import promptkit_async.providers as providers
from promptkit_async import Message
from promptkit_async._exceptions import ProviderStatusError, ProviderStreamError, RateLimited
from promptkit_async.providers import AnthropicProvider, OpenAIProvider, ServerSentEvent
from promptkit_async.providers._anthropic_wire import AnthropicEventParser
from promptkit_async.providers._errors import (
    parse_retry_after,
    quota_exhausted,
    retryable_status,
)

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


# -- quota or credit exhausted vs rate limited ------------------------------------

# OpenAI bodies: the shapes of developers.openai.com/api/docs/guides/error-codes
# ("You exceeded your current quota" / "Rate limit reached for requests").
OPENAI_QUOTA = {
    "error": {
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "type": "insufficient_quota",
        "param": None,
        "code": "insufficient_quota",
    }
}
OPENAI_NO_CREDIT = {
    "error": {
        "message": "You have no credits remaining.",
        "type": "insufficient_quota",
        "param": None,
        "code": "credit_balance_exhausted",
    }
}
OPENAI_RATE_LIMIT = {
    "error": {
        "message": "Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 3.",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}
# Anthropic bodies: platform.claude.com/docs/en/api/errors (error types, details.error_code).
ANTHROPIC_LOW_CREDIT = {
    "type": "error",
    "error": {
        "type": "invalid_request_error",
        "message": "Your credit balance is too low to access the API. Please purchase credits.",
    },
    "request_id": "req_011quota",
}
ANTHROPIC_BILLING = {"type": "error", "error": {"type": "billing_error", "message": "Billing."}}
ANTHROPIC_SPEND_CAP = {
    "type": "error",
    "error": {
        "type": "rate_limit_error",
        "message": "You have reached your monthly spend limit.",
        "details": {"error_code": "enforced_spend_limit_reached"},
    },
}
ANTHROPIC_RATE_LIMIT = {
    "type": "error",
    "error": {"type": "rate_limit_error", "message": "Number of requests has exceeded your limit."},
}


# Gemini bodies: google.rpc.Status with QuotaFailure details (ai.google.dev/gemini-api/docs/
# rate-limits; google/genai/errors.py APIError reads error.code/message/status).
def gemini_429(quota_id: str | None) -> dict[str, Any]:
    details: list[dict[str, Any]] = [
        {"@type": "type.googleapis.com/google.rpc.Help", "links": []},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "20s"},
    ]
    if quota_id is not None:
        violation = {"quotaMetric": "generate_content_free_tier_requests", "quotaId": quota_id}
        details.insert(
            1,
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [violation]},
        )
    return {
        "error": {
            "code": 429,
            "message": "You exceeded your current quota, please check your plan and billing.",
            "status": "RESOURCE_EXHAUSTED",
            "details": details,
        }
    }


# The 402 announced at discuss.ai.google.dev/t/api-update-depleted-prepay-credits-now-
# return-http-402-instead-of-429/183654 (and the 429 it replaced).
GEMINI_DEPLETED = {
    "error": {
        "code": 402,
        "message": "Your prepayment credits are depleted. Please manage your project billing.",
        "status": "RESOURCE_EXHAUSTED",
    }
}


@pytest.mark.parametrize(
    ("status", "body", "exhausted"),
    [
        (429, OPENAI_QUOTA, True),
        (429, OPENAI_NO_CREDIT, True),
        (429, {"error": {**OPENAI_QUOTA["error"], "code": None}}, True),  # older bodies
        (429, OPENAI_RATE_LIMIT, False),
        (400, ANTHROPIC_LOW_CREDIT, True),
        (402, ANTHROPIC_BILLING, True),
        (429, ANTHROPIC_SPEND_CAP, True),
        (429, ANTHROPIC_RATE_LIMIT, False),
        (429, gemini_429("GenerateRequestsPerDayPerProjectPerModel-FreeTier"), True),
        (429, gemini_429("GenerateRequestsPerMinutePerProjectPerModel-FreeTier"), False),
        (429, gemini_429(None), False),
        (402, GEMINI_DEPLETED, True),
        (429, {"error": {**GEMINI_DEPLETED["error"], "code": 429}}, True),
        (402, "", True),
        (429, "", False),
        (429, "not json", False),
        (429, [1, 2], False),
        (429, {"error": "slow down"}, False),
        (429, {"error": {"details": ["junk", {"@type": 5}]}}, False),
        (429, {"error": {"details": [{"@type": "google.rpc.QuotaFailure"}]}}, False),
        (500, OPENAI_QUOTA, False),  # only 400/402/429 can mean it
    ],
)
def test_quota_exhausted(status: int, body: Any, exhausted: bool) -> None:
    raw = body if isinstance(body, str) else json.dumps(body)
    assert quota_exhausted(status, raw) is exhausted
    assert quota_exhausted(status, raw.encode()) is exhausted
    if status in (429, 500):
        assert retryable_status(status, raw) is not exhausted


def test_retryable_statuses() -> None:
    for status in (408, 409, 429, 500, 502, 503, 529):
        assert retryable_status(status, b"")
    for status in (400, 401, 402, 403, 404, 422):
        assert not retryable_status(status, b"")


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_an_exhausted_quota_is_raised_at_once(api: FakeAPI, provider: str) -> None:
    body = OPENAI_QUOTA if provider == "openai" else ANTHROPIC_SPEND_CAP
    headers = {"content-type": "application/json", "x-request-id": "req_q", "retry-after": "0"}
    api.queue(*(Script(status=429, headers=headers, items=[json.dumps(body).encode()]),) * 3)
    cls = OpenAIProvider if provider == "openai" else AnthropicProvider
    async with cls("m", "sk-q", api.base_url, client=api.client(), retry_backoff=0.001) as p:
        with pytest.raises(RateLimited) as info:
            async for _ in p.stream_reply([Message.user("hi")]):
                pass
    assert len(api.served) == 1
    assert info.value.request_id == "req_q"
    assert body["error"]["message"] in str(info.value)  # type: ignore[index]
    assert "not retried" in str(info.value)


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
