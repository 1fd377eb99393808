"""Compaction of stale tool output: in what is sent, never in what is stored."""

from __future__ import annotations

import json
from typing import Any

import pytest

from promptkit_async import (
    MemoryStore,
    Message,
    ScriptedProvider,
    Session,
    SessionSettings,
    ToolCall,
    tool,
)
from promptkit_async._compact import compact_tool_output
from promptkit_async.providers import AnthropicProvider, OpenAIProvider

from ._fakeapi import FakeAPI, Script, anthropic_sse, sse

BIG = "x" * 5000  # well over the default threshold (1024 bytes)
SMALL = '{"ok": true}'


def tool_turn(n: int, output: str) -> list[Message]:
    """One turn of a tool loop: question, call, result, answer."""
    call = ToolCall(f"call_{n}", "fetch", json.dumps({"page": n}))
    return [
        Message.user(f"question {n}"),
        Message.assistant("", tool_calls=[call]),
        Message.tool(output, tool_call_id=f"call_{n}"),
        Message.assistant(f"answer {n}"),
    ]


def test_off_by_default_sends_every_result_whole() -> None:
    assert SessionSettings().keep_tool_turns is None
    history = [*tool_turn(1, BIG), *tool_turn(2, BIG)]
    assert compact_tool_output(history, None) == history


def test_only_large_results_of_older_turns_are_replaced() -> None:
    history = [*tool_turn(1, BIG), *tool_turn(2, SMALL), *tool_turn(3, BIG), *tool_turn(4, BIG)]
    out = compact_tool_output(history, 2)
    assert len(out) == len(history)
    assert [m.role for m in out] == [m.role for m in history]
    # Turn 1 (old, large): a placeholder with its size, same call id.
    assert out[2].tool_call_id == "call_1"
    assert "elided" in out[2].text and "5,000 bytes" in out[2].text
    # Turn 2 (old, small) and turns 3-4 (kept) are untouched.
    assert out[6] == history[6]
    assert out[10] == history[10] and out[14] == history[14]
    # Everything but the one replaced result is the very same object.
    assert all(a is b for i, (a, b) in enumerate(zip(out, history, strict=True)) if i != 2)


def test_the_turn_in_progress_is_always_kept() -> None:
    history = [*tool_turn(1, BIG), Message.user("next")]
    out = compact_tool_output(history, 1)
    assert "elided" in out[2].text  # turn 1 is older than the newest turn
    assert compact_tool_output(history[:3], 1) == history[:3]  # turn 1 is the newest


def test_the_placeholder_keeps_what_pairs_it_with_its_call() -> None:
    failed = Message.tool(BIG, tool_call_id="call_9", is_error=True, note="kept in storage")
    history = [Message.user("q"), failed, Message.user("next")]
    (_, placeholder, _) = compact_tool_output(history, 1, threshold=100)
    assert placeholder.tool_call_id == "call_9" and placeholder.is_error is True
    assert placeholder.metadata == {}  # nothing of the original output is sent
    assert len(placeholder.text) < 200


def test_threshold_and_keep_tool_turns_are_checked() -> None:
    with pytest.raises(ValueError, match="keep_tool_turns"):
        SessionSettings(keep_tool_turns=0)
    with pytest.raises(TypeError, match="keep_tool_turns"):
        SessionSettings(keep_tool_turns="2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tool_output_threshold"):
        SessionSettings(keep_tool_turns=1, tool_output_threshold=-1)
    assert SessionSettings(keep_tool_turns=1, tool_output_threshold=0).tool_output_threshold == 0


async def _one_turn(api: FakeAPI, provider: Any, **options: Any) -> tuple[dict[str, Any], Session]:
    store = MemoryStore()
    await store.append("conv", [*tool_turn(1, BIG), *tool_turn(2, BIG)])
    async with Session(store, "conv", provider=provider, **options) as session:
        assert (await session.send("and now?")).text == "Done."
    stored = await store.load("conv")
    assert stored[2].text == BIG and stored[6].text == BIG  # storage keeps the originals
    (served,) = api.served
    body: dict[str, Any] = served.json()
    return body, session


OPENAI_REPLY = sse(
    {"id": "c1", "model": "gpt-test", "choices": [{"index": 0, "delta": {"content": "Done."}}]},
    {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    "[DONE]",
)


async def test_openai_request_sends_placeholders_in_valid_pairs(api: FakeAPI) -> None:
    api.queue(Script(items=[OPENAI_REPLY]))
    async with OpenAIProvider(
        "gpt-test", "sk-key", api.base_url + "/v1", client=api.client()
    ) as provider:
        body, _ = await _one_turn(api, provider, keep_tool_turns=2)
    messages = body["messages"]
    assert [m["role"] for m in messages] == [
        *["user", "assistant", "tool", "assistant"] * 2,
        "user",
    ]
    old, kept = messages[2], messages[6]
    assert old["tool_call_id"] == "call_1" and messages[1]["tool_calls"][0]["id"] == "call_1"
    assert "elided" in old["content"] and "5,000 bytes" in old["content"]
    assert kept == {"role": "tool", "content": BIG, "tool_call_id": "call_2"}


ANTHROPIC_REPLY = anthropic_sse(
    {"type": "message_start", "message": {"id": "msg_1", "model": "claude-test", "usage": {}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Done."}},
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {}},
    {"type": "message_stop"},
)


async def test_anthropic_request_sends_placeholders_in_valid_pairs(api: FakeAPI) -> None:
    api.queue(Script(items=[ANTHROPIC_REPLY]))
    async with AnthropicProvider(
        "claude-test", "key", api.base_url, client=api.client()
    ) as provider:
        body, _ = await _one_turn(api, provider, keep_tool_turns=2)
    messages = body["messages"]
    # user, assistant(tool_use), user(tool_result), assistant, ... roles alternate.
    assert [m["role"] for m in messages] == ["user", "assistant"] * 4 + ["user"]
    use = messages[1]["content"][0]
    result = messages[2]["content"][0]
    assert use["type"] == "tool_use" and use["id"] == "call_1"
    assert result["type"] == "tool_result" and result["tool_use_id"] == "call_1"
    assert "elided" in json.dumps(result["content"])
    kept = messages[6]["content"][0]
    assert kept["tool_use_id"] == "call_2" and json.dumps(kept["content"]).count("x") == 5000


async def test_compacted_results_leave_room_in_a_token_budget(api: FakeAPI) -> None:
    """With max_tokens, the budget counts what is sent: old output no longer pushes
    the conversation out of the window."""
    api.queue(Script(items=[OPENAI_REPLY]), Script(items=[OPENAI_REPLY]))
    async with OpenAIProvider(
        "gpt-test", "sk-key", api.base_url + "/v1", client=api.client()
    ) as provider:
        plain, _ = await _one_turn(api, provider, max_tokens=1500)
        api.served.clear()
        compact, _ = await _one_turn(api, provider, max_tokens=1500, keep_tool_turns=1)
    # 1500 tokens hold one 5,000-byte result (~1,250 tokens), not two.
    assert len(compact["messages"]) > len(plain["messages"])
    assert compact["messages"][0]["content"] == "question 1"


async def test_a_tool_loop_sees_its_own_results_whole_and_older_ones_compacted() -> None:
    """The run in progress is the newest turn: its fresh 5 KB result is sent as is."""

    @tool
    async def fetch(page: int) -> str:
        """Fetch a page."""
        return BIG

    call = ToolCall("call_new", "fetch", '{"page": 7}')
    provider = ScriptedProvider([Message.assistant("", tool_calls=[call]), "Done."])
    store = MemoryStore()
    await store.append("conv", tool_turn(1, BIG))
    async with Session(store, "conv", provider=provider, keep_tool_turns=1) as session:
        reply = session.run("read page 7", tools=[fetch])
        assert await reply.text() == "Done."
    first, second = provider.calls
    assert "elided" in first.messages[2].text  # the older turn's result
    fresh = second.messages[-1]
    assert fresh.role == "tool" and fresh.tool_call_id == "call_new" and fresh.text == BIG
    assert "elided" in second.messages[2].text
    stored = await store.load("conv")
    assert [m.text for m in stored if m.role == "tool"] == [BIG, BIG]
