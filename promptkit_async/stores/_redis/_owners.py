"""Conversations as a chat app's sidebar sees them: info, renaming, listing, forks, erasure.

A conversation's info lives in its meta hash (owner, title, times, custom
fields), in its own slot with its history. Each owner's listing is a sorted
set in a slot of its own, scored by the time of each conversation's last
commit. The listing may hold ghosts (a conversation deleted, expired or taken
over since): a listing reads every item's info, and drops the ghosts it finds,
so none is ever returned. Paging past the first page reads a snapshot of the
listing taken with it, so that commits meanwhile neither skip nor repeat a
conversation. A listing and its snapshots share the owner's hash tag; the
items' info is read one conversation per script call (each in its own slot),
pipelined in one round trip on standalone Redis, concurrently on a Cluster.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from typing import TYPE_CHECKING, Any, Final

from ..._codec import EPOCH, time_of
from ..._exceptions import (
    ConversationExists,
    ConversationNotFound,
    InvalidCursor,
    MessageNotFound,
    OwnerMismatch,
)
from ..._info import UNCHANGED, ConversationInfo, ConversationPage
from . import _keys
from ._errors import mapped_errors
from ._replies import BadReply, array, entries, integer, text
from ._scripts import DELETE, FORK_READ, INFO, LIST, UNLIST, UPDATE_INFO

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..._types import JSONValue
    from ._admin import Admin
    from ._cache import NearCache
    from ._index import SessionIndex
    from ._link import Link

__all__ = ["Owners"]

#: How long the snapshot behind a listing's later pages lives (ms).
_SNAPSHOT_TTL_MS: Final = 600_000
_CURSOR = re.compile(r"([0-9a-f]{16})\.([0-9]{1,9})")


class Owners:
    __slots__ = ("_admin", "_cache", "_index", "_link")

    def __init__(self, link: Link, index: SessionIndex, cache: NearCache, admin: Admin) -> None:
        self._link = link
        self._index = index
        self._cache = cache
        self._admin = admin

    # -- info --------------------------------------------------------------------------

    async def info(self, session_id: str, owner: str | None) -> ConversationInfo | None:
        found = await self._infos([session_id], owner)
        return found[0]

    async def _infos(
        self, session_ids: list[str], owner: str | None
    ) -> list[ConversationInfo | None]:
        """Each conversation's info (None: none, or another owner's): one script call
        per conversation, pipelined on standalone Redis, concurrent on a Cluster."""
        if not session_ids:
            return []
        prefix, client = self._link.prefix, self._link.client
        calls = []
        for session_id in session_ids:
            h, _, m = _keys.stored_keys(prefix, session_id)
            calls.append(((h, m), (owner or "",)))
        one = session_ids[0] if len(session_ids) == 1 else None
        with mapped_errors(one, "reading conversations"):
            if len(calls) == 1:
                replies = [await INFO(client, *calls[0])]
            elif self._link.cluster:
                replies = list(await asyncio.gather(*(INFO(client, k, a) for k, a in calls)))
            else:
                replies = await INFO.each(client, calls)
        if len(replies) != len(session_ids):
            raise BadReply("the info script", replies)
        return [_info(s, r) for s, r in zip(session_ids, replies, strict=True)]

    async def update_info(
        self,
        session_id: str,
        *,
        title: object,
        metadata: Mapping[str, JSONValue] | None,
        owner: str | None,
    ) -> bool:
        args: list[Any] = [owner or ""]
        if title is UNCHANGED:
            args.append("\0")
        elif title is None:
            args.append("")
        else:
            args.append(title)
        for name, value in (metadata or {}).items():
            args += (name, "" if value is None else json.dumps(value, ensure_ascii=False))
        h, _, m = _keys.stored_keys(self._link.prefix, session_id)
        with mapped_errors(session_id, f"updating conversation {session_id!r}"):
            done = integer("the update script", await UPDATE_INFO(self._link.client, (h, m), args))
        if done == -4:
            raise OwnerMismatch(session_id)
        return done == 1

    # -- listing -----------------------------------------------------------------------

    async def conversations(self, owner: str, limit: int, cursor: str | None) -> ConversationPage:
        prefix = self._link.prefix
        listing = _keys.owner_key(prefix, owner)
        if cursor is None:
            token, offset = secrets.token_hex(8), 0
        else:
            match = _CURSOR.fullmatch(cursor) if isinstance(cursor, str) else None
            if match is None:
                raise InvalidCursor(f"not a cursor of this store: {cursor!r}")
            token, offset = match.group(1), int(match.group(2))
        snapshot = _keys.owner_key(prefix, owner, token)
        with mapped_errors(None, f"listing the conversations of {owner!r}"):
            reply = array(
                "the listing script",
                await LIST(
                    self._link.client,
                    (listing, snapshot),
                    (offset, limit, _SNAPSHOT_TTL_MS, "1"),
                ),
            )
        total = integer("the listing script", reply[0]) if reply else -2
        if total == -1:
            raise InvalidCursor(
                f"the listing behind cursor {cursor!r} has expired (after "
                f"{_SNAPSHOT_TTL_MS // 60_000} minutes); start again from the first page"
            )
        if total < 0:
            raise BadReply("the listing script", reply)
        members = [text("the listing script", m) for m in reply[1:]]
        ids = [_keys.decode_id(m) for m in members]
        infos = await self._infos(ids, owner)
        ghosts = [m for m, i in zip(members, infos, strict=True) if i is None]
        if ghosts:
            with mapped_errors(None, "dropping listed conversations that are gone"):
                await UNLIST(self._link.client, (listing,), ghosts)
        end = offset + limit
        return ConversationPage(
            tuple(i for i in infos if i is not None),
            f"{token}.{end}" if end < total else None,
        )

    # -- fork and erase ----------------------------------------------------------------

    async def fork(
        self,
        source_id: str,
        new_id: str,
        *,
        upto: str | None,
        title: str | None,
        replace: bool,
        owner: str | None,
    ) -> ConversationInfo:
        h, _, m = _keys.stored_keys(self._link.prefix, source_id)
        with mapped_errors(source_id, f"reading conversation {source_id!r} to fork it"):
            reply = array(
                "the fork script",
                await FORK_READ(self._link.client, (h, m), (owner or "", upto or "")),
            )
        status = integer("the fork script", reply[0]) if reply else 2
        if status == 0:
            raise ConversationNotFound(source_id)
        if status == -4:
            raise OwnerMismatch(source_id)
        if status == -5:
            assert upto is not None
            raise MessageNotFound(source_id, upto)
        if status != 1 or len(reply) < 5:
            raise BadReply("the fork script", reply)
        pttl = integer("the fork script", reply[1])
        next_number = integer("the fork script", reply[2])
        generation = integer("the fork script", reply[3])
        meta: dict[str, str] = {}
        at = 4
        while at < len(reply) and reply[at] not in (b"", ""):
            meta[text("the fork script", reply[at])] = text("the fork script", reply[at + 1])
            at += 2
        elements = [e if type(e) is bytes else str(e).encode() for e in reply[at + 1 :]]
        meta["f"] = source_id
        if title is not None:
            meta["ti"] = title
        written = await self._admin.restore(
            new_id,
            elements,  # as stored: ids, times and compression kept
            next_number,
            replace=replace,
            ttl_ms=max(pttl, 0),
            last_ms=None,  # now, on the server's clock
            # A new generation: ids the fork gives never repeat the source's.
            generation=generation + 1,
            meta=meta,
        )
        if not written:
            raise ConversationExists(new_id)
        info = await self.info(new_id, None)
        if info is None:  # expired or deleted the moment it was written
            raise ConversationNotFound(new_id)
        return info

    async def delete_owner(self, owner: str) -> int:
        link = self._link
        listing = _keys.owner_key(link.prefix, owner)
        with mapped_errors(None, f"listing the conversations of {owner!r}"):
            members = entries("ZRANGE", await link.client.execute_command("ZRANGE", listing, 0, -1))
        deleted = 0
        for raw in members:
            member = text("ZRANGE", raw)
            session_id = _keys.decode_id(member)
            self._cache.drop(session_id)
            keys: tuple[bytes, ...] = _keys.stored_keys(link.prefix, session_id)
            if self._index.enabled:
                keys += (self._index.slot_key(_keys.slot_of(member)),)
            with mapped_errors(session_id, f"deleting conversation {session_id!r}"):
                try:
                    reply = await DELETE(link.client, keys, (member, owner))
                finally:
                    self._cache.drop(session_id)  # again after: see Admin.delete
            if type(reply) is not list or len(reply) != 2:
                raise BadReply("the delete script", reply)
            deleted += integer("the delete script", reply[0]) > 0
        pattern = _keys.glob_escape(_keys.owner_key(link.prefix, owner, "x")[:-1].decode()) + "*"
        with mapped_errors(None, f"erasing the listing of {owner!r}"):
            snapshots = [k async for k in link.client.scan_iter(match=pattern, count=500)]
            for k in (listing, *snapshots):
                await link.client.execute_command("DEL", k)
        return deleted


def _info(session_id: str, reply: object) -> ConversationInfo | None:
    if type(reply) is not list:
        raise BadReply("the info script", reply)
    if not reply:
        return None
    if len(reply) < 6 or len(reply) % 2:
        raise BadReply("the info script", reply)
    count = integer("the info script", reply[0])
    owner, title, created, updated, forked = (text("the info script", v) for v in reply[1:6])
    metadata: dict[str, JSONValue] = {}
    for at in range(6, len(reply), 2):
        name = text("the info script", reply[at])
        try:
            metadata[name] = json.loads(text("the info script", reply[at + 1]))
        except ValueError:
            raise BadReply("the info script", reply) from None
    updated_at = time_of(int(updated)) if updated.isdigit() else EPOCH
    return ConversationInfo(
        id=session_id,
        owner=owner or None,
        title=title or None,
        created_at=time_of(int(created)) if created.isdigit() else updated_at,
        updated_at=updated_at,
        message_count=count,
        metadata=metadata,
        forked_from=forked or None,
    )
