"""The live-session index and the store's size figures for ``metrics()``.

No script may touch keys of two Cluster slots (Cluster proxies refuse it even
behind a standalone client), so on standalone Redis the index is kept per
slot: ``<prefix>:index:{<tag>}`` is a sorted set of the encoded ids of the
sessions whose keys live in that slot, scored by when each expires (``+inf``
for sessions kept forever). The commit script that writes a session writes
its slot's index in the same atomic step, pruning expired members as it goes:
no extra command per turn, and the count is exact.

``metrics()`` must then know which of the 16,384 slots hold an index:
``<prefix>:index:slots`` lists them, each scored by a time up to which its
index may hold a live session. A store registers a slot beside a commit (a
call of its own, at the same time, like a Cluster's owner listing) the first
time it writes there, and again when that time could be reached or at least
every ``_REFRESH`` seconds, so a registry that was evicted or lost a write
heals within minutes. ``metrics()`` then reads the registry, counts each
listed slot's live members (one pipelined round trip of ``ZCOUNT``, O(slots
listed), at most 16,384 cheap commands), draws a uniform sample of members
and reads their sizes: four round trips.

An older version kept every session in one ``<prefix>:index``. ``metrics()``
folds what it finds there into the per-slot indexes, a batch at a time (each
batch taken out of the old key atomically, each session adopted only while
its history exists), so a rolling upgrade counts the sessions of both
versions, and the old key is gone once no old process writes it.

On a Cluster the index is off (a Cluster client counts sessions with SCAN
over every primary), and with ``track_sessions=False``.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import math
import random
import time
from typing import TYPE_CHECKING, Any, Final

from redis import exceptions as rexc

from . import _keys
from ._replies import BadReply, array, entries, integer, text
from ._scripts import ADOPT, LEGACY_POP, REGISTER

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ._link import Link

__all__ = ["SessionIndex"]

logger = logging.getLogger("promptkit_async.stores.redis")

#: A slot's registration is renewed at least this often (seconds), so that a
#: registry evicted or written around heals by itself.
_REFRESH: Final = 900.0
#: Members taken out of an older version's index per step.
_LEGACY_BATCH: Final = 500
_FOREVER: Final = 0
#: Commands per pipeline when reading many slots' indexes.
_BATCH: Final = 1000


class SessionIndex:
    """The per-slot index keys (``enabled`` False when off) and the metrics figures."""

    __slots__ = (
        "_held",
        "_legacy",
        "_legacy_refused",
        "_link",
        "_memory_usage",
        "_registry",
        "_slot_keys",
        "enabled",
    )

    def __init__(self, link: Link, *, enabled: bool) -> None:
        self._link = link
        self.enabled = bool(enabled) and not link.cluster
        self._registry = _keys.slot_registry_key(link.prefix)
        self._legacy = _keys.legacy_index_key(link.prefix)
        self._slot_keys: dict[int, bytes] = {}
        # slot -> (monotonic time until which it counts as registered, the longest
        # TTL in ms its registration covers; _FOREVER: sessions kept forever too).
        self._held: dict[int, tuple[float, int]] = {}
        self._legacy_refused = False
        # MEMORY USAGE gives bytes used; servers that lack or forbid it get
        # the sum of the stored records instead.
        self._memory_usage = True

    def slot_key(self, slot: int) -> bytes:
        found = self._slot_keys.get(slot)
        if found is None:
            found = self._slot_keys[slot] = _keys.slot_index_key(self._link.prefix, slot)
        return found

    def entry(self, member: str, ttl_ms: int) -> tuple[bytes | None, asyncio.Future[None] | None]:
        """For a write of the session ``member`` (an encoded id) with ``ttl_ms`` (0:
        forever): the index key its script writes (None: off), and the registration
        of its slot, started now to run beside that script, when one is due."""
        if not self.enabled:
            return None, None
        slot = _keys.slot_of(member)
        key = self.slot_key(slot)
        now = time.monotonic()
        held = self._held.get(slot)
        if held is not None and now < held[0]:
            covered = held[1]
            if covered == _FOREVER or (ttl_ms != _FOREVER and ttl_ms <= covered):
                return key, None
        # Registered for the TTL plus a window: a commit while the window runs
        # expires no later than the registration covers.
        window = _REFRESH if ttl_ms == _FOREVER else min(ttl_ms / 1000, _REFRESH)
        self._held[slot] = (now + window - min(1.0, window / 4), ttl_ms)
        extra = "" if ttl_ms == _FOREVER else int(ttl_ms + window * 1000)
        return key, asyncio.ensure_future(self._register(slot, extra))

    async def _register(self, slot: int, extra: int | str) -> None:
        try:
            await REGISTER(self._link.client, (self._registry,), (slot, extra))
        except BaseException:
            self._held.pop(slot, None)  # not registered: the next write tries again
            raise

    # -- metrics -------------------------------------------------------------------------

    async def figures(self, sample: int, sessions: AsyncIterator[str]) -> tuple[int, int, int, int]:
        """``(live sessions, sampled, their messages, their bytes)``.

        ``sessions`` (every live id, by SCAN) is read only when the index is off.
        """
        if self.enabled:
            return await self._indexed(sample)
        ids: list[str] = []
        active = 0
        async for session_id in sessions:
            active += 1
            if len(ids) < sample:
                ids.append(session_id)
        lengths, sizes = await self._sizes(ids)
        return active, len(ids), sum(lengths), sum(sizes)

    async def _indexed(self, sample: int) -> tuple[int, int, int, int]:
        now, slots, legacy = await self._registered()
        if legacy and not self._legacy_refused:
            await self._adopt_legacy()
            now, slots, _ = await self._registered()
        if not slots:
            return 0, 0, 0, 0
        live = f"({now}"
        counted = await self._each([("ZCOUNT", self.slot_key(s), live, "+inf") for s in slots])
        counts = [integer("ZCOUNT", c) for c in counted]
        total = sum(counts)
        if total == 0:
            return 0, 0, 0, 0
        reads: list[tuple[Any, ...]] = []
        if total <= sample:  # every live session
            for slot, count in zip(slots, counts, strict=True):
                if count:
                    reads.append(("ZRANGEBYSCORE", self.slot_key(slot), live, "+inf"))
        else:  # a uniform sample without replacement: ranks across the slots' counts
            ends = list(itertools.accumulate(counts))
            for rank in sorted(random.sample(range(total), sample)):
                at = bisect.bisect_right(ends, rank)
                offset = rank - (ends[at - 1] if at else 0)
                key = self.slot_key(slots[at])
                reads.append(("ZRANGEBYSCORE", key, live, "+inf", "LIMIT", offset, 1))
        members: list[str] = []
        for found in await self._each(reads):
            members += (text("ZRANGEBYSCORE", m) for m in entries("ZRANGEBYSCORE", found))
        ids = [_keys.decode_id(m) for m in dict.fromkeys(members)]
        lengths, sizes = await self._sizes(ids)
        return total, len(ids), sum(lengths), sum(sizes)

    async def _each(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Plain commands pipelined, ``_BATCH`` at a time: a round trip per batch, so that
        packing thousands of commands and parsing their replies never holds the event
        loop for long."""
        out: list[Any] = []
        for start in range(0, len(commands), _BATCH):
            pipe = self._link.client.pipeline(transaction=False)
            for command in commands[start : start + _BATCH]:
                pipe.execute_command(*command)
            out += await pipe.execute()
        return out

    async def _registered(self) -> tuple[int, list[int], bool]:
        """The server's time (ms), the slots whose index may hold live sessions, and
        whether an older version's index is there: one round trip."""
        pipe = self._link.client.pipeline(transaction=False)
        pipe.execute_command("TIME")
        pipe.execute_command("ZRANGE", self._registry, 0, -1, "WITHSCORES")
        pipe.execute_command("EXISTS", self._legacy)
        clock, listed, legacy = await pipe.execute()
        if not isinstance(clock, (list, tuple)) or len(clock) != 2:
            raise BadReply("TIME", clock)
        now = int(clock[0]) * 1000 + int(clock[1]) // 1000
        slots = []
        for member, score in _scored("ZRANGE", listed):
            if member.isdigit() and int(member) < _keys.SLOTS and score > now:
                slots.append(int(member))
        return now, slots, integer("EXISTS", legacy) > 0

    async def _adopt_legacy(self) -> None:
        """Fold an older version's ``<prefix>:index`` into the per-slot indexes."""
        client, prefix = self._link.client, self._link.prefix
        while True:
            try:
                reply = array(
                    "the index hand-over",
                    await LEGACY_POP(client, (self._legacy,), (_LEGACY_BATCH,)),
                )
            except rexc.ResponseError as exc:
                if "WRONGTYPE" not in str(exc):
                    raise
                logger.warning(
                    "%r is not a sorted set (an older version's session index, damaged or "
                    "foreign): left as it is, and its sessions are counted by metrics() "
                    "only once they commit again",
                    self._legacy.decode(errors="replace"),
                )
                self._legacy_refused = True
                return
            if not reply:
                raise BadReply("the index hand-over", reply)
            now = integer("the index hand-over", reply[0])
            taken = _scored("the index hand-over", reply[1:])
            by_slot: dict[int, list[tuple[str, str]]] = {}
            for member, score in taken:
                if score > now:
                    at_ms = "inf" if math.isinf(score) else str(int(score))
                    by_slot.setdefault(_keys.slot_of(member), []).append((member, at_ms))
            adopt = []
            register = []
            for slot, found in by_slot.items():
                keys = [self.slot_key(slot)]
                args: list[str] = []
                for member, at_ms in found:
                    keys.append(_keys.key(prefix, _keys.decode_id(member), _keys.HISTORY))
                    args += (member, at_ms)
                adopt.append((keys, args))
                ends = [at_ms for _, at_ms in found]
                extra: int | str = "" if "inf" in ends else max(map(int, ends)) - now + 1
                register.append(((self._registry,), (slot, extra)))
            # Registered first: an adopted session is never in an unlisted slot.
            await REGISTER.each(client, register)
            await ADOPT.each(client, adopt)
            if len(taken) < _LEGACY_BATCH:
                return

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


def _scored(command: str, reply: object) -> list[tuple[str, float]]:
    """``(member, score)`` pairs of a WITHSCORES reply, flat (RESP2) or paired (RESP3,
    and redis-py's own parsing on some clients)."""
    items = array(command, reply)
    if all(type(i) is list and len(i) == 2 for i in items):
        pairs = [(i[0], i[1]) for i in items]
    elif len(items) % 2 == 0:
        pairs = [(items[at], items[at + 1]) for at in range(0, len(items), 2)]
    else:
        raise BadReply(command, reply)
    out = []
    for member, score in pairs:
        try:
            value = float(score if type(score) in (int, float) else text(command, score))
        except ValueError:
            raise BadReply(command, reply) from None
        out.append((text(command, member), value))
    return out
