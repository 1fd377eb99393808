"""Content parts on the Responses API wire: the exact request JSON the server received.

Shapes: https://platform.openai.com/docs/api-reference/responses/create (input message
content ``input_text``, ``input_image`` with ``image_url`` and ``detail``, ``input_file``
with ``file_data`` + ``filename`` or ``file_url``; ``function_call_output`` whose ``output``
is a string or a list of those input parts), https://platform.openai.com/docs/guides/images-vision
and https://platform.openai.com/docs/guides/pdf-files. Audio input is documented for Chat
Completions only (https://platform.openai.com/docs/guides/audio), so it is refused here.
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
from promptkit_async.providers import OpenAIResponsesProvider, ReplyDone
from promptkit_async.providers._responses_wire import to_responses_input

from ._fakeapi import FakeAPI, Script, typed_sse

if TYPE_CHECKING:
    from collections.abc import Sequence

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"
WAV = b"RIFF$\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00D\xac\x00\x00"

# The shortest complete stream: one text delta, then response.completed
# (https://platform.openai.com/docs/api-reference/responses-streaming).
OK = typed_sse(
    {"type": "response.output_text.delta", "item_id": "msg_1", "delta": "ok", "sequence_number": 0},
    {
        "type": "response.completed",
        "response": {"id": "resp_1", "model": "gpt-test", "status": "completed"},
        "sequence_number": 1,
    },
)


def make(api: FakeAPI) -> OpenAIResponsesProvider:
    return OpenAIResponsesProvider(
        "gpt-test", api_key="sk-key", base_url=api.base_url + "/v1", client=api.client()
    )


async def sent_input(api: FakeAPI, messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The ``input`` of the one request the fake API received for ``messages``."""
    api.queue(Script(items=[OK]))
    async with make(api) as provider:
        events = [e async for e in provider.stream_reply(messages)]
    assert isinstance(events[-1], ReplyDone) and events[-1].message.content == "ok"
    (served,) = api.served
    wire: list[dict[str, Any]] = served.json()["input"]
    return wire


async def refused(api: FakeAPI, messages: Sequence[Message], match: str) -> None:
    """``messages`` are refused with ``match``, and nothing reached the server."""
    async with make(api) as provider:
        with pytest.raises(InvalidMessage, match=match):
            async for _ in provider.stream_reply(messages):
                pass
    assert api.served == []


async def test_image_by_url_with_detail(api: FakeAPI) -> None:
    user = Message.user(
        [TextPart("What is this?"), ImagePart(url="https://example.com/cat.png", detail="low")]
    )
    assert await sent_input(api, [user]) == [
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is this?"},
                {
                    "type": "input_image",
                    "image_url": "https://example.com/cat.png",
                    "detail": "low",
                },
            ],
        }
    ]


async def test_inline_image_is_a_data_url_encoded_once(api: FakeAPI) -> None:
    user = Message.user([ImagePart(data=PNG, media_type="image/png"), TextPart("and?")])
    wire = await sent_input(api, [user])
    encoded = base64.b64encode(PNG).decode("ascii")
    assert wire[0]["content"] == [
        {"type": "input_image", "image_url": f"data:image/png;base64,{encoded}"},
        {"type": "input_text", "text": "and?"},
    ]
    payload = wire[0]["content"][0]["image_url"].partition(",")[2]
    assert payload == encoded  # the stored base64, not encoded a second time
    assert base64.b64decode(payload, validate=True) == PNG


async def test_pdf_inline_named_unnamed_and_by_url(api: FakeAPI) -> None:
    user = Message.user(
        [
            TextPart("Compare them."),
            FilePart(data=PDF, media_type="application/pdf", filename="report.pdf"),
            FilePart(data=PDF, media_type="application/pdf"),
            FilePart(url="https://example.com/paper.pdf"),
            FilePart(url="https://example.com/x", media_type="application/pdf", filename="x.pdf"),
        ]
    )
    wire = await sent_input(api, [user])
    data_url = "data:application/pdf;base64," + base64.b64encode(PDF).decode("ascii")
    assert wire[0]["content"] == [
        {"type": "input_text", "text": "Compare them."},
        {"type": "input_file", "filename": "report.pdf", "file_data": data_url},
        {"type": "input_file", "filename": "file.pdf", "file_data": data_url},
        {"type": "input_file", "file_url": "https://example.com/paper.pdf"},
        {"type": "input_file", "file_url": "https://example.com/x", "filename": "x.pdf"},
    ]


async def test_audio_is_refused_before_sending(api: FakeAPI) -> None:
    user = Message.user([TextPart("Transcribe"), AudioPart(data=WAV, media_type="audio/wav")])
    await refused(api, [user], r"openai-responses cannot carry an AudioPart in a user message")


@pytest.mark.parametrize(
    "message",
    [
        Message.assistant([TextPart("look"), ImagePart(url="https://example.com/a.png")]),
        Message("system", (TextPart("look"), ImagePart(url="https://example.com/a.png"))),
    ],
    ids=["assistant", "system"],
)
async def test_media_on_assistant_or_system_is_refused_before_sending(
    api: FakeAPI, message: Message
) -> None:
    match = rf"openai-responses cannot carry an ImagePart in an? {message.role} message"
    await refused(api, [Message.user("hi"), message], match)


async def test_audio_in_a_tool_result_is_refused_before_sending(api: FakeAPI) -> None:
    history = [
        Message.user("Record it"),
        Message.assistant(tool_calls=[ToolCall("c1", "record", "{}")]),
        Message.tool([AudioPart(data=WAV, media_type="audio/wav")], tool_call_id="c1"),
    ]
    await refused(api, history, r"openai-responses cannot carry an AudioPart in a tool message")


async def test_a_tool_result_with_an_image_is_a_list_output(api: FakeAPI) -> None:
    history = [
        Message.user("Take a screenshot"),
        Message.assistant(tool_calls=[ToolCall("c1", "screenshot", "{}")]),
        Message.tool(
            [TextPart("Here:"), ImagePart(data=PNG, media_type="image/png")], tool_call_id="c1"
        ),
    ]
    wire = await sent_input(api, history)
    encoded = base64.b64encode(PNG).decode("ascii")
    assert wire[2] == {
        "type": "function_call_output",
        "call_id": "c1",
        "output": [
            {"type": "input_text", "text": "Here:"},
            {"type": "input_image", "image_url": f"data:image/png;base64,{encoded}"},
        ],
    }


def test_text_parts_are_joined_and_thinking_is_left_out() -> None:
    call = ToolCall("c1", "f", "{}")
    history = [
        Message("system", (TextPart("Be "), TextPart("brief."))),
        Message.user([ThinkingPart("not mine", signature="sig"), TextPart("q")]),
        Message.assistant(
            [ThinkingPart("hmm", signature="sig"), TextPart("Let "), TextPart("me.")],
            tool_calls=[call],
        ),
        Message.tool([TextPart("failed: "), TextPart("timeout")], tool_call_id="c1", is_error=True),
        Message.user([ThinkingPart("only thinking")]),
    ]
    assert to_responses_input(history) == [
        {
            "type": "message",
            "role": "system",
            "content": [{"type": "input_text", "text": "Be brief."}],
        },
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "q"}]},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Let me.", "annotations": []}],
        },
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        # Text-only results stay a string output, as a str content always was.
        {"type": "function_call_output", "call_id": "c1", "output": "failed: timeout"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": ""}]},
    ]


def test_str_content_is_sent_unchanged() -> None:
    history = [
        Message.user("hi"),
        Message.assistant("", tool_calls=[ToolCall("c1", "f", "{}")]),
        Message.tool("boom", tool_call_id="c1", is_error=True),
    ]
    assert to_responses_input(history) == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "boom"},
    ]
