"""Listing, inspection and erasure of sessions.

Listing pages through the keyspace with SCAN (never KEYS), on every primary of
a Cluster, matching the history keys of the schema with glob characters in
the prefix escaped. Deleting removes every key of a session, and its index
entry, in one atomic step; so does restoring one (an import) write it all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._codec import encode_message, header
from ..._ids import new_turn_id
from . import _keys
from ._commit import TURN_MEMORY
from ._errors import mapped_errors
from ._replies import BadReply, flag, integer
from ._scripts import DELETE, RESTORE

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from ..._messages import Message
    from ._cache import NearCache
    from ._index import SessionIndex
    from ._link import Link

__all__ = ["Admin"]


class Admin:
    __slots__ = ("_cache", "_index", "_link")

    def __init__(self, link: Link, index: SessionIndex, cache: NearCache) -> None:
        self._link = link
        self._index = index
        self._cache = cache

    async def delete(self, session_id: str) -> bool:
        self._cache.drop(session_id)
        keys: tuple[bytes, ...] = _keys.stored_keys(self._link.prefix, session_id)
        if self._index.key is not None:
            keys += (self._index.key,)
        with mapped_errors(session_id, f"deleting session {session_id!r}"):
            removed = integer(
                "the delete script",
                await DELETE(self._link.client, keys, (_keys.encode_id(session_id),)),
            )
        return removed > 0

    async def restore(
        self,
        session_id: str,
        messages: Sequence[Message],
        times: Sequence[int],
        next_id: int,
        *,
        replace: bool,
        ttl_ms: int,
        compress_above: int | None,
        max_bytes: int,
    ) -> bool:
        """Write stamped ``messages`` as the whole session (False: it exists, no ``replace``)."""
        elements = [
            header(ms, m.id or "")
            + encode_message(m, compress_above=compress_above, max_bytes=max_bytes)
            for m, ms in zip(messages, times, strict=True)
        ]
        keys: tuple[bytes, ...] = _keys.stored_keys(self._link.prefix, session_id)
        index = self._index.key
        if index is not None:
            keys += (index,)
        args = [
            "1" if replace else "0",
            ttl_ms,
            new_turn_id(),  # a new version: every near cache reloads
            TURN_MEMORY,
            _keys.encode_id(session_id) if index is not None else "",
            next_id,
            times[-1],
            *elements,
        ]
        self._cache.drop(session_id)
        try:
            with mapped_errors(session_id, f"restoring session {session_id!r}"):
                return flag("the restore script", await RESTORE(self._link.client, keys, args))
        finally:
            self._cache.drop(session_id)

    async def ttl(self, session_id: str) -> float | None:
        k = _keys.key(self._link.prefix, session_id, _keys.HISTORY)
        with mapped_errors(session_id, "reading a TTL"):
            ms = integer("PTTL", await self._link.client.execute_command("PTTL", k))
        return None if ms < 0 else ms / 1000.0

    async def exists(self, session_id: str) -> bool:
        k = _keys.key(self._link.prefix, session_id, _keys.HISTORY)
        with mapped_errors(session_id, "checking a session"):
            return flag("EXISTS", await self._link.client.execute_command("EXISTS", k))

    async def sessions(self, prefix: str, page_size: int) -> AsyncIterator[str]:
        own = self._link.prefix
        head, tail = _keys.key_parts(own, _keys.HISTORY)
        pattern = _keys.glob_escape(head + _keys.encode_id(prefix)) + "*" + tail
        with mapped_errors(None, "listing sessions"):
            async for raw in self._link.client.scan_iter(match=pattern, count=page_size):
                if type(raw) is not bytes and type(raw) is not str:
                    raise BadReply("SCAN", raw)
                session_id = _keys.parse_key(own, raw)
                if session_id is not None and session_id.startswith(prefix):
                    yield session_id
