"""The live-session index and the store's size figures for ``metrics()``.

On standalone Redis the commit script keeps ``<prefix>:index``, a sorted set
of encoded session ids scored by expiry time (``+inf`` for sessions kept
forever), pruning expired members as it goes. ``metrics()`` is then one
script call whatever the number of sessions: an exact count, and history
sizes and bytes from a random sample, computed server-side. A Cluster cannot
write that key in the same atomic step as a session's keys (another slot),
so there the index is off and sessions are counted by SCAN.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from redis import exceptions as rexc

from . import _keys
from ._replies import BadReply, entries, figures, integer
from ._scripts import INDEX_STATS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ._link import Link

__all__ = ["SessionIndex"]


class SessionIndex:
    """The index key (None when off) and the sampling of session sizes."""

    __slots__ = ("_link", "_memory_usage", "key")

    def __init__(self, link: Link, *, enabled: bool) -> None:
        self._link = link
        self.key: bytes | None = (
            _keys.index_key(link.prefix) if enabled and not link.cluster else None
        )
        # MEMORY USAGE gives bytes used; servers that lack or forbid it get
        # the sum of the stored records instead.
        self._memory_usage = True

    async def figures(self, sample: int, sessions: AsyncIterator[str]) -> tuple[int, int, int, int]:
        """``(live sessions, sampled, their messages, their bytes)``.

        ``sessions`` (every live id, by SCAN) is read only when the index is off.
        """
        if self.key is not None:
            return await self._index_stats(sample)
        ids: list[str] = []
        active = 0
        async for session_id in sessions:
            active += 1
            if len(ids) < sample:
                ids.append(session_id)
        lengths, sizes = await self._sizes(ids)
        return active, len(ids), sum(lengths), sum(sizes)

    async def _index_stats(self, sample: int) -> tuple[int, int, int, int]:
        assert self.key is not None
        head, history_tail = _keys.key_parts(self._link.prefix, _keys.HISTORY)
        turns_tail = _keys.key_parts(self._link.prefix, _keys.TURNS)[1]
        parts = (head, history_tail, turns_tail)
        client = self._link.client
        if self._memory_usage:
            try:
                return figures(await INDEX_STATS(client, (self.key,), (sample, "memory", *parts)))
            except rexc.ResponseError as exc:
                if "MEMORY" not in str(exc).upper():
                    raise
                self._memory_usage = False  # a server that lacks or forbids MEMORY
        return figures(await INDEX_STATS(client, (self.key,), (sample, "sum", *parts)))

    async def _sizes(self, ids: list[str]) -> tuple[list[int], list[int]]:
        """LLEN and bytes used of each sampled session, in one pipelined round trip."""
        if not ids:
            return [], []
        prefix = self._link.prefix
        pipe = self._link.client.pipeline(transaction=False)
        for session_id in ids:
            h, t = _keys.session_keys(prefix, session_id)
            pipe.execute_command("LLEN", h)
            if self._memory_usage:
                pipe.execute_command("MEMORY USAGE", h)
                pipe.execute_command("MEMORY USAGE", t)
            else:
                pipe.execute_command("LRANGE", h, 0, -1)
        replies = await pipe.execute(raise_on_error=False)
        if self._memory_usage and any(isinstance(r, rexc.ResponseError) for r in replies):
            self._memory_usage = False
            return await self._sizes(ids)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        lengths: list[int] = []
        sizes: list[int] = []
        step = 3 if self._memory_usage else 2
        if len(replies) != step * len(ids):
            raise BadReply("the size sample", replies)
        for i in range(0, len(replies), step):
            lengths.append(integer("LLEN", replies[i]))
            if self._memory_usage:
                used = [integer("MEMORY USAGE", r or 0) for r in replies[i + 1 : i + 3]]
                sizes.append(sum(used))
            else:
                sizes.append(sum(len(r) for r in entries("LRANGE", replies[i + 1])))
        return lengths, sizes
