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
ahead of that message's other items.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

from .._exceptions import InvalidMessage, ProviderStreamError
from .._messages import Message, ToolCall, text_only

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from .._types import JSONValue
    from ._sse import ServerSentEvent

__all__ = ["REASONING_METADATA", "ResponsesEventParser", "to_responses_input"]

REASONING_METADATA: Final = "openai_reasoning"
"""The assistant metadata key holding the raw reasoning items of a reply."""

_TERMINAL: Final = frozenset({"response.completed", "response.incomplete"})


# -- request ---------------------------------------------------------------------
# One function per item or part kind: messages carry text only today, and a
# new part kind (images, files) is one more function here.


def _input_text(text: str) -> dict[str, Any]:
    return {"type": "input_text", "text": text}


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": []}


def _message_item(role: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "message", "role": role, "content": content}


def _input_content(message: Message) -> list[dict[str, Any]]:
    """The content parts of a user (or system) message."""
    return [_input_text(text_only(message, "openai responses"))]


def _function_call_item(call: ToolCall) -> dict[str, Any]:
    return {
        "type": "function_call",
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments,
    }


def _function_call_output_item(message: Message) -> dict[str, Any]:
    return {
        "type": "function_call_output",
        "call_id": message.tool_call_id,
        "output": text_only(message, "openai responses"),
    }


def _reasoning_items(message: Message) -> list[dict[str, Any]]:
    items = message.metadata.get(REASONING_METADATA)
    if not isinstance(items, list):
        return []
    return [dict(item) for item in items if isinstance(item, dict)]


def to_responses_input(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Convert a neutral history to Responses ``input`` items.

    - User and system messages become ``message`` items with ``input_text``
      parts; assistant text becomes an ``output_text`` part of an assistant
      ``message`` item.
    - An assistant message's reasoning items (metadata ``openai_reasoning``)
      come first, then its text, then one ``function_call`` item per tool call.
    - A tool result becomes a ``function_call_output`` item. A result whose
      call is not in the window (trimmed away) is dropped: the API rejects it.
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
            text = text_only(m, "openai responses")
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
