"""Loading a window: one ``LRANGE``, or with the near cache one version check.

Either way a load is one round trip. Without the cache it reads the newest
``limit`` records; with it, the load script compares the cached entry's
version with the session's inside Redis and transfers the window only when
another writer changed it. A page older than a message (``before=``) is one
script call that finds the message's position from its id (ids count up
without gaps, see ``_scripts``) and checks it is that message.

Records of 0.1.0 carry no id or time: their id is their position in the
stored list (0 = the oldest) and their time the epoch, the values the next
commit stamps them with for good. Finding a position costs one ``LLEN`` more,
only when such a record is in a window.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..._codec import EPOCH, decode_records, id_number
from ..._exceptions import MessageNotFound
from ..._messages import stamped
from . import _keys
from ._cache import CacheEntry
from ._errors import mapped_errors
from ._replies import BadReply, entries, integer, load_if_changed_reply
from ._scripts import LOAD_IF_CHANGED, PAGE

if TYPE_CHECKING:
    from ..._messages import Message
    from ._cache import NearCache
    from ._link import Link

__all__ = ["Loader"]


class Loader:
    """Reads session windows through ``link``, and through ``cache`` when it is on."""

    __slots__ = ("_cache", "_link", "max_bytes")

    def __init__(self, link: Link, cache: NearCache, max_record_bytes: int) -> None:
        self._link = link
        self._cache = cache
        self.max_bytes = max_record_bytes

    async def load(self, session_id: str, limit: int | None) -> list[Message]:
        """The newest ``limit`` (> 0) messages, or all (None); ids already checked."""
        if self._cache.size:
            return await self._load_cached(session_id, limit)
        k = _keys.key(self._link.prefix, session_id, _keys.HISTORY)
        with mapped_errors(session_id, f"loading session {session_id!r}"):
            raw = entries("LRANGE", await self._link.read("LRANGE", k, -limit if limit else 0, -1))
            messages = decode_window(session_id, raw, limit, self.max_bytes)
            if messages and messages[-1].id is None or messages and messages[0].id is None:
                messages = positional(messages, await self._length(k))
        return messages

    async def _length(self, history: bytes) -> int:
        return integer("LLEN", await self._link.read("LLEN", history))

    async def count(self, session_id: str) -> int:
        k = _keys.key(self._link.prefix, session_id, _keys.HISTORY)
        with mapped_errors(session_id, f"counting session {session_id!r}"):
            return await self._length(k)

    async def page(self, session_id: str, limit: int | None, before: str) -> list[Message]:
        """The ``limit`` (None: all) messages stored just before the one with id ``before``.

        Raises:
            MessageNotFound: no kept message has that id.
        """
        h, _, meta = _keys.stored_keys(self._link.prefix, session_id)
        number = id_number(before)
        with mapped_errors(session_id, f"loading session {session_id!r}"):
            raw: list[bytes] = []
            if number is not None:
                reply = await PAGE(self._link, (h, meta), (number, limit or 0))
                raw = entries("the page script", reply)
            found = decode_window(session_id, raw, None, self.max_bytes)
            if found and all(m.id is not None for m in found) and found[-1].id == before:
                return found[:-1]
            # Not where a gapless count puts it (a history written around this
            # library, or of 0.1.0): look for it in the whole history.
            everything = await self.load(session_id, None)
        for at, message in enumerate(everything):
            if message.id == before:
                return everything[max(0, at - limit) if limit else 0 : at]
        raise MessageNotFound(session_id, before)

    async def _load_cached(self, session_id: str, limit: int | None) -> list[Message]:
        cache = self._cache
        entry = cache.usable(session_id, limit)
        inv = self._link.invalidations
        if inv is not None:
            if entry is not None and inv.trusted(entry):
                return cache.hit(session_id, entry, limit)  # no round trip
            inv.start()
        keys = _keys.session_keys(self._link.prefix, session_id)
        known, length = (entry.version, entry.length) if entry is not None else ("", -1)
        start = -limit if limit else 0
        sent = time.monotonic()
        with mapped_errors(session_id, f"loading session {session_id!r}"):
            if inv is None:
                reply, token = await LOAD_IF_CHANGED(self._link, keys, (known, start, length)), None
            else:
                reply, ticket = await LOAD_IF_CHANGED.tracked(
                    self._link, session_id, keys, (known, start, length)
                )
                # Closed here: nothing awaits between it and the entry stored below.
                token = None if ticket is None else ticket.close()
            version, stored, raw, ttl = load_if_changed_reply(reply)
            if raw is None and entry is None:  # "current" for a window we do not have
                raise BadReply("the cached load", reply)
        expires = sent + ttl / 1000 if ttl >= 0 else None
        if raw is None:
            assert entry is not None
            if cache.get(session_id) is not entry:
                # Dropped or replaced while the load was in flight (a delete, a failed
                # commit, eviction): served as read, and not cached again.
                cache.hits += 1
                return list(entry.messages if limit is None else entry.messages[-limit:])
            entry.token = token
            entry.expires = expires
            return cache.hit(session_id, entry, limit)
        cache.misses += 1
        messages = decode_window(session_id, raw, limit, self.max_bytes)
        if messages and (messages[0].id is None or messages[-1].id is None):
            messages = positional(messages, stored)
        # An absent session is cached too (version ''): the script never calls ''
        # current, but our own next commit can extend it.
        complete = limit is None or len(messages) < limit
        entry = CacheEntry(version, stored, tuple(messages), complete, token, expires)
        cache.remember(session_id, entry)
        return messages


def decode_window(
    session_id: str, raw: list[bytes], limit: int | None, max_bytes: int
) -> list[Message]:
    windowed = limit is not None and len(raw) == limit
    # A windowed load cannot know absolute positions: count from the end.
    first = -len(raw) if windowed else 0
    return decode_records(raw, session_id=session_id, first_index=first, max_bytes=max_bytes)


def positional(messages: list[Message], length: int) -> list[Message]:
    """Give records without a header (0.1.0's) their position as id, and the epoch.

    ``messages`` are the newest of a history of ``length`` records.
    """
    start = length - len(messages)
    return [
        m if m.id is not None else stamped(m, str(start + i), EPOCH) for i, m in enumerate(messages)
    ]
