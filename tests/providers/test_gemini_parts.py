"""Content parts on the Gemini ``generateContent`` wire: the exact request JSON the server
received.

Shapes: https://ai.google.dev/api/caching#Part (``text``, ``inlineData`` with a ``Blob``
``{mimeType, data}``, ``fileData`` with ``{mimeType, fileUri}``),
https://ai.google.dev/gemini-api/docs/image-understanding (inline images and by URI),
https://ai.google.dev/gemini-api/docs/document-processing (PDFs inline and by URI),
https://ai.google.dev/gemini-api/docs/audio (inline audio), and
https://ai.google.dev/gemini-api/docs/thought-signatures (signatures sent back on the part
they came with).
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
from promptkit_async.providers import GeminiProvider, ReplyDone
from promptkit_async.providers._gemini_wire import to_gemini_contents

from ._fakeapi import FakeAPI, Script

if TYPE_CHECKING:
    from collections.abc import Sequence

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"
WAV = b"RIFF$\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00D\xac\x00\x00"
FILE_URI = "https://generativelanguage.googleapis.com/v1beta/files/abc-123"
SIGNATURE = "CiQB0e2Kb8xqR3mFh0TQ1nVw5yB2cVb0Hn9pXk2uL4sGd7Y="

# One streamed GenerateContentResponse ending the reply
# (https://ai.google.dev/api/generate-content#method:-models.streamgeneratecontent).
OK = (
    b"data: "
    + json.dumps(
        {
            "candidates": [
                {"content": {"parts": [{"text": "ok"}], "role": "model"}, "finishReason": "STOP"}
            ],
            "modelVersion": "gemini-test",
        }
    ).encode()
    + b"\r\n\r\n"
)


def make(api: FakeAPI) -> GeminiProvider:
    return GeminiProvider("gemini-test", api_key="key", base_url=api.base_url, client=api.client())


async def sent_contents(api: FakeAPI, messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The ``contents`` of the one request the fake API received for ``messages``."""
    api.queue(Script(items=[OK]))
    async with make(api) as provider:
        events = [e async for e in provider.stream_reply(messages)]
    assert isinstance(events[-1], ReplyDone) and events[-1].message.content == "ok"
    (served,) = api.served
    wire: list[dict[str, Any]] = served.json()["contents"]
    return wire


async def refused(api: FakeAPI, messages: Sequence[Message], match: str) -> None:
    """``messages`` are refused with ``match``, and nothing reached the server."""
    async with make(api) as provider:
        with pytest.raises(InvalidMessage, match=match):
            async for _ in provider.stream_reply(messages):
                pass
    assert api.served == []


async def test_image_by_url_is_file_data(api: FakeAPI) -> None:
    user = Message.user(
        [ImagePart(url=FILE_URI, media_type="image/jpeg"), TextPart("Caption this image.")]
    )
    assert await sent_contents(api, [user]) == [
        {
            "role": "user",
            "parts": [
                {"fileData": {"mimeType": "image/jpeg", "fileUri": FILE_URI}},
                {"text": "Caption this image."},
            ],
        }
    ]


async def test_a_url_without_a_media_type_is_refused_before_sending(api: FakeAPI) -> None:
    user = Message.user([ImagePart(url="https://example.com/cat.png"), TextPart("What?")])
    await refused(api, [user], r"gemini cannot carry an ImagePart by URL without a media type")


async def test_inline_image_is_inline_data_encoded_once(api: FakeAPI) -> None:
    user = Message.user([TextPart("What is this?"), ImagePart(data=PNG, media_type="image/png")])
    wire = await sent_contents(api, [user])
    encoded = base64.b64encode(PNG).decode("ascii")
    assert wire == [
        {
            "role": "user",
            "parts": [
                {"text": "What is this?"},
                {"inlineData": {"mimeType": "image/png", "data": encoded}},
            ],
        }
    ]
    data = wire[0]["parts"][1]["inlineData"]["data"]
    assert data == encoded  # the stored base64, not encoded a second time
    assert base64.b64decode(data, validate=True) == PNG


async def test_pdfs_inline_and_by_url_and_inline_audio(api: FakeAPI) -> None:
    user = Message.user(
        [
            FilePart(data=PDF, media_type="application/pdf", filename="report.pdf"),
            FilePart(url=FILE_URI, media_type="application/pdf"),
            AudioPart(data=WAV, media_type="audio/wav"),
            TextPart("Summarise both, and transcribe the recording."),
        ]
    )
    wire = await sent_contents(api, [user])
    assert wire[0]["parts"] == [
        # Gemini has no field for a file name: the filename stays ours.
        {
            "inlineData": {
                "mimeType": "application/pdf",
                "data": base64.b64encode(PDF).decode("ascii"),
            }
        },
        {"fileData": {"mimeType": "application/pdf", "fileUri": FILE_URI}},
        {"inlineData": {"mimeType": "audio/wav", "data": base64.b64encode(WAV).decode("ascii")}},
        {"text": "Summarise both, and transcribe the recording."},
    ]


async def test_a_file_by_url_without_a_media_type_is_refused(api: FakeAPI) -> None:
    user = Message.user([FilePart(url=FILE_URI)])
    await refused(api, [user], r"gemini cannot carry a FilePart by URL without a media type")


async def test_media_in_a_tool_result_is_refused_before_sending(api: FakeAPI) -> None:
    history = [
        Message.user("Take a screenshot"),
        Message.assistant(tool_calls=[ToolCall("c1", "screenshot", "{}")]),
        Message.tool([ImagePart(data=PNG, media_type="image/png")], tool_call_id="c1"),
    ]
    await refused(api, history, r"gemini cannot carry an ImagePart in a tool message")


@pytest.mark.parametrize(
    "message",
    [
        Message.assistant([TextPart("look"), ImagePart(url=FILE_URI, media_type="image/png")]),
        Message("system", (TextPart("look"), ImagePart(url=FILE_URI, media_type="image/png"))),
    ],
    ids=["assistant", "system"],
)
async def test_media_on_assistant_or_system_is_refused_before_sending(
    api: FakeAPI, message: Message
) -> None:
    match = rf"gemini cannot carry an ImagePart in an? {message.role} message"
    await refused(api, [Message.user("hi"), message], match)


def test_thinking_is_left_out_and_signatures_are_kept() -> None:
    """A ThinkingPart is another provider's (Gemini's own thoughts travel as signatures in
    the metadata): it is dropped, and the signature still goes back on its part."""
    call = ToolCall("c1", "f", '{"a": 1}')
    history = [
        Message.user([ThinkingPart("not mine"), TextPart("Go "), TextPart("on.")]),
        Message.assistant(
            [ThinkingPart("anthropic's", signature="anthropic-sig"), TextPart("Done.")],
            tool_calls=[call],
            gemini_signatures={"text": SIGNATURE, "calls": {"c1": SIGNATURE}},
        ),
        Message.tool([TextPart('{"ok": '), TextPart("true}")], tool_call_id="c1"),
    ]
    assert to_gemini_contents(history, None) == (
        None,
        [
            {"role": "user", "parts": [{"text": "Go "}, {"text": "on."}]},
            {
                "role": "model",
                "parts": [
                    {"text": "Done.", "thoughtSignature": SIGNATURE},
                    {
                        "functionCall": {"name": "f", "args": {"a": 1}},
                        "thoughtSignature": SIGNATURE,
                    },
                ],
            },
            {
                "role": "user",
                "parts": [{"functionResponse": {"name": "f", "response": {"ok": True}}}],
            },
        ],
    )


def test_a_user_message_of_thinking_only_is_dropped_and_str_is_unchanged() -> None:
    history = [Message.user([ThinkingPart("x")]), Message.user("hi"), Message.user("")]
    assert to_gemini_contents(history, None) == (
        None,
        [{"role": "user", "parts": [{"text": "hi"}]}],
    )
