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
from ._arguments import arguments_object

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

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


def to_anthropic_messages(
    messages: Sequence[Message], system: str | None
) -> tuple[str | None, list[dict[str, Any]]]:
    """Convert a neutral history to Messages API ``(system, messages)``.

    - ``system`` and every system-role message are joined (blank line apart)
      into the top-level system prompt.
    - Tool results become ``tool_result`` blocks in a user message; assistant
      tool calls become ``tool_use`` blocks with the arguments parsed into
      ``input`` (arguments that are not a JSON object are sent as ``{}``).
    - Consecutive messages of the same role are merged so roles alternate; in
      a merged user message the ``tool_result`` blocks come first, as the API
      requires.
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
        text = text_only(m, "anthropic")
        if m.role == "system":
            if text:
                system_parts.append(text)
            continue
        blocks: list[dict[str, Any]] = []
        if m.role == "tool":
            role = "user"
            blocks.append({"type": "tool_result", "tool_use_id": m.tool_call_id, "content": text})
        else:
            role = m.role
            if text:
                blocks.append({"type": "text", "text": text})
            blocks.extend(_tool_use_block(c) for c in m.tool_calls)
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
        if item["role"] == "user":
            # Stable sort: tool results first, each group keeps its order.
            item["content"].sort(key=lambda b: b["type"] != "tool_result")
    return ("\n\n".join(system_parts) or None), out


class _ToolUse:
    __slots__ = ("id", "initial", "name", "parts")

    def __init__(self, tool_id: str, name: str, initial: object) -> None:
        self.id = tool_id
        self.name = name
        self.initial = initial
        self.parts: list[str] = []


class AnthropicEventParser:
    """Assembles one reply from Messages API stream events.

    ``feed`` returns the text an event carried ("" if none) and raises
    :class:`ProviderStreamError` on an ``error`` event or malformed data;
    ``done`` turns true at ``message_stop``; ``message()`` builds the reply.
    """

    def __init__(self, *, provider: str = "anthropic") -> None:
        self.provider = provider
        self.done = False
        self._text: list[str] = []
        self._tools: dict[int, _ToolUse] = {}
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
            return Message.assistant("".join(self._text), tool_calls=calls, **metadata)
        except InvalidMessage as exc:
            raise ProviderStreamError(f"{self.provider}: unusable reply: {exc}") from exc
