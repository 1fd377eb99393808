"""Responses-API input items as promptkit messages, and back, losslessly (pure, no I/O).

openai-agents keeps a conversation as a list of Responses input items (plain
JSON objects). Each item is stored as exactly one :class:`Message`, so that a
window of N messages is N items and removing the newest message removes the
newest item. The mapping keeps what promptkit can show as a message:

- a ``message`` item (user, assistant, system; ``developer`` as a system
  message) is a message of that role, its ``input_text`` / ``output_text``
  parts :class:`TextPart`, ``input_image`` an :class:`ImagePart` and
  ``input_file`` a :class:`FilePart` (inline ``data:`` URLs as inline bytes);
- ``function_call`` is an assistant message with one :class:`ToolCall`, and
  ``function_call_output`` a ``tool`` message answering it;
- ``reasoning`` is an empty assistant message holding the item in
  ``metadata["openai_reasoning"]``, where the Responses provider looks for it;
- anything else (a hosted tool call, an item type newer than this code) is an
  empty assistant message holding the item verbatim.

Whatever an item has beyond that (ids, statuses, annotations, a key order
aside) is kept in ``metadata["openai_agents"]``: ``extra`` (fields of the
item) and ``part_extra`` (fields of each content part). Before a message is
returned, :func:`to_message` renders it back and compares the result with the
item; on any difference the whole item is kept verbatim instead (``item``), so
the mapping is lossless by construction, and compact when the item is plain.

Messages not written from items (a promptkit ``Session``'s) render as the
items they stand for: an assistant message with text and two tool calls is
three items. Thinking and audio parts have no Responses input and are left out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, cast

from .._exceptions import InvalidMessage
from .._messages import Message, ToolCall
from .._parts import FilePart, ImagePart, TextPart
from ..providers._responses_wire import REASONING_METADATA

if TYPE_CHECKING:
    from .._parts import Part
    from .._types import JSONValue, Role

__all__ = ["ITEM_METADATA", "items_of", "to_message"]

ITEM_METADATA: Final = "openai_agents"
"""The metadata key holding what an item has beyond its message."""

_ROLES: Final[dict[str, Role]] = {
    "user": "user",
    "assistant": "assistant",
    "system": "system",
    "developer": "system",
}
_DATA_URL: Final = re.compile(r"data:([\w.+-]+/[\w.+-]+);base64,([A-Za-z0-9+/]*={0,2})", re.ASCII)
_dumps = json.JSONEncoder(sort_keys=True, ensure_ascii=False, allow_nan=False).encode


class _Unmapped(Exception):
    """The item (or a part of it) has no message equivalent: it is kept verbatim."""


_SCALARS: Final = frozenset((str, int, float, bool, type(None)))


def copy_json(value: Any) -> Any:
    """A deep copy of JSON data as dicts and lists (scalars shared)."""
    if type(value) is dict:
        return {k: v if type(v) in _SCALARS else copy_json(v) for k, v in value.items()}
    if type(value) is list:
        return [v if type(v) in _SCALARS else copy_json(v) for v in value]
    if isinstance(value, Mapping):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [copy_json(v) for v in value]
    return value


# -- message -> items --------------------------------------------------------------------


def _text_type(role: str) -> str:
    return "output_text" if role == "assistant" else "input_text"


def _data_url(media_type: str | None, b64: str) -> str:
    return f"data:{media_type or 'application/octet-stream'};base64,{b64}"


def _block(part: Part, role: str) -> dict[str, Any] | None:
    """The content part of an item for ``part`` (None: one with no Responses input)."""
    if type(part) is TextPart:
        return {"type": _text_type(role), "text": part.text}
    if type(part) is ImagePart:
        url = part.url if part.base64 is None else _data_url(part.media_type, part.base64)
        block: dict[str, Any] = {"type": "input_image", "image_url": url}
        if part.detail is not None:
            block["detail"] = part.detail
        return block
    if type(part) is FilePart:
        if part.base64 is None:
            block = {"type": "input_file", "file_url": part.url}
        else:
            block = {"type": "input_file", "file_data": _data_url(part.media_type, part.base64)}
        if part.filename is not None:
            block["filename"] = part.filename
        return block
    return None  # ThinkingPart, AudioPart


def _blocks(message: Message, part_extra: list[Any] | None) -> list[dict[str, Any]]:
    content = cast("tuple[Part, ...]", message.content)
    out: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        block = _block(part, message.role)
        if block is None:
            continue
        if part_extra is not None and i < len(part_extra) and isinstance(part_extra[i], dict):
            block.update(copy_json(part_extra[i]))
        out.append(block)
    return out


def _content(
    message: Message, part_extra: list[Any] | None, text_part: Any
) -> str | list[dict[str, Any]]:
    content = message.content
    if not isinstance(content, str):
        return _blocks(message, part_extra)
    if type(text_part) is dict:  # a list of one text part, stored as the text
        return [{"type": _text_type(message.role), "text": content, **copy_json(text_part)}]
    return content


def _call_item(call: ToolCall) -> dict[str, Any]:
    return {
        "arguments": call.arguments,
        "call_id": call.id,
        "name": call.name,
        "type": "function_call",
    }


def items_of(message: Message) -> list[dict[str, Any]]:
    """The items ``message`` stands for, oldest first (one for a message written from an
    item; new objects, free for the caller to change)."""
    metadata = message.metadata
    kept = metadata.get(ITEM_METADATA) if metadata else None
    extra: Any = None
    part_extra: list[Any] | None = None
    text_part: Any = None
    if type(kept) is dict:
        if "item" in kept:
            return [copy_json(kept["item"])]
        extra = kept.get("extra")
        found = kept.get("part_extra")
        part_extra = found if type(found) is list else None
        text_part = kept.get("text_part")
    role = message.role
    items: list[dict[str, Any]]
    if role == "tool":
        items = [
            {
                "call_id": message.tool_call_id,
                "output": _content(message, part_extra, text_part),
                "type": "function_call_output",
            }
        ]
    elif role == "assistant":
        items = []
        reasoning = metadata.get(REASONING_METADATA) if metadata else None
        if type(reasoning) is list:
            items.extend(copy_json(r) for r in reasoning if type(r) is dict)
        content = message.content
        if content or not (items or message.tool_calls):
            items.append({"content": _content(message, part_extra, text_part), "role": role})
        items.extend(_call_item(call) for call in message.tool_calls)
    else:
        items = [{"content": _content(message, part_extra, text_part), "role": role}]
    if type(extra) is dict and len(items) == 1:
        items[0].update(copy_json(extra))
    return items


# -- item -> message ---------------------------------------------------------------------


def _media(url: object) -> tuple[str | None, str | None, str | None]:
    """(url, base64, media type): an inline ``data:`` URL as its bytes, else the URL."""
    if type(url) is not str:
        raise _Unmapped
    found = _DATA_URL.fullmatch(url)
    if found is None:
        return url, None, None
    return None, found.group(2), found.group(1)


def _part(block: object, role: str) -> tuple[Part, dict[str, Any]]:
    """A content part and what the block has beyond it."""
    if type(block) is not dict:
        raise _Unmapped
    kind = block.get("type")
    part: Part
    if kind == "input_text" or kind == "output_text":
        text = block.get("text")
        if type(text) is not str:
            raise _Unmapped
        part = TextPart(text)
    elif kind == "input_image":
        url, b64, media_type = _media(block.get("image_url"))
        detail = block.get("detail")
        detail = detail if type(detail) is str else None
        part = ImagePart(url=url, _base64=b64, media_type=media_type, detail=detail)
    elif kind == "input_file":
        filename = block.get("filename")
        filename = filename if type(filename) is str else None
        if "file_data" in block:
            url, b64, media_type = _media(block["file_data"])
            if b64 is None:
                raise _Unmapped  # raw base64 of no stated type: kept as it is
            part = FilePart(_base64=b64, media_type=media_type, filename=filename)
        else:
            url = block.get("file_url")
            if type(url) is not str:
                raise _Unmapped  # a file_id: kept as it is
            part = FilePart(url=url, filename=filename)
    else:
        raise _Unmapped
    rendered = _block(part, role)
    assert rendered is not None
    return part, _beyond(block, rendered)


def _beyond(given: Mapping[str, Any], rendered: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of ``given`` that ``rendered`` lacks or holds otherwise (a field only
    ``rendered`` has cannot be recorded: that shape is not mapped)."""
    if any(k not in given for k in rendered):
        raise _Unmapped
    return {k: v for k, v in given.items() if k not in rendered or _dumps(v) != _dumps(rendered[k])}


def _parts(content: list[Any], role: str, kept: dict[str, JSONValue]) -> str | tuple[Part, ...]:
    """A list of content parts as message content; what the parts have beyond that
    goes in ``kept``. One text part is kept as the text (a record that reads faster)."""
    mapped = [_part(block, role) for block in content]
    if len(mapped) == 1 and type(mapped[0][0]) is TextPart:
        part, extra = mapped[0]
        kept["text_part"] = extra
        return cast("TextPart", part).text
    if any(extra for _, extra in mapped):
        kept["part_extra"] = [extra for _, extra in mapped]
    return tuple(part for part, _ in mapped)


def _message_item(item: dict[str, Any]) -> Message:
    role = item.get("role")
    view_role = _ROLES.get(role) if type(role) is str else None
    if view_role is None:
        raise _Unmapped
    content = item.get("content")
    kept: dict[str, JSONValue] = {}
    if type(content) is str:
        parts: str | tuple[Part, ...] = content
    elif type(content) is list:
        parts = _parts(content, view_role, kept)
    else:
        raise _Unmapped
    extra = {k: v for k, v in item.items() if k != "content" and (k != "role" or v != view_role)}
    return Message(view_role, parts, metadata=_kept(kept, extra))


def _function_call(item: dict[str, Any]) -> Message:
    call = ToolCall(item["call_id"], item["name"], item["arguments"])
    extra = _beyond(item, _call_item(call))
    return Message("assistant", "", tool_calls=(call,), metadata=_kept({}, extra))


def _function_call_output(item: dict[str, Any]) -> Message:
    call_id, output = item["call_id"], item["output"]
    kept: dict[str, JSONValue] = {}
    if type(output) is str:
        content: str | tuple[Part, ...] = output
    elif type(output) is list:
        content = _parts(output, "tool", kept)
    else:
        raise _Unmapped
    rendered = {"call_id": call_id, "output": output, "type": "function_call_output"}
    metadata = _kept(kept, _beyond(item, rendered))
    return Message("tool", content, tool_call_id=call_id, metadata=metadata)


def _kept(kept: dict[str, JSONValue], extra: dict[str, Any]) -> dict[str, JSONValue]:
    """The metadata of a mapped item: what it has beyond its message (nothing: none)."""
    if extra:
        kept["extra"] = extra
    return {ITEM_METADATA: kept} if kept else {}


def _mapped(item: dict[str, Any]) -> Message:
    kind = item.get("type")
    if kind == "message" or (kind is None and "role" in item):
        return _message_item(item)
    if kind == "function_call":
        return _function_call(item)
    if kind == "function_call_output":
        return _function_call_output(item)
    if kind == "reasoning":
        return Message("assistant", "", metadata={REASONING_METADATA: [item]})
    raise _Unmapped


def _shown(item: dict[str, Any]) -> Message:
    """What an item kept verbatim looks like in promptkit's views: its role and text."""
    role = item.get("role")
    view_role = _ROLES.get(role, "assistant") if type(role) is str else "assistant"
    content = item.get("content")
    text = content if type(content) is str else ""
    if type(content) is list:
        text = "".join(b["text"] for b in content if type(b) is dict and type(b.get("text")) is str)
    shown = Message(view_role, text)  # a check of the text (a lone surrogate fails here)
    return shown.replace(metadata={ITEM_METADATA: {"item": item}})


def to_message(item: object, index: int = 0) -> Message:
    """The message that stores ``item`` (see the module for the mapping).

    ``items_of(to_message(item)) == [item]``, always: a message whose
    rendering would differ in any field, value or JSON type keeps the item
    verbatim instead.

    Raises:
        TypeError: ``item`` is not a JSON object (a dict).
        InvalidMessage: it cannot be stored: not JSON (a non-finite number, a
            key that is not a str) or text that is not UTF-8 (a lone surrogate).
    """
    if not isinstance(item, Mapping):
        raise TypeError(f"items[{index}] is {type(item).__name__}, not a JSON object (a dict)")
    plain = cast("dict[str, Any]", copy_json(item))
    try:
        expected = _dumps(plain)
    except (TypeError, ValueError) as exc:
        raise InvalidMessage(f"items[{index}] is not JSON: {exc}") from None
    try:
        message = _mapped(plain)
        if len(rendered := items_of(message)) == 1 and _dumps(rendered[0]) == expected:
            return message
    except (_Unmapped, InvalidMessage, KeyError, TypeError, ValueError):
        pass
    try:
        return _shown(plain)
    except InvalidMessage as exc:
        raise InvalidMessage(f"items[{index}] cannot be stored: {exc}") from None
