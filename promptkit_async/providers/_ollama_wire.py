"""The Ollama native chat API (``POST /api/chat``) wire format, sans-IO.

Request building (neutral :class:`Message` list -> Ollama ``messages``) and
the assembly of a reply from the NDJSON lines it streams: one JSON object per
line, ``message.content`` carrying a piece of text or ``message.tool_calls``
whole calls, and a last line with ``done: true``, the ``done_reason`` and the
token counts. No I/O here: ``_ollama.py`` sends what this builds.

A message's images go beside its text, in ``images``: raw base64 (no ``data:``
prefix), the stored string as is. That is all the media ``/api/chat`` takes:
an image by URL, a file or audio is refused before anything is sent. Thinking
is left out: the parser keeps none of Ollama's own, and another provider's
reasoning is not this model's to continue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from .._exceptions import InvalidMessage, ProviderStreamError
from .._messages import Message, ToolCall, with_article
from .._parts import ImagePart, TextPart, ThinkingPart
from ._arguments import arguments_object, arguments_text

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from .._types import JSONValue

__all__ = ["OllamaLineParser", "to_ollama_messages"]


# -- request ---------------------------------------------------------------------
# One function per message or part kind. Message shape: role, content, images (a list
# of base64 strings, no data: prefix), tool_calls, tool_name, tool_call_id
# (https://github.com/ollama/ollama/blob/main/docs/api.md#generate-a-chat-completion;
# api/types.go Message).

_IMAGE_ROLES: Final = frozenset({"user", "tool"})
"""Roles whose images are sent: what the user shows, and what a tool returns."""


def _images(message: Message) -> list[str]:
    """The base64 of each inline image; the text is ``message.text``.

    Raises:
        InvalidMessage: an image by URL, a file, audio, or an image on a role
            that takes none, naming the part.
    """
    content = message.content
    if isinstance(content, str):
        return []
    images: list[str] = []
    for part in content:
        if type(part) is TextPart or type(part) is ThinkingPart:
            continue
        name = type(part).__name__
        if type(part) is not ImagePart:
            raise InvalidMessage(
                f"ollama cannot carry {with_article(name)} in {with_article(message.role)} message "
                "(/api/chat takes text and inline images only)"
            )
        if part.base64 is None:
            raise InvalidMessage(
                "ollama cannot carry an ImagePart by URL (images are inline base64 only): "
                "fetch it and pass ImagePart(data=..., media_type=...)"
            )
        if message.role not in _IMAGE_ROLES:
            raise InvalidMessage(
                f"ollama cannot carry an ImagePart in {with_article(message.role)} message "
                "(images go in user messages and tool results only)"
            )
        images.append(part.base64)
    return images


def _text_message(role: str, message: Message) -> dict[str, Any]:
    content = message.content
    if isinstance(content, str):
        return {"role": role, "content": content}
    images = _images(message)
    out: dict[str, Any] = {"role": role, "content": message.text}
    if images:
        out["images"] = images
    return out


def _tool_call(call: ToolCall) -> dict[str, Any]:
    # Ollama reads arguments as an object; the id is read by servers that know it
    # (0.12.10 and later) and ignored by older ones.
    return {
        "id": call.id,
        "function": {"name": call.name, "arguments": arguments_object(call.arguments)},
    }


def _tool_result(message: Message, name: str | None) -> dict[str, Any]:
    out = _text_message("tool", message)
    if name is not None:
        out["tool_name"] = name
    out["tool_call_id"] = message.tool_call_id
    return out


def to_ollama_messages(messages: Sequence[Message], system: str | None) -> list[dict[str, Any]]:
    """Convert a neutral history to Ollama ``messages``.

    - The system prompt goes first, as a ``system`` message.
    - Text parts are joined into ``content``; inline images of a user message
      or a tool result go in ``images``; thinking is left out.
    - Assistant tool calls are sent with their arguments as an object
      (arguments that are not a JSON object are sent as ``{}``).
    - A tool result is a ``tool`` message naming the function it answers
      (``tool_name``, found by ``tool_call_id`` in the nearest preceding
      assistant message that made the call), which is how Ollama's chat
      templates match results to calls.
    """
    out: list[dict[str, Any]] = []
    if system:
        out.append({"role": "system", "content": system})
    names: dict[str, str] = {}
    for m in messages:
        if m.role == "tool":
            out.append(_tool_result(m, names.get(m.tool_call_id or "")))
            continue
        item = _text_message(m.role, m)
        if m.tool_calls:
            item["tool_calls"] = [_tool_call(c) for c in m.tool_calls]
            names.update((c.id, c.name) for c in m.tool_calls)
        out.append(item)
    return out


# -- reply -----------------------------------------------------------------------


class OllamaLineParser:
    """Assembles one reply from the JSON values of ``/api/chat`` NDJSON lines.

    ``feed`` returns the text a line carried ("" if none; ``thinking`` is not
    reply text) and raises :class:`ProviderStreamError` on an ``error`` line
    or a line that is not an object; ``done`` turns true at the ``done: true``
    line; ``message()`` builds the reply.
    """

    def __init__(self, *, provider: str = "ollama") -> None:
        self.provider = provider
        self.done = False
        self._text: list[str] = []
        self._calls: list[ToolCall] = []
        self._finish_reason: str | None = None
        self._usage: dict[str, JSONValue] = {}
        self._model: str | None = None

    def feed(self, line: object) -> str:
        if self.done:
            return ""
        if not isinstance(line, dict):
            raise ProviderStreamError(f"{self.provider}: stream line is not an object")
        if "error" in line:
            # After the first byte Ollama reports a failure as one more line, status still 200.
            error = line["error"]
            detail = error if isinstance(error, str) and error else _nested_message(error)
            raise ProviderStreamError(f"{self.provider}: error in stream: {detail}")
        if isinstance(line.get("model"), str):
            self._model = line["model"]
        text = ""
        message = line.get("message")
        if isinstance(message, dict):
            content = message.get("content")
            if isinstance(content, str):
                text = content
            calls = message.get("tool_calls")
            if isinstance(calls, list):
                for call in calls:
                    if isinstance(call, dict):
                        self._tool_call(call)
        if line.get("done") is True:
            self._finish(line)
        if text:
            self._text.append(text)
        return text

    def _tool_call(self, call: Mapping[str, Any]) -> None:
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise ProviderStreamError(f"{self.provider}: tool call without a name")
        given = call.get("id")
        # Servers before 0.12.10 send no id: number the calls of this reply.
        call_id = given if isinstance(given, str) and given else f"call_{len(self._calls) + 1}"
        self._calls.append(ToolCall(call_id, name, arguments_text(function.get("arguments"))))

    def _finish(self, line: Mapping[str, Any]) -> None:
        self.done = True
        if isinstance(line.get("done_reason"), str):
            self._finish_reason = line["done_reason"]
        for key in ("prompt_eval_count", "eval_count"):
            value = line.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                self._usage[key] = value

    def message(self) -> Message:
        """The assistant message assembled so far (call after ``done``)."""
        metadata: dict[str, JSONValue] = {
            "finish_reason": self._finish_reason,
            "usage": dict(self._usage) or None,
            "model": self._model,
            "provider": self.provider,
            "id": None,
        }
        try:
            return Message.assistant("".join(self._text), tool_calls=self._calls, **metadata)
        except InvalidMessage as exc:
            raise ProviderStreamError(f"{self.provider}: unusable reply: {exc}") from exc


def _nested_message(error: object) -> str:
    if isinstance(error, dict) and isinstance(error.get("message"), str) and error["message"]:
        return str(error["message"])
    return "unknown error"
