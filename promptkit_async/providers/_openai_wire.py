"""The OpenAI Chat Completions wire format (and every server that speaks it), sans-IO.

Request building (neutral :class:`Message` list -> wire messages) and the
assembly of a reply from ``chat.completion.chunk`` events. No I/O and no HTTP
client here: the provider in ``_openai.py`` sends what this builds, and the
scripted provider runs its replies through exactly the same parser.

Only the documented wire format is assumed, and the parser accepts what
OpenAI-compatible servers (vLLM, Ollama's ``/v1``, llama.cpp, LM Studio) do
differently: no usage chunk, ``content: null``, ``choices: null``, a tool-call
fragment without ``index``, ``finish_reason`` on the chunk carrying the last
text, and vLLM's ``{"object": "error"}`` payloads.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any, Final

from .._exceptions import InvalidMessage, ProviderStreamError
from .._messages import Message, ToolCall, text_only
from .._parts import AudioPart, FilePart, ImagePart, TextPart

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from .._parts import Part
    from .._types import JSONValue
    from ._sse import ServerSentEvent

__all__ = ["OpenAIChunkParser", "to_openai_messages"]


def to_openai_messages(messages: Sequence[Message], system: str | None) -> list[dict[str, Any]]:
    """Convert a neutral history to Chat Completions ``messages``.

    The system prompt goes first. Tool results at the very start of the
    history (their assistant call was trimmed away) are dropped, because the
    API rejects a ``tool`` message that does not answer a preceding call.
    """
    out: list[dict[str, Any]] = []
    if system:
        out.append({"role": "system", "content": system})
    leading = True
    for m in messages:
        if leading and m.role == "tool":
            continue
        if m.role != "system":
            leading = False
        out.append(_wire_message(m))
    return out


def _wire_message(m: Message) -> dict[str, Any]:
    content = _wire_content(m)
    item: dict[str, Any] = {"role": m.role, "content": content}
    if m.tool_calls:
        item["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
        if not content:
            item["content"] = None  # what the API itself returns for a pure tool call
    # A failed tool (``m.is_error``) has no flag in Chat Completions: the result
    # text is sent as it is, and is what tells the model the call failed.
    if m.tool_call_id is not None:
        item["tool_call_id"] = m.tool_call_id
    if m.name is not None:
        item["name"] = m.name
    return item


_AUDIO_FORMATS: Final = {
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
}
"""The media types ``input_audio`` can carry, by the ``format`` name it takes."""

_DEFAULT_FILENAMES: Final = {"application/pdf": "file.pdf"}
"""A name for an unnamed inline file: the API requires one with ``file_data``."""


def _wire_content(m: Message) -> str | list[dict[str, Any]]:
    """A str content as is (the bytes existing requests always had); parts as a list.

    Only a user message may carry media (the API takes images, files and audio
    from the user alone); other roles get their text parts joined. Thinking is
    left out: Chat Completions has no field to send it back in.

    Raises:
        InvalidMessage: media on a non-user message, or a part the API cannot
            carry (a file by URL, audio that is neither WAV nor MP3).
    """
    content = m.content
    if isinstance(content, str):
        return content
    if m.role != "user":
        return text_only(m, "openai", "Chat Completions takes media in user messages only")
    blocks = [block for part in content if (block := _user_block(part)) is not None]
    return blocks or ""  # the API refuses an empty content list


def _data_url(media_type: str | None, b64: str) -> str:
    return f"data:{media_type or 'application/octet-stream'};base64,{b64}"


def _user_block(part: Part) -> dict[str, Any] | None:
    """One part of a user message as a Chat Completions content part (None: left out)."""
    if type(part) is TextPart:
        return {"type": "text", "text": part.text} if part.text else None
    if type(part) is ImagePart:
        url = part.url if part.base64 is None else _data_url(part.media_type, part.base64)
        image: dict[str, Any] = {"url": url}
        if part.detail is not None:
            image["detail"] = part.detail
        return {"type": "image_url", "image_url": image}
    if type(part) is FilePart:
        if part.base64 is None:
            raise InvalidMessage(
                "openai cannot carry a FilePart by URL (Chat Completions takes files only "
                "as inline data): pass FilePart(data=..., media_type=...) instead"
            )
        filename = part.filename or _DEFAULT_FILENAMES.get(part.media_type or "", "file")
        return {
            "type": "file",
            "file": {"filename": filename, "file_data": _data_url(part.media_type, part.base64)},
        }
    if type(part) is AudioPart:
        media_type = (part.media_type or "").split(";")[0].strip().lower()
        audio_format = _AUDIO_FORMATS.get(media_type)
        if audio_format is None or part.base64 is None:
            raise InvalidMessage(
                f"openai cannot carry an AudioPart of type {part.media_type!r}: "
                "input_audio takes WAV (audio/wav) or MP3 (audio/mpeg) only"
            )
        return {"type": "input_audio", "input_audio": {"data": part.base64, "format": audio_format}}
    return None  # ThinkingPart: nowhere to put it


class _CallBuffer:
    __slots__ = ("arguments", "id", "name")

    def __init__(self, call_id: str | None, name: str | None) -> None:
        self.id = call_id
        self.name = name
        self.arguments: list[str] = []


class OpenAIChunkParser:
    """Assembles one reply from ``chat.completion.chunk`` events.

    ``feed`` returns the text the event carried ("" if none) and raises
    :class:`ProviderStreamError` on an error payload or malformed data;
    ``done`` turns true at ``[DONE]``; ``message()`` builds the reply.
    """

    def __init__(self, *, provider: str = "openai") -> None:
        self.provider = provider
        self.done = False
        self._text: list[str] = []
        self._calls: dict[int, _CallBuffer] = {}
        self._finish_reason: str | None = None
        self._usage: JSONValue = None
        self._model: str | None = None
        self._id: str | None = None
        self._refusal = False

    def feed(self, event: ServerSentEvent) -> str:
        if self.done:
            return ""
        data = event.data
        if data.strip() == "[DONE]":
            self.done = True
            return ""
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise ProviderStreamError(
                f"{self.provider}: malformed stream chunk: {data[:200]!r}"
            ) from exc
        if not isinstance(chunk, dict):
            raise ProviderStreamError(f"{self.provider}: stream chunk is not an object")
        if event.event == "error" or chunk.get("error") or chunk.get("object") == "error":
            raise ProviderStreamError(_stream_error_message(self.provider, chunk))
        if isinstance(chunk.get("model"), str):
            self._model = chunk["model"]
        if isinstance(chunk.get("id"), str):
            self._id = chunk["id"]
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage = usage
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            return ""
        text = ""
        for choice in choices:
            # n > 1 is not supported: a session keeps one reply per turn.
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                content = delta.get("content")
                if isinstance(content, str):
                    text += content
                refusal = delta.get("refusal")
                if isinstance(refusal, str) and refusal:
                    self._refusal = True
                    text += refusal
                fragments = delta.get("tool_calls")
                if isinstance(fragments, list):
                    for fragment in fragments:
                        if isinstance(fragment, dict):
                            self._tool_fragment(fragment)
            finish_reason = choice.get("finish_reason")
            if isinstance(finish_reason, str) and finish_reason:
                self._finish_reason = finish_reason
        if text:
            self._text.append(text)
        return text

    def _tool_fragment(self, fragment: dict[str, Any]) -> None:
        call_id = fragment.get("id") if isinstance(fragment.get("id"), str) else None
        function = fragment.get("function")
        if not isinstance(function, dict):
            function = {}
        index = fragment.get("index")
        if not isinstance(index, int):
            # A server that omits ``index``: a new id starts a call, anything else continues one.
            last = max(self._calls, default=-1)
            if call_id is None and last >= 0:
                index = last
            elif call_id is not None and last >= 0 and self._calls[last].id in (None, call_id):
                index = last
            else:
                index = last + 1
        buffer = self._calls.get(index)
        if buffer is not None and call_id and buffer.id and buffer.id != call_id:
            # Some servers reuse index 0 for each complete call: keep them apart.
            index = max(self._calls) + 1
            buffer = None
        name = function.get("name")
        if buffer is None:
            buffer = self._calls[index] = _CallBuffer(call_id, None)
        elif call_id and not buffer.id:
            buffer.id = call_id
        if isinstance(name, str) and name:
            buffer.name = name if buffer.name is None else buffer.name
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            buffer.arguments.append(arguments)
        elif isinstance(arguments, dict):  # a complete object instead of JSON text
            buffer.arguments.append(json.dumps(arguments, ensure_ascii=False))

    def message(self) -> Message:
        """The assistant message assembled so far (call after ``done``)."""
        calls: list[ToolCall] = []
        for index in sorted(self._calls):
            buffer = self._calls[index]
            if not buffer.name:
                raise ProviderStreamError(f"{self.provider}: tool call {index} has no name")
            calls.append(
                ToolCall(
                    buffer.id or f"call_{uuid.uuid4().hex[:24]}",
                    buffer.name,
                    "".join(buffer.arguments) or "{}",
                )
            )
        metadata: dict[str, JSONValue] = {
            "finish_reason": self._finish_reason,
            "usage": self._usage,
            "model": self._model,
            "provider": self.provider,
            "id": self._id,
        }
        if self._refusal:
            metadata["refusal"] = True
        try:
            return Message.assistant("".join(self._text), tool_calls=calls, **metadata)
        except InvalidMessage as exc:  # e.g. a non-finite number in usage
            raise ProviderStreamError(f"{self.provider}: unusable reply: {exc}") from exc


def _stream_error_message(provider: str, chunk: Mapping[str, Any]) -> str:
    error = chunk.get("error")
    detail: Mapping[str, Any] = error if isinstance(error, dict) else chunk
    message = detail.get("message")
    if not isinstance(message, str) or not message:
        message = error if isinstance(error, str) and error else "unknown error"
    kind = detail.get("type") or detail.get("code")
    suffix = f" ({kind})" if isinstance(kind, (str, int)) and kind != "" else ""
    return f"{provider}: error event in stream: {message}{suffix}"
