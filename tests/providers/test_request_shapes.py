"""The whole request each provider sends for one conversation, through a real Session.

The conversation: a system prompt, a user message with an image, the assistant's tool
call, the tool's result, then a second user message. The first three are in a
MemoryStore (so the image also goes through a stored record and back); the last is sent
with ``session.send`` or ``session.stream``, and the test checks the exact JSON body the
fake server received: the path every request of a real application takes.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

import pytest

from promptkit_async import ImagePart, MemoryStore, Message, Session, TextPart, ToolCall
from promptkit_async.providers import (
    AnthropicProvider,
    GeminiProvider,
    OllamaProvider,
    OpenAIProvider,
    OpenAIResponsesProvider,
)

from ._fakeapi import FakeAPI, Script, anthropic_sse, sse, typed_sse

if TYPE_CHECKING:
    from promptkit_async.providers import Provider

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06"
B64 = base64.b64encode(PNG).decode("ascii")
DATA_URL = f"data:image/png;base64,{B64}"

SYSTEM = "Be brief."
QUESTION = Message.user(
    [TextPart("What animal is this?"), ImagePart(data=PNG, media_type="image/png")]
)
CALL = ToolCall("call_1", "zoom", '{"factor": 2}')
ASKED = Message.assistant("Let me zoom in.", tool_calls=[CALL])
RESULT = Message.tool('{"label": "a sleeping cat"}', tool_call_id="call_1")
FOLLOW_UP = "Is it asleep?"


async def converse(api: FakeAPI, provider: Provider, *, streamed: bool) -> dict[str, Any]:
    """Run the conversation's last turn; the JSON body of the one request it made."""
    store = MemoryStore()
    await store.append("conv", [QUESTION, ASKED, RESULT])
    async with Session(store, "conv", provider=provider, system=SYSTEM) as session:
        if streamed:
            texts = [t async for t in session.stream(FOLLOW_UP)]
            assert "".join(texts) == "Yes."
        else:
            reply = await session.send(FOLLOW_UP)
            assert reply.text == "Yes."
    stored = await store.load("conv")
    assert [m.role for m in stored] == ["user", "assistant", "tool", "user", "assistant"]
    assert stored[0].content == QUESTION.content
    (served,) = api.served
    body: dict[str, Any] = served.json()
    return body


# -- OpenAI Chat Completions -----------------------------------------------------------
# Reply: chat.completion.chunk events then [DONE]; request: messages with user content
# parts (text, image_url), assistant tool_calls, tool messages with tool_call_id
# (https://platform.openai.com/docs/api-reference/chat/create,
# https://platform.openai.com/docs/api-reference/chat-streaming).
OPENAI_REPLY = sse(
    {"id": "c1", "model": "gpt-test", "choices": [{"index": 0, "delta": {"content": "Yes."}}]},
    {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    "[DONE]",
)


@pytest.mark.parametrize("streamed", [False, True], ids=["send", "stream"])
async def test_openai(api: FakeAPI, streamed: bool) -> None:
    api.queue(Script(items=[OPENAI_REPLY]))
    async with OpenAIProvider(
        "gpt-test", "sk-key", api.base_url + "/v1", client=api.client()
    ) as provider:
        body = await converse(api, provider, streamed=streamed)
    assert body == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What animal is this?"},
                    {"type": "image_url", "image_url": {"url": DATA_URL}},
                ],
            },
            {
                "role": "assistant",
                "content": "Let me zoom in.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "zoom", "arguments": '{"factor": 2}'},
                    }
                ],
            },
            {"role": "tool", "content": '{"label": "a sleeping cat"}', "tool_call_id": "call_1"},
            {"role": "user", "content": "Is it asleep?"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


# -- Anthropic Messages ------------------------------------------------------------------
# Reply: message_start, content_block_start/delta/stop, message_delta, message_stop
# (https://docs.anthropic.com/en/docs/build-with-claude/streaming); request: top-level
# system, image blocks with a base64 source, tool_use in the assistant turn, tool_result
# first in the next user turn, roles alternating (https://docs.anthropic.com/en/api/messages).
ANTHROPIC_REPLY = anthropic_sse(
    {"type": "message_start", "message": {"id": "msg_1", "model": "claude-test", "usage": {}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Yes."}},
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {}},
    {"type": "message_stop"},
)


@pytest.mark.parametrize("streamed", [False, True], ids=["send", "stream"])
async def test_anthropic(api: FakeAPI, streamed: bool) -> None:
    api.queue(Script(items=[ANTHROPIC_REPLY]))
    async with AnthropicProvider(
        "claude-test", "key", api.base_url, client=api.client()
    ) as provider:
        body = await converse(api, provider, streamed=streamed)
    assert body == {
        "model": "claude-test",
        "max_tokens": 1024,
        "system": "Be brief.",
        "stream": True,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What animal is this?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": B64},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me zoom in."},
                    {"type": "tool_use", "id": "call_1", "name": "zoom", "input": {"factor": 2}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "call_1",
                        "content": '{"label": "a sleeping cat"}',
                    },
                    {"type": "text", "text": "Is it asleep?"},
                ],
            },
        ],
    }


# -- OpenAI Responses --------------------------------------------------------------------
# Reply: typed events ending in response.completed
# (https://platform.openai.com/docs/api-reference/responses-streaming); request: input
# items (message with input_text / input_image, function_call, function_call_output),
# instructions, store: false with encrypted reasoning asked for
# (https://platform.openai.com/docs/api-reference/responses/create).
RESPONSES_REPLY = typed_sse(
    {"type": "response.created", "response": {"id": "resp_1", "model": "gpt-test"}},
    {"type": "response.output_text.delta", "item_id": "msg_1", "delta": "Yes."},
    {"type": "response.completed", "response": {"id": "resp_1", "model": "gpt-test"}},
)


@pytest.mark.parametrize("streamed", [False, True], ids=["send", "stream"])
async def test_responses(api: FakeAPI, streamed: bool) -> None:
    api.queue(Script(items=[RESPONSES_REPLY]))
    async with OpenAIResponsesProvider(
        "gpt-test", api_key="sk-key", base_url=api.base_url + "/v1", client=api.client()
    ) as provider:
        body = await converse(api, provider, streamed=streamed)
    assert body == {
        "model": "gpt-test",
        "instructions": "Be brief.",
        "stream": True,
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "input": [
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What animal is this?"},
                    {"type": "input_image", "image_url": DATA_URL},
                ],
            },
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Let me zoom in.", "annotations": []}],
            },
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "zoom",
                "arguments": '{"factor": 2}',
            },
            {
                "type": "function_call_output",
                "call_id": "call_1",
                "output": '{"label": "a sleeping cat"}',
            },
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Is it asleep?"}],
            },
        ],
    }


# -- Gemini --------------------------------------------------------------------------------
# Reply: GenerateContentResponse chunks as SSE, the last with finishReason
# (https://ai.google.dev/api/generate-content#method:-models.streamgeneratecontent);
# request: systemInstruction, contents of user / model turns with text, inlineData,
# functionCall and functionResponse parts, the function response and the next text merged
# into one user turn, responses first (https://ai.google.dev/api/generate-content#request-body,
# https://ai.google.dev/api/caching#Content, https://ai.google.dev/gemini-api/docs/function-calling).
GEMINI_REPLY = (
    b"data: "
    + json.dumps(
        {
            "candidates": [
                {"content": {"parts": [{"text": "Yes."}], "role": "model"}, "finishReason": "STOP"}
            ],
            "modelVersion": "gemini-test",
            "responseId": "r1",
        }
    ).encode()
    + b"\r\n\r\n"
)


@pytest.mark.parametrize("streamed", [False, True], ids=["send", "stream"])
async def test_gemini(api: FakeAPI, streamed: bool) -> None:
    api.queue(Script(items=[GEMINI_REPLY]))
    async with GeminiProvider(
        "gemini-test", api_key="key", base_url=api.base_url, client=api.client()
    ) as provider:
        body = await converse(api, provider, streamed=streamed)
    assert api.served[0].path == "/v1beta/models/gemini-test:streamGenerateContent?alt=sse"
    assert body == {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "What animal is this?"},
                    {"inlineData": {"mimeType": "image/png", "data": B64}},
                ],
            },
            {
                "role": "model",
                "parts": [
                    {"text": "Let me zoom in."},
                    {"functionCall": {"name": "zoom", "args": {"factor": 2}}},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {
                        "functionResponse": {
                            "name": "zoom",
                            "response": {"label": "a sleeping cat"},
                        }
                    },
                    {"text": "Is it asleep?"},
                ],
            },
        ],
    }


# -- Ollama ----------------------------------------------------------------------------------
# Reply: NDJSON lines, the last with done: true; request: messages with images (raw
# base64) beside content, tool_calls with arguments as an object, tool messages with
# tool_name (https://github.com/ollama/ollama/blob/main/docs/api.md#generate-a-chat-completion).
OLLAMA_REPLY = b"".join(
    json.dumps(line).encode() + b"\n"
    for line in (
        {"model": "llava", "message": {"role": "assistant", "content": "Yes."}, "done": False},
        {
            "model": "llava",
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 40,
            "eval_count": 2,
        },
    )
)


@pytest.mark.parametrize("streamed", [False, True], ids=["send", "stream"])
async def test_ollama(api: FakeAPI, streamed: bool) -> None:
    api.queue(Script(headers={"content-type": "application/x-ndjson"}, items=[OLLAMA_REPLY]))
    async with OllamaProvider("llava", base_url=api.base_url, client=api.client()) as provider:
        body = await converse(api, provider, streamed=streamed)
    assert body == {
        "model": "llava",
        "stream": True,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What animal is this?", "images": [B64]},
            {
                "role": "assistant",
                "content": "Let me zoom in.",
                "tool_calls": [
                    {"id": "call_1", "function": {"name": "zoom", "arguments": {"factor": 2}}}
                ],
            },
            {
                "role": "tool",
                "content": '{"label": "a sleeping cat"}',
                "tool_name": "zoom",
                "tool_call_id": "call_1",
            },
            {"role": "user", "content": "Is it asleep?"},
        ],
    }
