"""MemoryStore: the embedded store for development, tests and demos.

Same semantics as :class:`RedisStore` (append-only, capped, sliding TTL,
idempotent turn ids) with no I/O, so that code tested against it behaves the
same in production. State is per instance, never module-global.
"""

from __future__ import annotations

import heapq
import time
from time import perf_counter
from typing import TYPE_CHECKING

from .._config import check_limit, check_session_id
from .._exceptions import StoreUnavailable
from .._metrics import StateMetrics
from ._shared import BaseStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from .._messages import Message
    from ._contract import Turn, TurnOutcome


__all__ = ["MemoryStore"]

#: How many recent turn ids each session remembers for idempotent re-sends.
_TURN_MEMORY = 64


def _approx_size(message: Message) -> int:
    """Roughly the bytes the stored record takes (the text plus record framing)."""
    size = 24 + len(message.content)
    if message.tool_calls:
        for call in message.tool_calls:
            size += 12 + len(call.id) + len(call.name) + len(call.arguments)
    return size


class _History:
    __slots__ = ("expires_at", "messages", "size", "turns")

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.expires_at: float | None = None
        # Recent turn ids, oldest first: True applied, False aborted (a dict for
        # O(1) checks; insertion order is the age order).
        self.turns: dict[str, bool] = {}
        self.size = 0

    def remember(self, turn_id: str, applied: bool) -> None:
        turns = self.turns
        turns[turn_id] = applied
        if len(turns) > _TURN_MEMORY:
            del turns[next(iter(turns))]


class MemoryStore(BaseStore):
    """An in-process store with Redis semantics.

    Its operations never suspend, so a commit cannot be interrupted half-way
    and is decided the moment it is made.

    Args:
        clock: a monotonic clock in seconds, replaceable in tests to move
            time forward without sleeping.
        observers: objects with ``on_load`` / ``on_save`` / ``on_error`` hooks.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, observers: Sequence[object] = ()
    ) -> None:
        super().__init__(observers=observers)
        self._clock = clock
        self._data: dict[str, _History] = {}
        # (expires_at, session id) of every write with a TTL, earliest first:
        # expired sessions are swept from the top in O(log n) each, whatever mix
        # of TTLs they have. Entries made stale by a later write are skipped,
        # and the heap is rebuilt when they outnumber the live sessions.
        self._expiry: list[tuple[float, str]] = []
        self._messages_total = 0
        self._bytes_total = 0
        self._closed = False

    def __repr__(self) -> str:
        return f"MemoryStore(sessions={len(self._data)})"

    async def aclose(self) -> None:
        self._closed = True

    def _live(self, session_id: str, now: float) -> _History | None:
        hist = self._data.get(session_id)
        if hist is not None and hist.expires_at is not None and hist.expires_at <= now:
            self._drop(session_id)
            return None
        return hist

    def _drop(self, session_id: str) -> None:
        hist = self._data.pop(session_id, None)
        if hist is not None:
            self._messages_total -= len(hist.messages)
            self._bytes_total -= hist.size

    def _sweep(self, now: float) -> None:
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            expires_at, session_id = heapq.heappop(expiry)
            hist = self._data.get(session_id)
            if hist is not None and hist.expires_at == expires_at:
                self._drop(session_id)

    def _schedule(self, session_id: str, expires_at: float) -> None:
        expiry = self._expiry
        heapq.heappush(expiry, (expires_at, session_id))
        if len(expiry) > 2 * len(self._data) + 64:
            self._expiry = [
                (h.expires_at, sid) for sid, h in self._data.items() if h.expires_at is not None
            ]
            heapq.heapify(self._expiry)

    async def load(self, session_id: str, limit: int | None = None) -> list[Message]:
        """The newest ``limit`` messages (all when None), oldest first."""
        session_id = check_session_id(session_id)
        check_limit("limit", limit, minimum=0)
        started = perf_counter()
        hist = self._live(session_id, self._clock())
        if hist is None:
            window: list[Message] = []
        elif limit is None:
            window = hist.messages.copy()
        else:
            window = hist.messages[-limit:] if limit else []
        self._instruments.loaded(session_id, started, len(window))
        return window

    async def commit(self, turn: Turn) -> None:
        """Append ``turn`` atomically unless its turn id was applied or aborted before."""
        if turn.fence is not None:
            raise TypeError("MemoryStore has no leases: a fenced turn cannot be written here")
        started = perf_counter()
        session_id = turn.session_id
        batch = turn.messages
        now = self._clock()
        self._sweep(now)
        hist = self._live(session_id, now)
        if hist is None:
            hist = self._data[session_id] = _History()
        else:
            seen = hist.turns.get(turn.turn_id)
            if seen:
                return  # a re-sent commit of a turn already applied
            if seen is not None:
                raise StoreUnavailable(
                    f"session {session_id!r} not saved: turn {turn.turn_id} was aborted earlier",
                    session_id=session_id,
                    unsaved=batch,
                )
        hist.remember(turn.turn_id, True)
        added = 0
        for m in batch:
            added += _approx_size(m)
        stored = hist.messages
        stored.extend(batch)
        removed_count = 0
        max_messages = turn.max_messages
        if max_messages is not None and len(stored) > max_messages:
            removed_count = len(stored) - max_messages
            added -= sum(_approx_size(m) for m in stored[:removed_count])
            del stored[:removed_count]
        hist.size += added
        self._bytes_total += added
        self._messages_total += len(batch) - removed_count
        if turn.ttl is None:
            hist.expires_at = None
        else:
            hist.expires_at = now + turn.ttl
            self._schedule(session_id, hist.expires_at)
        self._instruments.saved(session_id, started, len(batch))

    async def settle_turn(self, session_id: str, turn_id: str) -> TurnOutcome:
        """Applied if the turn id was committed; else it is marked aborted for good."""
        session_id = check_session_id(session_id)
        hist = self._live(session_id, self._clock())
        if hist is None:
            return "aborted"  # never applied here, and no commit can be in flight
        seen = hist.turns.get(turn_id)
        if seen:
            return "applied"
        if seen is None:
            hist.remember(turn_id, False)
        return "aborted"

    async def delete(self, session_id: str) -> bool:
        """Erase the session; True if it existed."""
        session_id = check_session_id(session_id)
        existed = self._live(session_id, self._clock()) is not None
        self._drop(session_id)
        return existed

    async def ttl(self, session_id: str) -> float | None:
        """Seconds until the session expires; None if it has no TTL or does not exist."""
        session_id = check_session_id(session_id)
        now = self._clock()
        hist = self._live(session_id, now)
        if hist is None or hist.expires_at is None:
            return None
        return hist.expires_at - now

    async def exists(self, session_id: str) -> bool:
        session_id = check_session_id(session_id)
        return self._live(session_id, self._clock()) is not None

    async def sessions(self, prefix: str = "") -> AsyncIterator[str]:
        """Yield the ids of live sessions starting with ``prefix`` (a literal, not a glob)."""
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        now = self._clock()
        for session_id in [s for s in self._data if s.startswith(prefix)]:
            if self._live(session_id, now) is not None:
                yield session_id

    async def metrics(self, *, sample: int = 200) -> StateMetrics:
        """A snapshot in O(1) (plus sweeping what expired): exact counts, estimated bytes.

        ``storage_used`` estimates the stored size (record text plus framing).
        """
        check_limit("sample", sample)
        self._sweep(self._clock())
        active = len(self._data)
        return StateMetrics(
            active_sessions=active,
            avg_history_size=self._messages_total / active if active else 0.0,
            load_latency=self._instruments.load_latency.summary(),
            save_latency=self._instruments.save_latency.summary(),
            storage_used=self._bytes_total,
            sampled=active,
            exact=True,
        )
