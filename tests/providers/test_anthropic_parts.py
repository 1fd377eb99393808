"""Content parts and extended thinking on the Messages API wire, checked on the exact
request JSON the server received.

Shapes: https://docs.anthropic.com/en/api/messages (``image`` / ``document`` blocks with a
``base64`` or ``url`` source, ``tool_result`` with ``is_error``) and
https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking (``thinking`` blocks
streamed as ``thinking_delta`` + ``signature_delta``, ``redacted_thinking``; thinking sent
back unchanged ahead of the ``tool_use`` it led to).
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import pytest

from promptkit_async import (
    AudioPart,
    FilePart,
    ImagePart,
    InvalidMessage,
    MemoryStore,
    Message,
    Session,
    TextPart,
    ThinkingPart,
    ToolCall,
)
from promptkit_async.providers import AnthropicProvider, ReplyDone, TextDelta
from promptkit_async.providers._anthropic_wire import to_anthropic_messages

from ._fakeapi import FakeAPI, Script, anthropic_sse

if TYPE_CHECKING:
    from collections.abc import Sequence

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"
SIGNATURE = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds+Tl0AS/ObQr9yR3Fg=="
REDACTED = "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qyC"


def start(message_id: str = "msg_1") -> dict[str, Any]:
    return {
        "type": "message_start",
        "message": {"id": message_id, "model": "claude-test", "usage": {"input_tokens": 9}},
    }


def block_start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def delta(index: int, **fields: Any) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": fields}


def stop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


def finish(stop_reason: str) -> list[dict[str, Any]]:
    return [
        {"type": "message_delta", "delta": {"stop_reason": stop_reason}, "usage": {}},
        {"type": "message_stop"},
    ]


def reply_text(text: str) -> Script:
    return Script(
        items=[
            anthropic_sse(
                start("msg_2"),
                block_start(0, {"type": "text", "text": ""}),
                delta(0, type="text_delta", text=text),
                stop(0),
                *finish("end_turn"),
            )
        ]
    )


def make(api: FakeAPI) -> AnthropicProvider:
    return AnthropicProvider("claude-test", "key", api.base_url, client=api.client())


async def sent_messages(api: FakeAPI, messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The ``messages`` of the one request the fake API received for ``messages``."""
    api.queue(reply_text("ok"))
    async with make(api) as provider:
        events = [e async for e in provider.stream_reply(messages)]
    assert isinstance(events[-1], ReplyDone) and events[-1].message.content == "ok"
    (served,) = api.served
    wire: list[dict[str, Any]] = served.json()["messages"]
    return wire


# -- user media ----------------------------------------------------------------------


async def test_images_by_url_and_inline(api: FakeAPI) -> None:
    user = Message.user(
        [
            ImagePart(url="https://example.com/cat.jpg"),
            ImagePart(data=PNG, media_type="image/png"),
            TextPart("Which is the cat?"),
        ]
    )
    wire = await sent_messages(api, [user])
    encoded = base64.b64encode(PNG).decode("ascii")
    assert wire == [
        {
            "role": "user",
            "content": [
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": encoded},
                },
                {"type": "text", "text": "Which is the cat?"},
            ],
        }
    ]
    assert base64.b64decode(wire[0]["content"][1]["source"]["data"], validate=True) == PNG


async def test_pdf_documents_inline_and_by_url(api: FakeAPI) -> None:
    user = Message.user(
        [
            FilePart(data=PDF, media_type="application/pdf", filename="report.pdf"),
            FilePart(url="https://example.com/paper.pdf"),
            TextPart("Compare them."),
        ]
    )
    wire = await sent_messages(api, [user])
    assert wire[0]["content"] == [
        {
            "type": "document",
            "source": {
                "type": "base64",
                "media_type": "application/pdf",
                "data": base64.b64encode(PDF).decode("ascii"),
            },
            "title": "report.pdf",
        },
        {"type": "document", "source": {"type": "url", "url": "https://example.com/paper.pdf"}},
        {"type": "text", "text": "Compare them."},
    ]


async def test_audio_is_refused_before_sending(api: FakeAPI) -> None:
    user = Message.user([AudioPart(data=b"RIFF....WAVE", media_type="audio/wav")])
    async with make(api) as provider:
        with pytest.raises(InvalidMessage, match=r"anthropic .*AudioPart"):
            async for _ in provider.stream_reply([user]):
                pass
    assert api.served == []


def test_media_on_an_assistant_message_is_refused() -> None:
    history = [Message.user("hi"), Message.assistant([ImagePart(url="https://example.com/a")])]
    with pytest.raises(InvalidMessage, match=r"anthropic .*ImagePart .*assistant"):
        to_anthropic_messages(history, None)


def test_tool_results_carry_parts_and_is_error() -> None:
    call = ToolCall("t1", "screenshot", "{}")
    history = [
        Message.user("Take a screenshot"),
        Message.assistant(tool_calls=[call, ToolCall("t2", "ping", "{}")]),
        Message.tool(
            [TextPart("Here:"), ImagePart(data=PNG, media_type="image/png")], tool_call_id="t1"
        ),
        Message.tool("host unreachable", tool_call_id="t2", is_error=True),
    ]
    _, wire = to_anthropic_messages(history, None)
    assert wire[2] == {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "t1",
                "content": [
                    {"type": "text", "text": "Here:"},
                    {
                        "type": "image",
                        "source": {
                            "type": "base64",
                            "media_type": "image/png",
                            "data": base64.b64encode(PNG).decode("ascii"),
                        },
                    },
                ],
            },
            {
                "type": "tool_result",
                "tool_use_id": "t2",
                "content": "host unreachable",
                "is_error": True,
            },
        ],
    }


# -- thinking ----------------------------------------------------------------------


def thinking_then_tool_use() -> Script:
    """A reply as the API streams it with extended thinking on, ending in a tool call."""
    return Script(
        items=[
            anthropic_sse(
                start(),
                block_start(0, {"type": "thinking", "thinking": ""}),
                delta(0, type="thinking_delta", thinking="The user wants Paris. "),
                delta(0, type="thinking_delta", thinking="I should call get_weather."),
                delta(0, type="signature_delta", signature=SIGNATURE),
                stop(0),
                block_start(1, {"type": "text", "text": ""}),
                delta(1, type="text_delta", text="Checking."),
                stop(1),
                block_start(
                    2, {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
                ),
                delta(2, type="input_json_delta", partial_json='{"city": "Paris"}'),
                stop(2),
                *finish("tool_use"),
            )
        ]
    )


THINKING = ThinkingPart("The user wants Paris. I should call get_weather.", signature=SIGNATURE)


async def test_a_tool_loop_sends_the_signed_thinking_back_before_the_tool_use(
    api: FakeAPI,
) -> None:
    api.queue(thinking_then_tool_use(), reply_text("18 °C, and the call failed."))
    store = MemoryStore()
    async with make(api) as provider:
        async with Session(store, "loop", provider=provider) as s:
            texts = [t async for t in s.stream("Weather in Paris?")]
        first = s.committed[1]
        assert texts == ["Checking."]  # thinking is never reply text
        assert first.content == (THINKING, TextPart("Checking."))
        thinking = first.content[0]
        assert isinstance(thinking, ThinkingPart) and thinking.signature == SIGNATURE
        assert first.text == "Checking."
        assert first.tool_calls == (ToolCall("toolu_1", "get_weather", '{"city": "Paris"}'),)

        stored = await store.load("loop")
        assert stored[1].content == (THINKING, TextPart("Checking."))
        async with Session(store, "loop", provider=provider) as s:
            result = Message.tool("timeout", tool_call_id="toolu_1", is_error=True)
            await s.send(result)

    assert api.served[1].json()["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "thinking",
                    "thinking": "The user wants Paris. I should call get_weather.",
                    "signature": SIGNATURE,
                },
                {"type": "text", "text": "Checking."},
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
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": "timeout",
                    "is_error": True,
                }
            ],
        },
    ]


async def test_redacted_thinking_round_trip(api: FakeAPI) -> None:
    api.queue(
        Script(
            items=[
                anthropic_sse(
                    start(),
                    block_start(0, {"type": "redacted_thinking", "data": REDACTED}),
                    stop(0),
                    block_start(1, {"type": "thinking", "thinking": ""}),
                    delta(1, type="thinking_delta", thinking="Fine."),
                    delta(1, type="signature_delta", signature=SIGNATURE),
                    stop(1),
                    block_start(2, {"type": "text", "text": ""}),
                    delta(2, type="text_delta", text="Hello."),
                    stop(2),
                    *finish("end_turn"),
                )
            ]
        ),
        reply_text("ok"),
    )
    async with make(api) as provider:
        events = [e async for e in provider.stream_reply([Message.user("hi")])]
        assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hello."]
        done = events[-1]
        assert isinstance(done, ReplyDone)
        reply = done.message
        assert reply.content == (
            ThinkingPart(redacted=REDACTED),
            ThinkingPart("Fine.", signature=SIGNATURE),
            TextPart("Hello."),
        )
        history = [Message.user("hi"), reply, Message.user("again")]
        async for _ in provider.stream_reply(history):
            pass
    assert api.served[1].json()["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "redacted_thinking", "data": REDACTED},
            {"type": "thinking", "thinking": "Fine.", "signature": SIGNATURE},
            {"type": "text", "text": "Hello."},
        ],
    }


async def test_a_reply_without_thinking_keeps_str_content(api: FakeAPI) -> None:
    api.queue(reply_text("plain"))
    async with make(api) as provider:
        events = [e async for e in provider.stream_reply([Message.user("hi")])]
    done = events[-1]
    assert isinstance(done, ReplyDone) and done.message.content == "plain"


def test_thinking_goes_first_and_unsigned_thinking_is_left_out() -> None:
    history = [
        Message.user("q"),
        Message.assistant("first", tool_calls=[ToolCall("t1", "f", "{}")]),
        Message.assistant(
            [TextPart("second"), ThinkingPart("signed", signature="s1"), ThinkingPart("unsigned")]
        ),  # merged with the one before: its thinking still leads the turn
    ]
    _, wire = to_anthropic_messages(history, None)
    assert wire[1] == {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "signed", "signature": "s1"},
            {"type": "text", "text": "first"},
            {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
            {"type": "text", "text": "second"},
        ],
    }
