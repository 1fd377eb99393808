"""Listing, inspection and erasure of sessions.

Listing pages through the keyspace with SCAN (never KEYS), on every primary of
a Cluster, matching the history keys of the schema with glob characters in
the prefix escaped. Deleting removes every key of a session, and its entry in
its slot's index, in one atomic step; so does restoring one (an import) write
it all. What lives in another slot (the owner's listing, the registry of
indexed slots) is written in a step of its own: before a restore, so that a
conversation is never missing from its listing; after a delete, whose ghost
the next listing drops should that step be lost.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..._ids import new_turn_id
from . import _keys
from ._commit import TURN_MEMORY
from ._errors import classify, mapped_errors
from ._replies import BadReply, flag, integer, text
from ._scripts import DELETE, LIST_IN, RESTORE, UNLIST

if TYPE_CHECKING:
    import asyncio
    from collections.abc import AsyncIterator, Mapping, Sequence

    from ._cache import NearCache
    from ._index import SessionIndex
    from ._link import Link

__all__ = ["Admin"]

logger = logging.getLogger("promptkit_async.stores.redis")


class Admin:
    __slots__ = ("_cache", "_index", "_link")

    def __init__(self, link: Link, index: SessionIndex, cache: NearCache) -> None:
        self._link = link
        self._index = index
        self._cache = cache

    async def delete(self, session_id: str) -> bool:
        self._cache.drop(session_id)
        link = self._link
        keys: tuple[bytes, ...] = _keys.stored_keys(link.prefix, session_id)
        member = _keys.encode_id(session_id)
        if self._index.enabled:
            keys += (self._index.slot_key(_keys.slot_of(member)),)
        with mapped_errors(session_id, f"deleting session {session_id!r}"):
            try:
                reply = await DELETE(link.client, keys, (member,))
            finally:
                # Again after: a load meanwhile may have cached the session on the
                # connection that deleted it, whose own write (NOLOOP) Redis does not
                # report to it (see _tracking).
                self._cache.drop(session_id)
            if type(reply) is not list or len(reply) != 2:
                raise BadReply("the delete script", reply)
            removed, owner = integer("the delete script", reply[0]), text("DELETE", reply[1])
        if owner:
            # Another slot: a second step. The delete is done
            # whatever becomes of it: were it lost, the next listing drops the
            # ghost it finds.
            try:
                await UNLIST(link.client, (_keys.owner_key(link.prefix, owner),), (member,))
            except Exception as exc:
                if classify(exc) is None:
                    raise
                logger.warning(
                    "deleted %r; its owner's listing keeps it until listed: %s", session_id, exc
                )
        return removed > 0

    async def restore(
        self,
        session_id: str,
        elements: Sequence[bytes],
        next_id: int,
        *,
        replace: bool,
        ttl_ms: int,
        last_ms: int | None,
        generation: int = 0,
        meta: Mapping[str, str] | None = None,
    ) -> bool:
        """Write stored ``elements`` (header and payload each) as the whole session, with
        ``meta`` fields (False: it exists, and not ``replace``). ``last_ms`` None: now."""
        link = self._link
        keys: tuple[bytes, ...] = _keys.stored_keys(link.prefix, session_id)
        member = _keys.encode_id(session_id)
        index, registering = self._index.entry(member, ttl_ms)
        if index is not None:
            keys += (index,)
        fields = dict(meta or {})
        owner = fields.get("o")
        args: list[Any] = [
            "1" if replace else "0",
            ttl_ms,
            new_turn_id(),  # a new version: every near cache reloads
            TURN_MEMORY,
            member if index is not None else "",
            next_id,
            generation,
            "" if last_ms is None else last_ms,
            len(fields),
        ]
        for name, value in fields.items():
            args += (name, value)
        args += elements
        self._cache.drop(session_id)
        try:
            if registering is not None:
                await _registered(registering)
            if owner is not None:
                # Listed first: a conversation is never missing from its listing
                # (a ghost, should the write fail, is dropped by the next listing).
                with mapped_errors(session_id, f"listing conversation {session_id!r}"):
                    await LIST_IN(
                        link.client, (_keys.owner_key(link.prefix, owner),), (member, ttl_ms)
                    )
            with mapped_errors(session_id, f"restoring session {session_id!r}"):
                return flag("the restore script", await RESTORE(link.client, keys, args))
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


async def _registered(registering: asyncio.Future[None]) -> None:
    """Wait for a slot's registration in the index's registry; its failure only delays
    the session's count in ``metrics()`` (the next write registers it)."""
    try:
        await registering
    except Exception as exc:
        if classify(exc) is None:
            raise
        logger.warning("a slot of the session index was not registered: %s", exc)
