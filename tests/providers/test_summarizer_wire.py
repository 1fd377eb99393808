"""LLMSummarizer over the real wire formats: the request it sends, and where its summary goes.

A session with ``max_messages=2`` talks to a fake API (loopback HTTP or a mock
transport) that answers both its turns and its summaries. After two turns,
two messages have left the window: the background asks the same API for a
summary, and the third turn's request carries it after the system prompt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from promptkit_async import (
    DEFAULT_SUMMARY_PROMPT,
    LLMSummarizer,
    MemoryStore,
    Message,
    Session,
    flush_summaries,
)
from promptkit_async.providers import AnthropicProvider, OpenAIProvider

from ._fakeapi import FakeAPI, Script, anthropic_sse, sse

if TYPE_CHECKING:
    from promptkit_async.providers import Provider

SYSTEM = "Be brief."
SUMMARY = "The user is planning a trip."
SUMMARY2 = "The user is planning a trip to Lisbon and asked when to go."
PROMPT = DEFAULT_SUMMARY_PROMPT.replace("{max_words}", "75")  # 3/4 of max_tokens=100
FOLDED = (
    "Summary so far:\n(none)\n\nMessages that followed:\nuser: I plan a trip.\nassistant: Where to?"
)


def openai_reply(text: str) -> Script:
    return Script(
        items=[
            sse(
                {"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"content": text}}]},
                {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                "[DONE]",
            )
        ]
    )


def anthropic_reply(text: str) -> Script:
    return Script(
        items=[
            anthropic_sse(
                {"type": "message_start", "message": {"id": "m1", "model": "c", "usage": {}}},
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": text},
                },
                {"type": "content_block_stop", "index": 0},
                {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {}},
                {"type": "message_stop"},
            )
        ]
    )


async def converse(api: FakeAPI, provider: Provider, reply: Any) -> list[dict[str, Any]]:
    """Three turns, a summary after the second and another after the third; every body."""
    api.queue(
        reply("Where to?"),
        reply("Lisbon is lovely."),
        reply(SUMMARY),  # the background summary of the first two messages
        reply("In May."),
        reply(SUMMARY2),  # and of the next two, extending it
    )
    store = MemoryStore()
    summarizer = LLMSummarizer(provider, max_tokens=100)
    options: dict[str, Any] = {"max_messages": 2, "summarizer": summarizer, "system": SYSTEM}
    for question in ("I plan a trip.", "To Lisbon.", "When should I go?"):
        async with Session(store, "trip", provider=provider, **options) as session:
            await session.send(question)
        assert await flush_summaries(store, timeout=10)
    summary = await store.summary("trip")
    assert summary is not None and summary.text == SUMMARY2 and summary.upto == "3"
    assert summary.covered == 4
    bodies = [served.json() for served in api.served]
    assert len(bodies) == 5
    return bodies


async def test_openai_summary_request_and_its_place_in_the_next_turn(api: FakeAPI) -> None:
    async with OpenAIProvider("gpt-test", "sk", api.base_url + "/v1", client=api.client()) as p:
        first, second, summarizing, third, again = await converse(api, p, openai_reply)
    assert summarizing == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": PROMPT},
            {"role": "user", "content": FOLDED},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    # Before the summary: the window alone. After: the summary after the system
    # prompt, in the system message, then only the messages after it.
    assert [m["role"] for m in second["messages"]] == ["system", "user", "assistant", "user"]
    assert third["messages"][0] == {
        "role": "system",
        "content": f"{SYSTEM}\n\nSummary of the earlier conversation (older messages are "
        f"not repeated below):\n{SUMMARY}",
    }
    assert [m["content"] for m in third["messages"][1:]] == [
        "To Lisbon.",
        "Lisbon is lovely.",
        "When should I go?",
    ]
    assert first["messages"][0] == {"role": "system", "content": SYSTEM}
    assert again["messages"][1]["content"] == (
        f"Summary so far:\n{SUMMARY}\n\nMessages that followed:\n"
        "user: To Lisbon.\nassistant: Lisbon is lovely."
    )


async def test_anthropic_summary_request_and_its_place_in_the_next_turn(api: FakeAPI) -> None:
    async with AnthropicProvider("claude-test", "key", api.base_url, client=api.client()) as p:
        _, _, summarizing, third, _ = await converse(api, p, anthropic_reply)
    assert summarizing == {
        "model": "claude-test",
        "max_tokens": 1024,
        "system": PROMPT,
        "stream": True,
        "messages": [{"role": "user", "content": [{"type": "text", "text": FOLDED}]}],
    }
    assert third["system"] == (
        f"{SYSTEM}\n\nSummary of the earlier conversation (older messages are not repeated "
        f"below):\n{SUMMARY}"
    )
    assert [m["role"] for m in third["messages"]] == ["user", "assistant", "user"]
    assert third["messages"][0]["content"] == [{"type": "text", "text": "To Lisbon."}]


async def test_a_long_summary_is_cut_at_the_cap_and_its_stream_closed(api: FakeAPI) -> None:
    api.queue(openai_reply("word " * 500))
    async with OpenAIProvider("gpt-test", "sk", api.base_url + "/v1", client=api.client()) as p:
        text = await LLMSummarizer(p, max_tokens=16).summarize(None, [Message.user("hi")])
    assert len(text) <= 16 * 4 and text.startswith("word word")


async def test_bad_arguments() -> None:
    async with OpenAIProvider("m", "sk") as p:
        with pytest.raises(ValueError, match="max_tokens"):
            LLMSummarizer(p, max_tokens=0)
        with pytest.raises(ValueError, match="prompt"):
            LLMSummarizer(p, prompt="  ")
