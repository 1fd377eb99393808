"""The Anthropic Messages wire format, sans-IO.

Converts the neutral :class:`Message` history into a list the Messages API
accepts, and assembles a reply from its streaming events (``message_start``,
``content_block_start/delta/stop``, ``message_delta``, ``message_stop``,
``ping``, ``error``). No I/O here: ``_anthropic.py`` sends what this builds.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

from .._exceptions import InvalidMessage, ProviderStreamError
from .._messages import Message, ToolCall, text_only
from .._parts import AudioPart, FilePart, ImagePart, TextPart, ThinkingPart
from ._arguments import arguments_object

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from .._parts import Part
    from .._types import JSONValue
    from ._sse import ServerSentEvent

__all__ = ["ANTHROPIC_VERSION", "AnthropicEventParser", "to_anthropic_messages"]

ANTHROPIC_VERSION: Final = "2023-06-01"


def _tool_use_block(call: ToolCall) -> dict[str, Any]:
    return {
        "type": "tool_use",
        "id": call.id,
        "name": call.name,
        "input": arguments_object(call.arguments),
    }


_THINKING: Final = frozenset({"thinking", "redacted_thinking"})


def _source(part: ImagePart | FilePart) -> dict[str, Any]:
    """Where the API finds the media: inline base64 as stored (never re-encoded), or a URL."""
    if part.base64 is None:
        return {"type": "url", "url": part.url}
    return {"type": "base64", "media_type": part.media_type, "data": part.base64}


def _media_block(part: Part, role: str) -> dict[str, Any] | None:
    """A text, image or document block for ``part`` (None: nothing to send).

    Thinking is left out here: a user's or a tool's message has no place for
    it, and an assistant's is placed by :func:`_assistant_blocks`.

    Raises:
        InvalidMessage: audio, which the Messages API does not take.
    """
    if type(part) is TextPart:
        return {"type": "text", "text": part.text} if part.text else None
    if type(part) is ImagePart:
        return {"type": "image", "source": _source(part)}
    if type(part) is FilePart:
        block: dict[str, Any] = {"type": "document", "source": _source(part)}
        if part.filename is not None:
            block["title"] = part.filename
        return block
    if type(part) is AudioPart:
        raise InvalidMessage(
            f"anthropic cannot carry an AudioPart in a {role} message "
            "(the Messages API takes no audio input)"
        )
    return None


def _user_blocks(m: Message) -> list[dict[str, Any]]:
    content = m.content
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return [block for part in content if (block := _media_block(part, m.role)) is not None]


def _tool_result_block(m: Message) -> dict[str, Any]:
    """A ``tool_result``: str content as is, parts as text, image and document blocks."""
    content = m.content
    result: Any = content if isinstance(content, str) else _user_blocks(m) or ""
    block: dict[str, Any] = {
        "type": "tool_result",
        "tool_use_id": m.tool_call_id,
        "content": result,
    }
    if m.is_error:
        block["is_error"] = True
    return block


def _thinking_block(part: ThinkingPart) -> dict[str, Any] | None:
    if part.redacted is not None:
        return {"type": "redacted_thinking", "data": part.redacted}
    if part.signature is None:
        # Unsigned thinking (another provider's, or made up) is refused by the API,
        # which only takes back the blocks it signed; it is optional to send, so omit it.
        return None
    return {"type": "thinking", "thinking": part.text, "signature": part.signature}


def _assistant_blocks(m: Message) -> list[dict[str, Any]]:
    """Thinking first (the API wants it back unchanged, ahead of the text and the
    ``tool_use`` that followed it), then text, then the tool calls."""
    content = m.content
    blocks: list[dict[str, Any]] = []
    if isinstance(content, str):
        if content:
            blocks.append({"type": "text", "text": content})
    else:
        text: list[dict[str, Any]] = []
        for part in content:
            if type(part) is ThinkingPart:
                if (thinking := _thinking_block(part)) is not None:
                    blocks.append(thinking)
            elif type(part) is TextPart:
                if part.text:
                    text.append({"type": "text", "text": part.text})
            else:
                raise InvalidMessage(
                    f"anthropic cannot carry a {type(part).__name__} in an assistant message "
                    "(the Messages API takes media in user messages and tool results only)"
                )
        blocks.extend(text)
    blocks.extend(_tool_use_block(c) for c in m.tool_calls)
    return blocks


def to_anthropic_messages(
    messages: Sequence[Message], system: str | None
) -> tuple[str | None, list[dict[str, Any]]]:
    """Convert a neutral history to Messages API ``(system, messages)``.

    - ``system`` and every system-role message are joined (blank line apart)
      into the top-level system prompt.
    - Tool results become ``tool_result`` blocks in a user message (with
      ``is_error`` for a failed tool); assistant tool calls become ``tool_use``
      blocks with the arguments parsed into ``input`` (arguments that are not
      a JSON object are sent as ``{}``).
    - User parts become ``text``, ``image`` and ``document`` blocks; assistant
      thinking becomes ``thinking`` / ``redacted_thinking`` blocks, first in
      the turn. Audio, and media on an assistant message, are refused.
    - Consecutive messages of the same role are merged so roles alternate; in
      a merged user message the ``tool_result`` blocks come first, and in a
      merged assistant message the thinking blocks do, as the API requires.
    - Messages before the first user message (an assistant reply or tool
      result whose question was trimmed away) are dropped: the API requires
      the list to start with a user turn, and inventing one would put words
      in the user's mouth.
    - Empty text is left out (the API rejects empty text blocks); a message
      left with no content is dropped.
    """
    system_parts = [system] if system else []
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            text = text_only(m, "anthropic")
            if text:
                system_parts.append(text)
            continue
        role = "user" if m.role == "tool" else m.role
        if m.role == "tool":
            blocks = [_tool_result_block(m)]
        elif m.role == "user":
            blocks = _user_blocks(m)
        else:
            blocks = _assistant_blocks(m)
        if not blocks:
            continue
        if not out and role != "user":
            continue
        if not out and m.role == "tool":
            continue  # a result whose tool_use was trimmed away: the API would reject it
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    for item in out:
        # Stable sorts: each group keeps its order.
        if item["role"] == "user":
            item["content"].sort(key=lambda b: b["type"] != "tool_result")
        else:
            item["content"].sort(key=lambda b: b["type"] not in _THINKING)
    return ("\n\n".join(system_parts) or None), out


class _ToolUse:
    __slots__ = ("id", "initial", "name", "parts")

    def __init__(self, tool_id: str, name: str, initial: object) -> None:
        self.id = tool_id
        self.name = name
        self.initial = initial
        self.parts: list[str] = []


class _Thinking:
    __slots__ = ("redacted", "signature", "text")

    def __init__(self, text: str = "", signature: str = "", redacted: str | None = None) -> None:
        self.text = [text] if text else []
        self.signature = [signature] if signature else []
        self.redacted = redacted

    def part(self) -> ThinkingPart:
        if self.redacted is not None:
            return ThinkingPart(redacted=self.redacted)
        return ThinkingPart("".join(self.text), signature="".join(self.signature) or None)


class AnthropicEventParser:
    """Assembles one reply from Messages API stream events.

    ``feed`` returns the text an event carried ("" if none) and raises
    :class:`ProviderStreamError` on an ``error`` event or malformed data;
    ``done`` turns true at ``message_stop``; ``message()`` builds the reply.
    Thinking is never returned by ``feed`` (it is not reply text); it is kept,
    with its signature, for ``message()``, since the API wants it sent back.
    """

    def __init__(self, *, provider: str = "anthropic") -> None:
        self.provider = provider
        self.done = False
        self._text: list[str] = []
        self._tools: dict[int, _ToolUse] = {}
        self._thinking: dict[int, _Thinking] = {}
        self._stop_reason: str | None = None
        self._stop_sequence: str | None = None
        self._usage: dict[str, Any] = {}
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
        if kind == "content_block_delta":
            return self._block_delta(payload)
        if kind == "message_start":
            message = payload.get("message")
            if isinstance(message, dict):
                if isinstance(message.get("id"), str):
                    self._id = message["id"]
                if isinstance(message.get("model"), str):
                    self._model = message["model"]
                if isinstance(message.get("usage"), dict):
                    self._usage.update(message["usage"])
        elif kind == "content_block_start":
            return self._block_start(payload)
        elif kind == "message_delta":
            delta = payload.get("delta")
            if isinstance(delta, dict):
                if isinstance(delta.get("stop_reason"), str):
                    self._stop_reason = delta["stop_reason"]
                if isinstance(delta.get("stop_sequence"), str):
                    self._stop_sequence = delta["stop_sequence"]
            if isinstance(payload.get("usage"), dict):
                # Counts here are cumulative: they replace, not add to, the start's.
                self._usage.update(payload["usage"])
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            error = payload.get("error")
            detail: Mapping[str, Any] = error if isinstance(error, dict) else {}
            message = detail.get("message") or "unknown error"
            error_type = detail.get("type") or "error"
            raise ProviderStreamError(
                f"{self.provider}: error event in stream: {error_type}: {message}"
            )
        # ping, content_block_stop and event types added later need nothing.
        return ""

    def _index(self, payload: Mapping[str, Any]) -> int:
        index = payload.get("index")
        if not isinstance(index, int):
            raise ProviderStreamError(f"{self.provider}: content block event without index")
        return index

    def _block_start(self, payload: Mapping[str, Any]) -> str:
        block = payload.get("content_block")
        if not isinstance(block, dict):
            return ""
        if block.get("type") == "text":
            text = block.get("text")
            if isinstance(text, str) and text:
                self._text.append(text)
                return text
        elif block.get("type") == "tool_use":
            tool_id, name = block.get("id"), block.get("name")
            if not isinstance(tool_id, str) or not isinstance(name, str):
                raise ProviderStreamError(f"{self.provider}: tool_use block without id or name")
            self._tools[self._index(payload)] = _ToolUse(tool_id, name, block.get("input"))
        elif block.get("type") == "thinking":
            text, signature = block.get("thinking"), block.get("signature")
            self._thinking[self._index(payload)] = _Thinking(
                text if isinstance(text, str) else "",
                signature if isinstance(signature, str) else "",
            )
        elif block.get("type") == "redacted_thinking":
            data = block.get("data")
            if not isinstance(data, str):
                raise ProviderStreamError(f"{self.provider}: redacted_thinking block without data")
            self._thinking[self._index(payload)] = _Thinking(redacted=data)
        return ""

    def _block_delta(self, payload: Mapping[str, Any]) -> str:
        delta = payload.get("delta")
        if not isinstance(delta, dict):
            return ""
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text")
            if isinstance(text, str) and text:
                self._text.append(text)
                return text
        elif kind == "input_json_delta":
            tool = self._tools.get(self._index(payload))
            if tool is None:
                raise ProviderStreamError(
                    f"{self.provider}: input_json_delta for a block that is not a tool_use"
                )
            partial = delta.get("partial_json")
            if isinstance(partial, str):
                tool.parts.append(partial)
        elif kind == "thinking_delta" or kind == "signature_delta":
            index = payload.get("index")
            thinking = self._thinking.get(index) if isinstance(index, int) else None
            if thinking is None or thinking.redacted is not None:
                return ""  # not a thinking block this parser saw start: nothing to add it to
            if kind == "thinking_delta":
                piece = delta.get("thinking")
                if isinstance(piece, str):
                    thinking.text.append(piece)
            else:
                piece = delta.get("signature")
                if isinstance(piece, str):
                    thinking.signature.append(piece)
        return ""

    def message(self) -> Message:
        """The assistant message assembled so far (call after ``done``)."""
        calls = []
        for index in sorted(self._tools):
            tool = self._tools[index]
            arguments = "".join(tool.parts)
            if not arguments.strip():
                initial = tool.initial if isinstance(tool.initial, dict) else {}
                arguments = json.dumps(initial, ensure_ascii=False)
            calls.append(ToolCall(tool.id, tool.name, arguments))
        usage: dict[str, JSONValue] = dict(self._usage)
        metadata: dict[str, JSONValue] = {
            "finish_reason": self._stop_reason,
            "usage": usage or None,
            "model": self._model,
            "provider": self.provider,
            "id": self._id,
        }
        if self._stop_sequence is not None:
            metadata["stop_sequence"] = self._stop_sequence
        try:
            text = "".join(self._text)
            content: str | list[Part] = text
            if self._thinking:
                # Block order, thinking first: what to_anthropic_messages sends back.
                content = [self._thinking[i].part() for i in sorted(self._thinking)]
                if text:
                    content.append(TextPart(text))
            return Message.assistant(content, tool_calls=calls, **metadata)
        except InvalidMessage as exc:
            raise ProviderStreamError(f"{self.provider}: unusable reply: {exc}") from exc
