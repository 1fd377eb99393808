"""How a pydantic-ai conversation is written down: records, entries and where each one lives.

Pure: no I/O. Both engines of ``ConversationStoreBackend`` store the same bytes, so a
conversation behaves the same on a MemoryStore as on Redis (a tool's raw ``bytes`` in an
``Any``-typed field reads back as its base64 text on both, as it does through pydantic-ai's
own ``ModelMessagesTypeAdapter``).

An entry is stored in the *home* of the conversation that created it (see the integration's module
docstring). Its stored value is a header naming the entry before it and, when that one lives in
another home, that home; then the message as JSON. Each header field is ``-`` (none) or
``<byte length>:<bytes>``, so the walk script reads it without decoding JSON and any id is safe.

A third header field keeps what the JSON cannot say: pydantic's validation turns every image
``BinaryContent`` into a ``BinaryImage``, which compares unequal to the ``BinaryContent`` it was
saved as; the field lists where a plain one stood (part, item), so it reads back as it was given.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, NamedTuple

import pydantic
from pydantic_ai.conversation_store import ConversationEntry, ConversationRecord
from pydantic_ai.messages import BinaryContent, FilePart, ModelMessage, UserPromptPart

from .._exceptions import CorruptHistory
from ..stores._redis._keys import encode_id

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "Stored",
    "decode_entry",
    "decode_homes",
    "decode_record",
    "encode_entry",
    "encode_homes",
    "encode_record",
    "home_of",
    "parent_of",
    "score_of",
    "tips",
]

_BYTES = pydantic.ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")
_MESSAGE: pydantic.TypeAdapter[ModelMessage] = pydantic.TypeAdapter(ModelMessage, config=_BYTES)
# A dataclass takes no TypeAdapter config of its own: a one-item list carries it to every field.
_RECORD: pydantic.TypeAdapter[list[ConversationRecord]] = pydantic.TypeAdapter(
    list[ConversationRecord], config=_BYTES
)


class Stored(NamedTuple):
    """One entry as read back: the entry, and the home of the entry before it ('' for the same)."""

    entry: ConversationEntry
    parent_home: str


def home_of(conversation_id: str) -> str:
    """The home of a conversation's entries: its id, escaped to sit inside a hash tag."""
    return encode_id(conversation_id)


def score_of(record: ConversationRecord) -> float:
    """The listing score: ``updated_at`` in microseconds (exact in a double until year 2255)."""
    return float(round(record.updated_at.timestamp() * 1_000_000))


def _field(text: str | None) -> bytes:
    if text is None:
        return b"-"
    raw = text.encode()
    return b"%d:%b" % (len(raw), raw)


def _read_field(raw: bytes, pos: int) -> tuple[str | None, int]:
    if raw[pos : pos + 1] == b"-":
        return None, pos + 1
    colon = raw.index(b":", pos)
    size = int(raw[pos:colon])
    end = colon + 1 + size
    if end > len(raw):
        raise ValueError("header field runs past the value")
    return raw[colon + 1 : end].decode(), end


def _narrowed(item: object) -> bool:
    """A plain BinaryContent that validation would read back as a subclass."""
    return type(item) is BinaryContent and BinaryContent.narrow_type(item) is not item


def _plain_binaries(message: ModelMessage) -> list[list[int]]:
    """Where ``message`` holds a plain BinaryContent that would read back narrowed."""
    found: list[list[int]] = []
    for p, part in enumerate(message.parts):
        if isinstance(part, UserPromptPart) and not isinstance(part.content, str):
            found += [[p, i] for i, item in enumerate(part.content) if _narrowed(item)]
        elif isinstance(part, FilePart) and _narrowed(part.content):
            found.append([p, -1])
    return found


def _widen(item: BinaryContent) -> BinaryContent:
    return BinaryContent(
        data=item.data,
        media_type=item.media_type,
        identifier=item.identifier,
        vendor_metadata=item.vendor_metadata,
    )


def _restore_binaries(message: ModelMessage, where: list[list[int]]) -> None:
    for p, i in where:
        part = message.parts[p]
        if isinstance(part, FilePart) and i == -1:
            part.content = _widen(part.content)
        elif isinstance(part, UserPromptPart) and isinstance(part.content, list):
            item = part.content[i]
            if isinstance(item, BinaryContent):
                part.content[i] = _widen(item)


def encode_entry(entry: ConversationEntry, parent_home: str) -> bytes:
    """The stored value of ``entry``; ``parent_home`` is '' when its parent shares its home."""
    plain = _plain_binaries(entry.message)
    return (
        _field(entry.parent_id)
        + _field(parent_home)
        + _field(json.dumps(plain, separators=(",", ":")) if plain else None)
        + _MESSAGE.dump_json(entry.message, by_alias=True)
    )


def parent_of(raw: bytes) -> tuple[str | None, str]:
    """The parent id and parent home ('' for the same) of a stored entry, without its message.

    Raises:
        ValueError: the header is not one this module wrote.
    """
    parent_id, pos = _read_field(raw, 0)
    parent_home, _ = _read_field(raw, pos)
    return parent_id, parent_home or ""


def decode_entry(entry_id: str, raw: bytes, conversation_id: str) -> Stored:
    """Read a stored entry back.

    Raises:
        CorruptHistory: the value is not one this module wrote.
    """
    try:
        parent_id, pos = _read_field(raw, 0)
        parent_home, pos = _read_field(raw, pos)
        plain, pos = _read_field(raw, pos)
        message = _MESSAGE.validate_json(raw[pos:])
        if plain is not None:
            _restore_binaries(message, json.loads(plain))
    except (
        ValueError,
        UnicodeDecodeError,
        IndexError,
        TypeError,
    ) as exc:  # pydantic's ValidationError is a ValueError
        raise CorruptHistory(
            f"conversation entry {entry_id!r} cannot be decoded: {exc}",
            session_id=conversation_id,
        ) from exc
    entry = ConversationEntry(id=entry_id, parent_id=parent_id, message=message)
    return Stored(entry, parent_home or "")


def encode_record(record: ConversationRecord) -> bytes:
    return _RECORD.dump_json([record])


def decode_record(raw: bytes, conversation_id: str) -> ConversationRecord:
    """Read a stored record back.

    Raises:
        CorruptHistory: the value is not one this module wrote.
    """
    try:
        (record,) = _RECORD.validate_json(raw)
    except ValueError as exc:
        raise CorruptHistory(
            f"conversation record {conversation_id!r} cannot be decoded: {exc}",
            session_id=conversation_id,
        ) from exc
    return record


def encode_homes(homes: Mapping[str, str]) -> bytes:
    """Where the record's head and branch tips live, so a load finds its history at once."""
    return json.dumps(dict(homes), separators=(",", ":")).encode()


def decode_homes(raw: bytes | None) -> dict[str, str]:
    if not raw:
        return {}
    try:
        found = json.loads(raw)
    except ValueError:
        return {}  # only a hint: the locators still find every entry
    if not isinstance(found, dict):
        return {}
    return {str(k): str(v) for k, v in found.items() if isinstance(v, str)}


def tips(record: ConversationRecord) -> Sequence[str]:
    """The entries a record points at: its head, then the tips of the branches it left."""
    return [e for e in (record.head_id, *record.branches) if e is not None]
