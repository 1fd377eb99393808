"""The OpenAI Responses API wire format, sans-IO.

Request building (neutral :class:`Message` list -> ``input`` items) and the
assembly of a reply from the typed stream events (``response.output_text.delta``,
``response.output_item.added/done``, ``response.completed``, ...). No I/O here:
``_responses.py`` sends what this builds.

With ``store: false`` the server keeps nothing between requests, so every
request carries the whole window as items. Reasoning models then need their
reasoning back: each reply asks for ``reasoning.encrypted_content``, keeps the
reasoning items it returns in the assistant message's metadata
(``openai_reasoning``), and the next request sends them back, unchanged,
ahead of that message's other items. That is the round trip for reasoning:
a :class:`ThinkingPart` (another provider's, or made up) has no item the API
would take back, so it is left out of every request.

Media parts travel as ``input_image`` and ``input_file`` content, in user
messages and in tool results (a ``function_call_output`` whose ``output`` is
a list); audio is refused, since the Responses API documents no audio input.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

from .._exceptions import InvalidMessage, ProviderStreamError
from .._messages import Message, ToolCall, text_only
from .._parts import AudioPart, FilePart, ImagePart, TextPart, ThinkingPart

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from .._parts import Part
    from .._types import JSONValue
    from ._sse import ServerSentEvent

__all__ = ["REASONING_METADATA", "ResponsesEventParser", "to_responses_input"]

_PROVIDER: Final = "openai-responses"

REASONING_METADATA: Final = "openai_reasoning"
"""The assistant metadata key holding the raw reasoning items of a reply."""

_TERMINAL: Final = frozenset({"response.completed", "response.incomplete"})


# -- request ---------------------------------------------------------------------
# One function per item or part kind. Content part shapes: input_text, input_image
# (image_url, detail) and input_file (file_data + filename, or file_url), as in
# https://platform.openai.com/docs/api-reference/responses/create (input message content).


def _input_text(text: str) -> dict[str, Any]:
    return {"type": "input_text", "text": text}


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": []}


def _message_item(role: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "message", "role": role, "content": content}


def _data_url(media_type: str | None, b64: str) -> str:
    """The stored base64 behind a ``data:`` prefix: the bytes are not encoded again."""
    return f"data:{media_type or 'application/octet-stream'};base64,{b64}"


_DEFAULT_FILENAMES: Final = {"application/pdf": "file.pdf"}
"""A name for an unnamed inline file: the API wants one beside ``file_data``."""


def _input_image(part: ImagePart) -> dict[str, Any]:
    url = part.url if part.base64 is None else _data_url(part.media_type, part.base64)
    block: dict[str, Any] = {"type": "input_image", "image_url": url}
    if part.detail is not None:
        block["detail"] = part.detail  # the API's default (auto) otherwise
    return block


def _input_file(part: FilePart) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "input_file"}
    if part.base64 is None:
        block["file_url"] = part.url
        if part.filename is not None:
            block["filename"] = part.filename
        return block
    block["filename"] = part.filename or _DEFAULT_FILENAMES.get(part.media_type or "", "file")
    block["file_data"] = _data_url(part.media_type, part.base64)
    return block


def _input_part(part: Part, role: str) -> dict[str, Any] | None:
    """One part as an input content part (None: nothing to send for it).

    Raises:
        InvalidMessage: audio, which the Responses API takes no input of.
    """
    if type(part) is TextPart:
        return _input_text(part.text) if part.text else None
    if type(part) is ImagePart:
        return _input_image(part)
    if type(part) is FilePart:
        return _input_file(part)
    if type(part) is AudioPart:
        raise InvalidMessage(
            f"{_PROVIDER} cannot carry an AudioPart in a {role} message "
            "(the Responses API takes no audio input; use OpenAIProvider, Chat Completions)"
        )
    return None  # ThinkingPart: reasoning travels as reasoning items, not as parts


_NO_MEDIA: Final = "the Responses API takes media in user messages and tool results only"


def _input_content(message: Message) -> list[dict[str, Any]]:
    """The content parts of a user (or system) message; media only from the user."""
    content = message.content
    if isinstance(content, str) or message.role != "user":
        return [_input_text(text_only(message, _PROVIDER, _NO_MEDIA))]
    blocks = [block for part in content if (block := _input_part(part, "user")) is not None]
    return blocks or [_input_text("")]  # what an empty str content has always sent


def _function_call_item(call: ToolCall) -> dict[str, Any]:
    return {
        "type": "function_call",
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments,
    }


# ``output`` is "a string or a list of input_text / input_image / input_file"
# (https://platform.openai.com/docs/api-reference/responses/create, function tool call output).
def _function_call_output_item(message: Message) -> dict[str, Any]:
    """``output`` is a str (the text parts joined) unless the result carries media:
    then the list of input parts the API also takes there."""
    content = message.content
    output: str | list[dict[str, Any]]
    if isinstance(content, str):
        output = content
    elif all(type(p) is TextPart or type(p) is ThinkingPart for p in content):
        output = message.text
    else:
        output = [block for p in content if (block := _input_part(p, "tool")) is not None]
    return {"type": "function_call_output", "call_id": message.tool_call_id, "output": output}


def _reasoning_items(message: Message) -> list[dict[str, Any]]:
    items = message.metadata.get(REASONING_METADATA)
    if not isinstance(items, list):
        return []
    return [dict(item) for item in items if isinstance(item, dict)]


def to_responses_input(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Convert a neutral history to Responses ``input`` items.

    - User and system messages become ``message`` items with ``input_text``
      parts; a user's images and files become ``input_image`` / ``input_file``
      parts (inline data as a ``data:`` URL). Assistant text becomes an
      ``output_text`` part of an assistant ``message`` item.
    - An assistant message's reasoning items (metadata ``openai_reasoning``)
      come first, then its text, then one ``function_call`` item per tool call.
    - A tool result becomes a ``function_call_output`` item (its ``output``
      the text, or a list of input parts when it carries media). A result whose
      call is not in the window (trimmed away) is dropped: the API rejects it.
    - Thinking parts are left out. Audio, and media on an assistant or system
      message, are refused before anything is sent.
    - Empty assistant text is left out; so is a message left with no item.
    """
    items: list[dict[str, Any]] = []
    calls_seen: set[str] = set()
    for m in messages:
        if m.role == "tool":
            if m.tool_call_id in calls_seen:
                items.append(_function_call_output_item(m))
        elif m.role == "assistant":
            items.extend(_reasoning_items(m))
            text = text_only(m, _PROVIDER, _NO_MEDIA)
            if text:
                items.append(_message_item("assistant", [_output_text(text)]))
            for call in m.tool_calls:
                calls_seen.add(call.id)
                items.append(_function_call_item(call))
        else:
            items.append(_message_item(m.role, _input_content(m)))
    return items


# -- reply -----------------------------------------------------------------------


class _Call:
    __slots__ = ("arguments", "call_id", "final", "name")

    def __init__(self) -> None:
        self.call_id: str | None = None
        self.name: str | None = None
        self.arguments: list[str] = []  # the deltas so far
        self.final: str | None = None  # the complete arguments, once the server sent them


class ResponsesEventParser:
    """Assembles one reply from Responses API stream events.

    ``feed`` returns the text an event carried ("" if none) and raises
    :class:`ProviderStreamError` on ``error`` or ``response.failed`` and on
    malformed data; ``done`` turns true at ``response.completed`` or
    ``response.incomplete``; ``message()`` builds the reply.
    """

    def __init__(self, *, provider: str = "openai-responses") -> None:
        self.provider = provider
        self.done = False
        self._text: list[str] = []
        self._items_with_text: set[str] = set()
        self._calls: dict[str, _Call] = {}  # by output item id, in arrival order
        self._reasoning: list[dict[str, Any]] = []
        self._refusal = False
        self._finish_reason: str | None = None
        self._usage: JSONValue = None
        self._model: str | None = None
        self._id: str | None = None

    def feed(self, event: ServerSentEvent) -> str:
        if self.done:
            return ""
        try:
            payload = json.loads(event.data)
        except ValueError as exc:
            raise ProviderStreamError(
                f"{self.provider}: malformed event data: {event.data[:200]!r}"
            ) from exc
        if not isinstance(payload, dict):
            raise ProviderStreamError(f"{self.provider}: event data is not an object")
        kind = payload.get("type", event.event)
        if kind == "response.output_text.delta":
            return self._text_delta(payload)
        if kind == "response.refusal.delta":
            text = self._text_delta(payload)
            if text:
                self._refusal = True
            return text
        if kind == "response.function_call_arguments.delta":
            call = self._call_for(payload)
            delta = payload.get("delta")
            if isinstance(delta, str):
                call.arguments.append(delta)
        elif kind == "response.function_call_arguments.done":
            arguments = payload.get("arguments")
            if isinstance(arguments, str):
                self._call_for(payload).final = arguments
        elif kind == "response.output_item.added":
            item = payload.get("item")
            if isinstance(item, dict) and item.get("type") == "function_call":
                self._function_call(item)
        elif kind == "response.output_item.done":
            return self._item_done(payload.get("item"))
        elif kind in ("response.created", "response.in_progress"):
            self._response(payload.get("response"))
        elif kind in _TERMINAL:
            response = self._response(payload.get("response"))
            if kind == "response.incomplete":
                details = response.get("incomplete_details")
                reason = details.get("reason") if isinstance(details, dict) else None
                self._finish_reason = reason if isinstance(reason, str) else "incomplete"
            else:
                self._finish_reason = "tool_calls" if self._calls else "stop"
            self.done = True
        elif kind == "response.failed":
            response = self._response(payload.get("response"))
            raise ProviderStreamError(self._failure("response failed", response.get("error")))
        elif kind == "error":
            # Real streams nest the fields under "error"; the SDK's type has them at the top.
            nested = payload.get("error")
            raise ProviderStreamError(
                self._failure(
                    "error event in stream", nested if isinstance(nested, dict) else payload
                )
            )
        # Reasoning summaries, content parts, annotations and later event types need nothing.
        return ""

    def _text_delta(self, payload: Mapping[str, Any]) -> str:
        delta = payload.get("delta")
        if not isinstance(delta, str) or not delta:
            return ""
        item_id = payload.get("item_id")
        if isinstance(item_id, str):
            self._items_with_text.add(item_id)
        self._text.append(delta)
        return delta

    def _call(self, item_id: object) -> _Call:
        key = item_id if isinstance(item_id, str) else f"#{len(self._calls)}"
        call = self._calls.get(key)
        if call is None:
            call = self._calls[key] = _Call()
        return call

    def _function_call(self, item: Mapping[str, Any]) -> _Call:
        call = self._call(item.get("id"))
        call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
        if isinstance(call_id, str) and call_id:
            call.call_id = call_id
        if isinstance(name, str) and name:
            call.name = name
        if isinstance(arguments, str) and arguments and not call.arguments:
            call.arguments.append(arguments)
        return call

    def _call_for(self, payload: Mapping[str, Any]) -> _Call:
        # Keyed by the output item id, which every argument event names.
        return self._call(payload.get("item_id"))

    def _item_done(self, item: object) -> str:
        if not isinstance(item, dict):
            return ""
        kind = item.get("type")
        if kind == "function_call":
            call = self._function_call(item)
            arguments = item.get("arguments")
            if isinstance(arguments, str):
                call.final = arguments
        elif kind == "reasoning":
            # The .done copy: the encrypted content in .added can be incomplete.
            self._reasoning.append(item)
        elif kind == "message":
            return self._message_text(item)
        return ""

    def _message_text(self, item: Mapping[str, Any]) -> str:
        """The text of a message item whose text arrived in no delta (some proxies)."""
        item_id = item.get("id")
        if isinstance(item_id, str) and item_id in self._items_with_text:
            return ""
        content = item.get("content")
        if not isinstance(content, list):
            return ""
        texts = []
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "output_text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif part.get("type") == "refusal" and isinstance(part.get("refusal"), str):
                if part["refusal"]:
                    self._refusal = True
                texts.append(part["refusal"])
        text = "".join(texts)
        if text:
            self._text.append(text)
        return text

    def _response(self, response: object) -> Mapping[str, Any]:
        if not isinstance(response, dict):
            return {}
        if isinstance(response.get("id"), str):
            self._id = response["id"]
        if isinstance(response.get("model"), str):
            self._model = response["model"]
        if isinstance(response.get("usage"), dict):
            self._usage = response["usage"]
        return response

    def _failure(self, what: str, error: object) -> str:
        detail: Mapping[str, Any] = error if isinstance(error, dict) else {}
        message = detail.get("message")
        if not isinstance(message, str) or not message:
            message = "unknown error"
        code = detail.get("code") or detail.get("type")
        suffix = f" ({code})" if isinstance(code, (str, int)) and code != "" else ""
        return f"{self.provider}: {what}: {message}{suffix}"

    def message(self) -> Message:
        """The assistant message assembled so far (call after ``done``)."""
        calls: list[ToolCall] = []
        for call in self._calls.values():
            if not call.call_id or not call.name:
                raise ProviderStreamError(f"{self.provider}: function call without call_id or name")
            arguments = call.final if call.final is not None else "".join(call.arguments)
            calls.append(ToolCall(call.call_id, call.name, arguments or "{}"))
        metadata: dict[str, JSONValue] = {
            "finish_reason": self._finish_reason,
            "usage": self._usage,
            "model": self._model,
            "provider": self.provider,
            "id": self._id,
        }
        if self._refusal:
            metadata["refusal"] = True
        if self._reasoning:
            metadata[REASONING_METADATA] = list(self._reasoning)
        try:
            return Message.assistant("".join(self._text), tool_calls=calls, **metadata)
        except InvalidMessage as exc:  # e.g. a non-finite number in usage
            raise ProviderStreamError(f"{self.provider}: unusable reply: {exc}") from exc
