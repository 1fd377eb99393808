"""The :class:`Message` model.

A message is what an LLM chat API takes: a role, text content, and for tool
use the assistant's ``tool_calls`` and the ``tool_call_id`` of each result.
How messages are stored is ``_codec.py``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from ._exceptions import InvalidMessage
from ._parts import PART_TYPES, Part, TextPart, ThinkingPart, part_from_dict
from ._types import ROLES, JSONValue, Role

if TYPE_CHECKING:
    from ._parts import _Media

__all__ = [
    "Message",
    "ToolCall",
    "check_text",
    "message_bytes",
    "stamped",
    "text_only",
    "with_article",
]


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


def json_copy(value: object, path: str, depth: int = 0) -> Any:
    """``value`` checked to be JSON (finite numbers, str keys, no lone surrogates, at
    most 64 deep), and copied as JSON would give it back (lists for tuples): a
    message keeps no object its caller may change later, and holds what a store's
    load returns."""
    if depth > 64:
        raise InvalidMessage(f"metadata nested too deeply at {path}")
    if isinstance(value, str):
        check_text(value, f"metadata value at {path}")
        return value
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidMessage(f"metadata value at {path} is not a finite number")
        return value
    if isinstance(value, (list, tuple)):
        return [json_copy(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidMessage(f"metadata key at {path} must be str, got {key!r}")
            check_text(key, f"metadata key at {path}")
            out[key] = json_copy(item, f"{path}.{key}", depth + 1)
        return out
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

    ``content`` is a str, or a sequence of parts (:class:`TextPart`,
    :class:`ImagePart`, :class:`FilePart`, :class:`AudioPart`,
    :class:`ThinkingPart`), kept as a tuple. ``id`` and ``created_at`` are set
    by the store when the turn is committed (None on a message not stored
    yet); equality compares what a message says, not where it is stored, so
    they are left out of it.

    Raises:
        InvalidMessage: unknown role, content that is neither a str nor parts,
            tool_calls on a non-assistant message, a tool result without
            ``tool_call_id``, text that cannot be stored (a lone surrogate).
    """

    role: Role
    content: str | tuple[Part, ...] = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    metadata: Mapping[str, JSONValue] = field(default_factory=dict)
    is_error: bool = False
    id: str | None = field(default=None, compare=False)
    created_at: datetime | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.role, str) or self.role not in ROLES:
            raise InvalidMessage(
                f"unknown role {self.role!r}; expected one of system, user, assistant, tool"
            )
        content = self.content
        if type(content) is str:
            check_text(content, f"{self.role} message content")
        else:
            object.__setattr__(self, "content", _parts_of(content, self.role))
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
        if self.is_error is not False:
            if self.is_error is not True:
                raise InvalidMessage(f"is_error must be a bool, got {self.is_error!r}")
            if self.role != "tool":
                raise InvalidMessage(f"only tool results carry is_error, not {self.role}")
        if self.name is not None:
            if not isinstance(self.name, str):
                raise InvalidMessage(f"name must be str or None, got {type(self.name).__name__}")
            check_text(self.name, "name")
        if self.metadata:
            if not isinstance(self.metadata, Mapping):
                raise InvalidMessage(
                    f"metadata must be a mapping, got {type(self.metadata).__name__}"
                )
            # A deep copy: the caller's dict (or a list in it) changing later must
            # not change this message, nor a window a store keeps in memory.
            given = self.metadata
            metadata = json_copy(given if type(given) is dict else dict(given), "metadata")
            object.__setattr__(self, "metadata", metadata)
        if self.id is not None or self.created_at is not None:
            self._check_identity()

    def _check_identity(self) -> None:
        if self.id is not None and (type(self.id) is not str or not self.id):
            raise InvalidMessage(f"id must be a non-empty str or None, got {self.id!r}")
        created = self.created_at
        if created is not None and (
            not isinstance(created, datetime) or created.utcoffset() is None
        ):
            raise InvalidMessage(f"created_at must be an aware datetime or None, got {created!r}")

    def __hash__(self) -> int:
        # Metadata (a dict) stays out of the hash; equal messages still hash equal.
        return hash((self.role, self.content, self.tool_calls, self.tool_call_id, self.name))

    @property
    def text(self) -> str:
        """The text: the str content, or the text parts joined (no separator; no thinking)."""
        content = self.content
        if type(content) is str:
            return content
        return "".join(p.text for p in content if type(p) is TextPart)

    @property
    def parts(self) -> tuple[Part, ...]:
        """The content as parts (a str content is one TextPart; "" is none)."""
        content = self.content
        if isinstance(content, str):
            return (TextPart(content),) if content else ()
        return content

    @classmethod
    def system(cls, content: str, **metadata: JSONValue) -> Message:
        return cls("system", content, metadata=metadata)

    @classmethod
    def user(
        cls, content: str | Sequence[Part], *, name: str | None = None, **metadata: JSONValue
    ) -> Message:
        return cls("user", _content(content), name=name, metadata=metadata)

    @classmethod
    def assistant(
        cls,
        content: str | Sequence[Part] = "",
        *,
        tool_calls: Sequence[ToolCall | Mapping[str, Any]] = (),
        **metadata: JSONValue,
    ) -> Message:
        calls = tuple(ToolCall.from_dict(c) if isinstance(c, Mapping) else c for c in tool_calls)
        return cls("assistant", _content(content), tool_calls=calls, metadata=metadata)

    @classmethod
    def tool(
        cls,
        content: str | Sequence[Part],
        *,
        tool_call_id: str,
        is_error: bool = False,
        **metadata: JSONValue,
    ) -> Message:
        """A tool's result; ``is_error=True`` when the tool failed (the model is told so)."""
        return cls(
            "tool", _content(content), tool_call_id=tool_call_id, is_error=is_error,
            metadata=metadata,
        )  # fmt: skip

    def replace(self, **changes: Any) -> Message:
        """A copy with ``changes`` (validated like a new message)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Everything the message holds, as JSON-ready data (:meth:`from_dict` reads it).

        ``content`` is a str or a list of part dicts; ``created_at`` is ISO 8601.
        Keys with nothing to say are left out, except role and content.
        """
        content = self.content
        out: dict[str, Any] = {
            "role": self.role,
            "content": content if isinstance(content, str) else [p.to_dict() for p in content],
        }
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
        if self.is_error:
            out["is_error"] = True
        if self.name is not None:
            out["name"] = self.name
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        if self.id is not None:
            out["id"] = self.id
        if self.created_at is not None:
            out["created_at"] = self.created_at.isoformat()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Message:
        """A message from :meth:`to_dict` (or the OpenAI-style shape it extends).

        Raises:
            InvalidMessage: the dict does not describe a valid message.
        """
        if not isinstance(data, Mapping):
            raise InvalidMessage(f"a message dict must be a mapping, got {type(data).__name__}")
        content = data.get("content", "")
        if content is None:
            content = ""
        if isinstance(content, list):
            content = tuple(part_from_dict(p) if isinstance(p, Mapping) else p for p in content)
        created = data.get("created_at")
        if isinstance(created, str):
            try:
                created = datetime.fromisoformat(created)
            except ValueError:
                raise InvalidMessage(f"created_at is not an ISO 8601 time: {created!r}") from None
        try:
            return cls(
                data["role"],
                content,
                tool_calls=tuple(ToolCall.from_dict(c) for c in data.get("tool_calls") or ()),
                tool_call_id=data.get("tool_call_id"),
                name=data.get("name"),
                metadata=data.get("metadata") or {},
                is_error=bool(data.get("is_error", False)),
                id=data.get("id"),
                created_at=created,
            )
        except KeyError:
            raise InvalidMessage("a message dict needs a role") from None


class _Unfrozen:
    """Message's exact slot layout without its frozen ``__setattr__``.

    A store builds a message for every one it loads or stamps, from values
    already checked. Filling this twin with plain attribute stores and then
    making it a Message (``__class__`` assignment, allowed between classes of
    one layout) costs a third of calling each slot's setter on a Message. The
    result is an ordinary, frozen Message.
    """

    __slots__ = Message.__slots__

    if TYPE_CHECKING:  # the slots' types, for the stores below
        role: Role
        content: str | tuple[Part, ...]
        tool_calls: tuple[ToolCall, ...]
        tool_call_id: str | None
        name: str | None
        metadata: Mapping[str, JSONValue]
        is_error: bool
        id: str | None
        created_at: datetime | None


# The twin must stay the same layout as Message, field for field.
assert _Unfrozen.__slots__ == tuple(f.name for f in dataclasses.fields(Message))


def stamped(message: Message, message_id: str, created_at: datetime) -> Message:
    """``message`` with the id and time its store gave it (values already checked:
    a store's own, so no re-validation on a commit's hot path)."""
    new = _Unfrozen()
    new.role = message.role
    new.content = message.content
    new.tool_calls = message.tool_calls
    new.tool_call_id = message.tool_call_id
    new.name = message.name
    new.metadata = message.metadata
    new.is_error = message.is_error
    new.id = message_id
    new.created_at = created_at
    new.__class__ = Message  # type: ignore[assignment]
    return cast("Message", new)


_TEXT_ROLES = frozenset(("system", "user", "assistant"))


def stored_text(
    role: object, content: str, message_id: str, created_at: datetime
) -> Message | None:
    """A stored text message (no tool calls, name or metadata) built without ``__init__``:
    the one check such a record needs, done here; None when the role needs more."""
    if role not in _TEXT_ROLES:
        return None
    if not content.isascii():
        check_text(content, f"{role} message content")
    new = _Unfrozen()
    new.role = cast("Role", role)
    new.content = content
    new.tool_calls = ()
    new.tool_call_id = None
    new.name = None
    new.metadata = {}
    new.is_error = False
    new.id = message_id
    new.created_at = created_at
    new.__class__ = Message  # type: ignore[assignment]
    return cast("Message", new)


def message_bytes(message: Message) -> int:
    """The UTF-8 bytes of a message's text, parts and tool calls: what size limits count.

    Inline media counts as its decoded bytes (not its base64).
    """
    content = message.content
    if type(content) is str:
        size = len(content) if content.isascii() else len(content.encode("utf-8", "surrogatepass"))
    else:
        size = 0
        for part in content:
            if type(part) is TextPart:
                size += len(part.text.encode("utf-8", "surrogatepass"))
            elif type(part) is ThinkingPart:
                size += len(part.text.encode("utf-8", "surrogatepass"))
                size += len(part.signature or "") + len(part.redacted or "")
            else:
                media = cast("_Media", part)
                size += media.size + len(media.url or "")
    for call in message.tool_calls:
        size += len(call.arguments.encode("utf-8", "surrogatepass")) + len(call.name)
    return size


def _content(content: str | Sequence[Part]) -> str | tuple[Part, ...]:
    return content if isinstance(content, str) else tuple(content)


def with_article(name: str) -> str:
    """``name`` with its article, for error messages: "an ImagePart", "a FilePart"."""
    return f"{'an' if name[0] in 'AEIOU' else 'a'} {name}"


def text_only(message: Message, provider: str, why: str | None = None) -> str:
    """The text of a message for a wire format that carries text only.

    Thinking is left out (it is the model's own, and optional to send back);
    any other part cannot be carried, and is refused before anything is sent.

    Raises:
        InvalidMessage: a part the provider cannot carry, naming both (and
            ``why``, the provider's rule, when given).
    """
    content = message.content
    if isinstance(content, str):
        return content
    for part in content:
        if type(part) is not TextPart and type(part) is not ThinkingPart:
            reason = f" ({why})" if why else ""
            raise InvalidMessage(
                f"{provider} cannot carry {with_article(type(part).__name__)} in "
                f"{with_article(message.role)} message{reason}"
            )
    return message.text


def _parts_of(content: object, role: str) -> tuple[Part, ...]:
    if isinstance(content, (str, bytes)) or not isinstance(content, Sequence):
        raise InvalidMessage(
            f"{role} message content must be a str or a sequence of parts, "
            f"got {type(content).__name__}"
        )
    parts = tuple(content)
    for i, part in enumerate(parts):
        if not isinstance(part, PART_TYPES):
            raise InvalidMessage(
                f"{role} message content[{i}] is {type(part).__name__}, not a part "
                "(TextPart, ImagePart, FilePart, AudioPart, ThinkingPart)"
            )
    return parts
