"""Content parts on the Chat Completions wire: the exact request JSON the server received.

Shapes: https://platform.openai.com/docs/api-reference/chat/create (user content parts
``text``, ``image_url``, ``file`` with ``file_data``, ``input_audio`` with ``format``).
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
    Message,
    TextPart,
    ThinkingPart,
    ToolCall,
)
from promptkit_async.providers import OpenAIProvider, ReplyDone
from promptkit_async.providers._openai_wire import to_openai_messages

from ._fakeapi import FakeAPI, Script, sse

if TYPE_CHECKING:
    from collections.abc import Sequence

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"
WAV = b"RIFF$\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00D\xac\x00\x00"

OK = [
    sse({"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"content": "ok"}}]}),
    sse({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
    sse("[DONE]"),
]


async def sent_messages(api: FakeAPI, messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The ``messages`` of the one request the fake API received for ``messages``."""
    api.queue(Script(items=OK))
    provider = OpenAIProvider("gpt-test", "sk-key", api.base_url + "/v1", client=api.client())
    async with provider:
        events = [e async for e in provider.stream_reply(messages)]
    assert isinstance(events[-1], ReplyDone) and events[-1].message.content == "ok"
    (served,) = api.served
    wire: list[dict[str, Any]] = served.json()["messages"]
    return wire


async def test_image_by_url_with_detail(api: FakeAPI) -> None:
    user = Message.user(
        [TextPart("What is this?"), ImagePart(url="https://example.com/cat.png", detail="low")]
    )
    assert await sent_messages(api, [user]) == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "https://example.com/cat.png", "detail": "low"},
                },
            ],
        }
    ]


async def test_inline_image_is_a_data_url_encoded_once(api: FakeAPI) -> None:
    user = Message.user([ImagePart(data=PNG, media_type="image/png"), TextPart("and?")])
    wire = await sent_messages(api, [user])
    encoded = base64.b64encode(PNG).decode("ascii")
    assert wire == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{encoded}"}},
                {"type": "text", "text": "and?"},
            ],
        }
    ]
    url = wire[0]["content"][0]["image_url"]["url"]
    assert base64.b64decode(url.partition(",")[2], validate=True) == PNG  # not double-encoded


async def test_pdf_file_part(api: FakeAPI) -> None:
    named = FilePart(data=PDF, media_type="application/pdf", filename="report.pdf")
    unnamed = FilePart(data=PDF, media_type="application/pdf")
    wire = await sent_messages(api, [Message.user([TextPart("Summarise"), named, unnamed])])
    data_url = "data:application/pdf;base64," + base64.b64encode(PDF).decode("ascii")
    assert wire[0]["content"] == [
        {"type": "text", "text": "Summarise"},
        {"type": "file", "file": {"filename": "report.pdf", "file_data": data_url}},
        {"type": "file", "file": {"filename": "file.pdf", "file_data": data_url}},
    ]


async def test_wav_audio_part(api: FakeAPI) -> None:
    user = Message.user([AudioPart(data=WAV, media_type="audio/wav"), TextPart("Transcribe")])
    wire = await sent_messages(api, [user])
    assert wire[0]["content"] == [
        {
            "type": "input_audio",
            "input_audio": {"data": base64.b64encode(WAV).decode("ascii"), "format": "wav"},
        },
        {"type": "text", "text": "Transcribe"},
    ]


@pytest.mark.parametrize(
    ("media_type", "expected"),
    [("audio/x-wav", "wav"), ("audio/mpeg", "mp3"), ("audio/mp3", "mp3"), ("audio/ogg", None)],
)
def test_audio_formats(media_type: str, expected: str | None) -> None:
    user = Message.user([AudioPart(data=WAV, media_type=media_type)])
    if expected is None:
        with pytest.raises(InvalidMessage, match=r"AudioPart .*audio/ogg"):
            to_openai_messages([user], None)
        return
    (wire,) = to_openai_messages([user], None)
    assert wire["content"][0]["input_audio"]["format"] == expected


LOOK = (TextPart("look"), ImagePart(url="https://example.com/a.png"))


@pytest.mark.parametrize(
    "message",
    [
        Message.assistant(LOOK),
        Message("system", LOOK),
        Message.tool(LOOK, tool_call_id="c1"),
    ],
    ids=["assistant", "system", "tool"],
)
async def test_media_on_a_non_user_message_is_refused_before_sending(
    api: FakeAPI, message: Message
) -> None:
    role = message.role
    provider = OpenAIProvider("gpt-test", "sk-key", api.base_url + "/v1", client=api.client())
    async with provider:
        with pytest.raises(InvalidMessage, match=rf"openai .*ImagePart .*{role} message"):
            async for _ in provider.stream_reply([Message.user("hi"), message]):
                pass
    assert api.served == []


async def test_file_by_url_is_refused_before_sending(api: FakeAPI) -> None:
    user = Message.user([FilePart(url="https://example.com/a.pdf", media_type="application/pdf")])
    provider = OpenAIProvider("gpt-test", "sk-key", api.base_url + "/v1", client=api.client())
    async with provider:
        with pytest.raises(InvalidMessage, match=r"openai .*FilePart by URL.*inline data"):
            async for _ in provider.stream_reply([user]):
                pass
    assert api.served == []


def test_text_parts_of_other_roles_are_joined_and_thinking_is_dropped() -> None:
    call = ToolCall("c1", "f", "{}")
    history = [
        Message.user([TextPart("q"), ThinkingPart("not mine")]),
        Message.assistant(
            [ThinkingPart("hmm", signature="sig"), TextPart("Let "), TextPart("me.")],
            tool_calls=[call],
        ),
        Message.tool([TextPart("failed: "), TextPart("timeout")], tool_call_id="c1", is_error=True),
        Message.assistant([ThinkingPart("only thinking")], tool_calls=[call]),
    ]
    assert to_openai_messages(history, "sys") == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "q"}]},
        {
            "role": "assistant",
            "content": "Let me.",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        # Chat Completions has no is_error flag: the result text says it.
        {"role": "tool", "content": "failed: timeout", "tool_call_id": "c1"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
    ]


def test_str_content_is_sent_unchanged() -> None:
    history = [Message.user("hi"), Message.tool("boom", tool_call_id="c1", is_error=True)]
    assert to_openai_messages(history, None) == [
        {"role": "user", "content": "hi"},
        {"role": "tool", "content": "boom", "tool_call_id": "c1"},
    ]
