"""The :class:`Message` model.

A message is what an LLM chat API takes: a role, text content, and for tool
use the assistant's ``tool_calls`` and the ``tool_call_id`` of each result.
How messages are stored is ``_codec.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._exceptions import InvalidMessage
from ._types import ROLES, JSONValue, Role

__all__ = ["Message", "ToolCall", "check_text"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call requested by the assistant.

    ``arguments`` is the JSON text the model produced, kept as a string because
    models can emit invalid JSON and the API expects it sent back verbatim.
    """

    id: str
    name: str
    arguments: str = "{}"

    def __post_init__(self) -> None:
        for attr in ("id", "name", "arguments"):
            value = getattr(self, attr)
            if not isinstance(value, str):
                raise InvalidMessage(f"ToolCall.{attr} must be str, got {type(value).__name__}")
            check_text(value, f"ToolCall.{attr}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ToolCall:
        """From the OpenAI wire shape (``{"id", "function": {"name", "arguments"}}``)
        or the flat one (``{"id", "name", "arguments"}``).

        Raises:
            InvalidMessage: neither shape, or arguments that are not a str.
        """
        function = data.get("function")
        source = function if isinstance(function, Mapping) else data
        try:
            return cls(data["id"], source["name"], source.get("arguments", "{}"))
        except KeyError:
            raise InvalidMessage(f"a tool call needs id and name, got {dict(data)!r}") from None


def check_text(value: str, what: str) -> None:
    """Refuse text that cannot be stored or sent: a lone surrogate is not UTF-8.

    Every text field is checked (not only the content): a surrogate in a
    name or in tool-call arguments would load and then fail the provider
    request with an untyped UnicodeEncodeError.
    """
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidMessage(
                f"{what} contains a lone surrogate, which cannot be stored as UTF-8"
            ) from None


def _check_json(value: object, path: str, depth: int = 0) -> None:
    if depth > 64:
        raise InvalidMessage(f"metadata nested too deeply at {path}")
    if isinstance(value, str):
        check_text(value, f"metadata value at {path}")
        return
    if value is None or isinstance(value, (bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidMessage(f"metadata value at {path} is not a finite number")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json(item, f"{path}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidMessage(f"metadata key at {path} must be str, got {key!r}")
            check_text(key, f"metadata key at {path}")
            _check_json(item, f"{path}.{key}", depth + 1)
        return
    raise InvalidMessage(
        f"metadata value at {path} is {type(value).__name__}, which is not JSON-serialisable"
    )


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message.

    Build them with the helpers (``Message.user("hi")``,
    ``Message.assistant("...", tool_calls=[...])``, ``Message.tool("42", tool_call_id=...)``)
    rather than positionally. Messages are immutable so that a loaded history can
    be shared without copying.

    Raises:
        InvalidMessage: unknown role, non-string content, tool_calls on a
            non-assistant message, or a tool result without ``tool_call_id``.
    """

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    metadata: Mapping[str, JSONValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.role, str) or self.role not in ROLES:
            raise InvalidMessage(
                f"unknown role {self.role!r}; expected one of system, user, assistant, tool"
            )
        if not isinstance(self.content, str):
            raise InvalidMessage(
                f"{self.role} message content must be str, got {type(self.content).__name__}"
            )
        check_text(self.content, f"{self.role} message content")
        if type(self.tool_calls) is not tuple:
            object.__setattr__(self, "tool_calls", tuple(self.tool_calls))
        if self.tool_calls:
            if self.role != "assistant":
                raise InvalidMessage(f"only assistant messages carry tool_calls, not {self.role}")
            calls = tuple(
                ToolCall.from_dict(call) if isinstance(call, Mapping) else call
                for call in self.tool_calls
            )
            for call in calls:
                if not isinstance(call, ToolCall):
                    raise InvalidMessage(f"tool_calls items must be ToolCall or dict, got {call!r}")
            object.__setattr__(self, "tool_calls", calls)
        if self.role == "tool":
            if not isinstance(self.tool_call_id, str) or not self.tool_call_id:
                raise InvalidMessage("a tool message needs tool_call_id (a non-empty str)")
            check_text(self.tool_call_id, "tool_call_id")
        elif self.tool_call_id is not None:
            raise InvalidMessage(f"only tool messages carry tool_call_id, not {self.role}")
        if self.name is not None:
            if not isinstance(self.name, str):
                raise InvalidMessage(f"name must be str or None, got {type(self.name).__name__}")
            check_text(self.name, "name")
        if self.metadata:
            if not isinstance(self.metadata, Mapping):
                raise InvalidMessage(
                    f"metadata must be a mapping, got {type(self.metadata).__name__}"
                )
            # A copy: the caller's dict changing later must not change this message.
            metadata = dict(self.metadata)
            _check_json(metadata, "metadata")
            object.__setattr__(self, "metadata", metadata)

    def __hash__(self) -> int:
        # Metadata (a dict) stays out of the hash; equal messages still hash equal.
        return hash((self.role, self.content, self.tool_calls, self.tool_call_id, self.name))

    @classmethod
    def system(cls, content: str, **metadata: JSONValue) -> Message:
        return cls("system", content, metadata=metadata)

    @classmethod
    def user(cls, content: str, *, name: str | None = None, **metadata: JSONValue) -> Message:
        return cls("user", content, name=name, metadata=metadata)

    @classmethod
    def assistant(
        cls,
        content: str = "",
        *,
        tool_calls: Sequence[ToolCall | Mapping[str, Any]] = (),
        **metadata: JSONValue,
    ) -> Message:
        calls = tuple(ToolCall.from_dict(c) if isinstance(c, Mapping) else c for c in tool_calls)
        return cls("assistant", content, tool_calls=calls, metadata=metadata)

    @classmethod
    def tool(cls, content: str, *, tool_call_id: str, **metadata: JSONValue) -> Message:
        return cls("tool", content, tool_call_id=tool_call_id, metadata=metadata)

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI-style dict (role/content/tool_calls/tool_call_id), for logging or APIs."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in self.tool_calls
            ]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            out["name"] = self.name
        return out
