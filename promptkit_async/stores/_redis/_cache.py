"""The near cache: session windows this process read or wrote, keyed by version.

An entry is served after Redis confirmed, inside the load script, that the
session's version (its newest turn id) is still the entry's, so the cache
saves the transfer and decoding of a window; or, while Redis tracks its keys
for this process and no invalidation arrived, with no round trip at all (see
``_tracking``). Our own
commit extends an entry only when the commit script reports that nobody wrote
in between; anything else drops it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..._messages import Message
    from ._tracking import Token

__all__ = ["KEEP", "CacheEntry", "NearCache"]

#: The most messages an entry that holds a whole (short) history keeps.
KEEP = 100


class CacheEntry:
    """A session window, valid while ``version`` and ``length`` are the session's."""

    __slots__ = ("complete", "expires", "length", "messages", "token", "version")

    def __init__(
        self,
        version: str,
        length: int,
        messages: tuple[Message, ...],
        complete: bool,
        token: Token | None = None,
        expires: float | None = None,
    ) -> None:
        self.version = version
        # When the session may expire (time.monotonic(); None: never): an entry is not
        # served from memory past it, as Redis reports an expiry only once it deletes.
        self.expires = expires
        # Set while Redis tracks the entry's keys for us (see _tracking): it may
        # then be served without asking; an invalidation clears it.
        self.token = token
        self.length = length  # of the whole stored history when this was read
        self.messages = messages
        self.complete = complete  # the whole stored history, not just its newest part


class NearCache:
    """At most ``size`` entries, least recently used evicted first (0: off)."""

    __slots__ = ("_entries", "hits", "misses", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, session_id: str) -> CacheEntry | None:
        return self._entries.get(session_id)

    def usable(self, session_id: str, limit: int | None) -> CacheEntry | None:
        """The entry if it holds at least the window asked for (to be revalidated)."""
        entry = self._entries.get(session_id)
        if entry is None:
            return None
        if entry.complete or (limit is not None and len(entry.messages) >= limit):
            return entry
        return None

    def hit(self, session_id: str, entry: CacheEntry, limit: int | None) -> list[Message]:
        """Serve ``entry``, which Redis just confirmed current."""
        self.hits += 1
        self._entries.move_to_end(session_id)
        return list(entry.messages if limit is None else entry.messages[-limit:])

    def remember(self, session_id: str, entry: CacheEntry) -> None:
        self._entries[session_id] = entry
        self._entries.move_to_end(session_id)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def drop(self, session_id: str) -> None:
        self._entries.pop(session_id, None)

    def clear(self) -> None:
        self._entries.clear()

    def advance(
        self,
        session_id: str,
        previous: str,
        before: int,
        turn_id: str,
        batch: Sequence[Message],
        max_messages: int | None,
        token: Token | None = None,
        expires: float | None = None,
    ) -> None:
        """After our own commit, extend the cached window if nobody wrote in between.

        ``previous`` and ``before`` are the version and history length the
        commit script found: both must be the entry's. A history evicted (or
        written around the script) since it was read fails the length check.
        """
        entry = self._entries.get(session_id)
        if entry is None or entry.version != previous or entry.length != before:
            self._entries.pop(session_id, None)
            return
        combined = entry.messages + tuple(batch)
        length = before + len(batch)
        if max_messages is not None and length > max_messages:
            length = max_messages  # the commit trimmed the stored history to this
        complete = entry.complete
        if len(combined) >= length:
            combined = combined[len(combined) - length :]
            complete = True  # we hold every message the session keeps
        # A window stays the size it was read at; a whole history is kept up to
        # KEEP messages, then as a window of that size: an entry never grows
        # with a long conversation.
        window = max(len(entry.messages), KEEP) if complete else len(entry.messages)
        if len(combined) > window:
            combined = combined[len(combined) - window :]
            complete = False
        self.remember(session_id, CacheEntry(turn_id, length, combined, complete, token, expires))
