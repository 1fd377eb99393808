"""Loading a window: one ``LRANGE``, or with the near cache one version check.

Either way a load is one round trip. Without the cache it reads the newest
``limit`` records; with it, the load script compares the cached entry's
version with the session's inside Redis and transfers the window only when
another writer changed it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._codec import decode_message
from . import _keys
from ._cache import CacheEntry
from ._errors import mapped_errors
from ._replies import BadReply, entries, load_if_changed_reply
from ._scripts import LOAD_IF_CHANGED

if TYPE_CHECKING:
    from ..._messages import Message
    from ._cache import NearCache
    from ._link import Link

__all__ = ["Loader"]


class Loader:
    """Reads session windows through ``link``, and through ``cache`` when it is on."""

    __slots__ = ("_cache", "_link", "_max_bytes")

    def __init__(self, link: Link, cache: NearCache, max_record_bytes: int) -> None:
        self._link = link
        self._cache = cache
        self._max_bytes = max_record_bytes

    async def load(self, session_id: str, limit: int | None) -> list[Message]:
        """The newest ``limit`` (> 0) messages, or all (None); ids already checked."""
        if self._cache.size:
            return await self._load_cached(session_id, limit)
        k = _keys.key(self._link.prefix, session_id, _keys.HISTORY)
        with mapped_errors(session_id, f"loading session {session_id!r}"):
            raw = entries("LRANGE", await self._link.read("LRANGE", k, -limit if limit else 0, -1))
        return decode_window(session_id, raw, limit, self._max_bytes)

    async def _load_cached(self, session_id: str, limit: int | None) -> list[Message]:
        cache = self._cache
        entry = cache.usable(session_id, limit)
        keys = _keys.session_keys(self._link.prefix, session_id)
        known, length = (entry.version, entry.length) if entry is not None else ("", -1)
        start = -limit if limit else 0
        with mapped_errors(session_id, f"loading session {session_id!r}"):
            reply = await LOAD_IF_CHANGED(self._link.client, keys, (known, start, length))
            version, stored, raw = load_if_changed_reply(reply)
            if raw is None and entry is None:  # "current" for a window we do not have
                raise BadReply("the cached load", reply)
        if raw is None:
            assert entry is not None
            return cache.hit(session_id, entry, limit)
        cache.misses += 1
        messages = decode_window(session_id, raw, limit, self._max_bytes)
        # An absent session is cached too (version ''): the script never calls ''
        # current, but our own next commit can extend it.
        complete = limit is None or len(messages) < limit
        cache.remember(session_id, CacheEntry(version, stored, tuple(messages), complete))
        return messages


def decode_window(
    session_id: str, raw: list[bytes], limit: int | None, max_bytes: int
) -> list[Message]:
    windowed = limit is not None and len(raw) == limit
    return [
        # A windowed load cannot know absolute positions: count from the end.
        decode_message(
            item,
            session_id=session_id,
            index=i - len(raw) if windowed else i,
            max_bytes=max_bytes,
        )
        for i, item in enumerate(raw)
    ]
