"""What a storage engine does for the pydantic-ai backend: the steps a store makes atomic.

The backend (``pydantic_ai.py``) works out homes, headers and bytes; an engine only stores them.
Both engines keep one model (see the integration's module docstring): a record per conversation,
the entries each conversation created in its own home, pins from the homes whose histories reach
into another, and a locator per entry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["Engine", "Found", "Write"]


class Write(NamedTuple):
    """One ``write_record``, encoded: applied whole or not at all."""

    conversation_id: str
    home: str
    #: The revision the stored record must have; None: no record may be stored.
    expected: str | None
    revision: str
    record: bytes
    homes: bytes
    score: float
    scope: str | None
    #: The new entries, in order: (id, stored value).
    entries: Sequence[tuple[str, bytes]]
    #: Existing entries the record or its new entries point at, in this home.
    local_refs: Sequence[str]
    #: The same, in other homes: home -> entry ids there.
    foreign_refs: Mapping[str, Sequence[str]]


class Found(NamedTuple):
    """One entry of a walk: its id, its stored value, the home it was read from."""

    entry_id: str
    value: bytes
    home: str


class Engine(Protocol):
    async def read_record(self, conversation_id: str) -> tuple[bytes, bytes] | None:
        """The stored record and its homes map, or None."""
        ...

    async def read_records(self, scope: str | None, limit: int | None) -> list[bytes]:
        """Stored records, newest first (by listing score), at most ``limit``."""
        ...

    async def write(self, write: Write) -> None:
        """Apply ``write`` atomically.

        Raises:
            ConversationConflict: the revision is not the expected one, or an entry it points
                at is not stored; nothing was written.
        """
        ...

    async def delete(self, conversation_id: str, home: str, expected: str) -> None:
        """Delete the record if it has revision ``expected``, then collect what nothing reaches.

        Raises:
            ConversationConflict: no record with that revision; nothing was deleted.
        """
        ...

    async def walk(self, head_id: str, home: str | None, limit: int | None) -> list[Found]:
        """Entries from ``head_id`` back towards the first, at most ``limit``.

        ``home`` is where ``head_id`` lives, if known (else its locator is read).

        Raises:
            KeyError: an entry of the chain is not stored.
        """
        ...

    async def locate(self, entry_id: str) -> str | None:
        """The home of an entry, from its locator; None if it has none."""
        ...
