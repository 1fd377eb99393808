"""Content parts on Ollama's ``/api/chat`` wire: the exact request JSON the server received.

Shape: https://github.com/ollama/ollama/blob/main/docs/api.md#generate-a-chat-completion
(a message's ``images``: a list of base64-encoded images beside ``content``, for
multimodal models; the "Chat request (with images)" example) and api/types.go ``Message``.
There is no field for an image by URL, a document or audio: those are refused.
"""

from __future__ import annotations

import base64
import json
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
from promptkit_async.providers import OllamaProvider, ReplyDone
from promptkit_async.providers._ollama_wire import to_ollama_messages

from ._fakeapi import FakeAPI, Script

if TYPE_CHECKING:
    from collections.abc import Sequence

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"
WAV = b"RIFF$\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00D\xac\x00\x00"
NDJSON = {"content-type": "application/x-ndjson"}

# One line of text, then the done line (docs/api.md "Chat request (streaming)").
OK = b"".join(
    json.dumps(line).encode() + b"\n"
    for line in (
        {"model": "llava", "message": {"role": "assistant", "content": "ok"}, "done": False},
        {
            "model": "llava",
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
        },
    )
)


def make(api: FakeAPI) -> OllamaProvider:
    return OllamaProvider("llava", base_url=api.base_url, client=api.client(), retry_backoff=0.01)


async def sent_messages(api: FakeAPI, messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The ``messages`` of the one request the fake API received for ``messages``."""
    api.queue(Script(headers=NDJSON, items=[OK]))
    async with make(api) as provider:
        events = [e async for e in provider.stream_reply(messages)]
    assert isinstance(events[-1], ReplyDone) and events[-1].message.content == "ok"
    (served,) = api.served
    wire: list[dict[str, Any]] = served.json()["messages"]
    return wire


async def refused(api: FakeAPI, messages: Sequence[Message], match: str) -> None:
    """``messages`` are refused with ``match``, and nothing reached the server."""
    async with make(api) as provider:
        with pytest.raises(InvalidMessage, match=match):
            async for _ in provider.stream_reply(messages):
                pass
    assert api.served == []


async def test_inline_images_are_raw_base64_encoded_once(api: FakeAPI) -> None:
    user = Message.user(
        [
            TextPart("What is in "),
            ImagePart(data=PNG, media_type="image/png"),
            TextPart("these images?"),
            ImagePart(data=JPEG, media_type="image/jpeg", detail="high"),  # no field: left out
        ]
    )
    wire = await sent_messages(api, [user])
    png, jpeg = (base64.b64encode(b).decode("ascii") for b in (PNG, JPEG))
    assert wire == [{"role": "user", "content": "What is in these images?", "images": [png, jpeg]}]
    sent = wire[0]["images"][0]
    assert sent == png and not sent.startswith("data:")  # the stored base64, as is
    assert base64.b64decode(sent, validate=True) == PNG


async def test_an_image_by_url_is_refused_before_sending(api: FakeAPI) -> None:
    user = Message.user([TextPart("What?"), ImagePart(url="https://example.com/cat.png")])
    await refused(api, [user], r"ollama cannot carry an ImagePart by URL")


@pytest.mark.parametrize(
    ("part", "match"),
    [
        (FilePart(data=PDF, media_type="application/pdf"), r"ollama cannot carry a FilePart"),
        (FilePart(url="https://example.com/a.pdf"), r"ollama cannot carry a FilePart"),
        (AudioPart(data=WAV, media_type="audio/wav"), r"ollama cannot carry an AudioPart"),
    ],
    ids=["pdf", "file-url", "audio"],
)
async def test_files_and_audio_are_refused_before_sending(
    api: FakeAPI, part: FilePart | AudioPart, match: str
) -> None:
    await refused(api, [Message.user([TextPart("Summarise"), part])], match + " in a user message")


@pytest.mark.parametrize(
    "message",
    [
        Message.assistant([ImagePart(data=PNG, media_type="image/png")]),
        Message("system", (ImagePart(data=PNG, media_type="image/png"),)),
    ],
    ids=["assistant", "system"],
)
async def test_an_image_on_assistant_or_system_is_refused_before_sending(
    api: FakeAPI, message: Message
) -> None:
    match = rf"ollama cannot carry an ImagePart in an? {message.role} message"
    await refused(api, [Message.user("hi"), message], match)


async def test_a_tool_result_carries_its_images(api: FakeAPI) -> None:
    history = [
        Message.user("Take a screenshot"),
        Message.assistant(tool_calls=[ToolCall("c1", "screenshot", "{}")]),
        Message.tool(
            [TextPart("Here:"), ImagePart(data=PNG, media_type="image/png")], tool_call_id="c1"
        ),
    ]
    wire = await sent_messages(api, history)
    assert wire[2] == {
        "role": "tool",
        "content": "Here:",
        "images": [base64.b64encode(PNG).decode("ascii")],
        "tool_name": "screenshot",
        "tool_call_id": "c1",
    }


def test_thinking_is_left_out_and_str_is_unchanged() -> None:
    history = [
        Message.user("hi"),
        Message.assistant(
            [ThinkingPart("hmm", signature="sig"), TextPart("Hel"), TextPart("lo.")],
            tool_calls=[ToolCall("c1", "f", "{}")],
        ),
        Message.tool([TextPart("4"), TextPart("2")], tool_call_id="c1"),
    ]
    assert to_ollama_messages(history, "sys") == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": "Hello.",
            "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": {}}}],
        },
        {"role": "tool", "content": "42", "tool_name": "f", "tool_call_id": "c1"},
    ]
