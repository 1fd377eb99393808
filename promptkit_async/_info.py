"""What a conversation is besides its messages: owner, title, times, custom metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

    from ._types import JSONValue

__all__ = ["UNCHANGED", "ConversationInfo", "ConversationPage"]

#: ``update_info(title=UNCHANGED)`` (the default): leave the title as it is.
UNCHANGED: Final[Any] = type("Unchanged", (), {"__repr__": lambda self: "UNCHANGED"})()


@dataclass(frozen=True, slots=True)
class ConversationInfo:
    """One conversation as a sidebar lists it (``store.info(id)``, ``store.conversations()``).

    Attributes:
        id: the session id.
        owner: who it belongs to (None: recorded without an owner).
        title: what the user named it (None: not named).
        created_at: the time of its first commit (aware UTC), set once.
        updated_at: the time of its newest commit, on the clock of message times.
        message_count: how many messages it keeps.
        metadata: custom JSON kept beside it (``update_info(metadata=...)``).
        forked_from: the id it was forked from, or None.
    """

    id: str
    owner: str | None
    title: str | None
    created_at: datetime
    updated_at: datetime
    message_count: int
    metadata: Mapping[str, JSONValue] = field(default_factory=dict)
    forked_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, times in ISO 8601 (what the CLI and the web example print)."""
        return {
            "id": self.id,
            "owner": self.owner,
            "title": self.title,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "message_count": self.message_count,
            "metadata": dict(self.metadata),
            "forked_from": self.forked_from,
        }


@dataclass(frozen=True, slots=True)
class ConversationPage:
    """A page of an owner's conversations, newest ``updated_at`` first.

    ``next_cursor`` gets the next page (None: this was the last). Paging with
    it visits every conversation that existed when the first page was read
    exactly once, in the order they had then, whatever commits happen
    meanwhile; conversations created after it appear on a new first page.
    """

    items: tuple[ConversationInfo, ...]
    next_cursor: str | None
