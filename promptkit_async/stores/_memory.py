"""MemoryStore: the embedded store for development, tests and demos.

Same semantics as :class:`RedisStore` (append-only, retention cap, sliding
TTL, idempotent turn ids, ids and times given at commit) with no I/O, so that
code tested against it behaves the same in production. State is per
instance, never module-global.
"""

from __future__ import annotations

import heapq
import time
from time import perf_counter
from typing import TYPE_CHECKING

from .._codec import id_number, time_of
from .._config import DEFAULT_MAX_STORED, DEFAULT_TTL, check_limit, check_session_id, ttl_seconds
from .._exceptions import MessageNotFound, SessionExists, StoreUnavailable
from .._messages import message_bytes, stamped
from .._metrics import StateMetrics
from ._shared import BaseStore, check_before, restored

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from .._messages import Message
    from .._types import TTL
    from ._contract import Turn, TurnOutcome


__all__ = ["MemoryStore"]

#: How many recent turn ids each session remembers for idempotent re-sends.
_TURN_MEMORY = 64


def _approx_size(message: Message) -> int:
    """Roughly the bytes the stored record takes (the content plus record framing)."""
    size = 40 + message_bytes(message)
    for call in message.tool_calls:
        size += 12 + len(call.id)
    return size


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _History:
    __slots__ = ("expires_at", "last", "last_ms", "messages", "next_id", "size", "turns")

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.expires_at: float | None = None
        # Ids count up per session; a commit's time never goes below the last.
        self.next_id = 0
        self.last_ms = 0
        # The last turn's id and its messages as stored: what a re-send returns.
        self.last: tuple[str, tuple[Message, ...]] = ("", ())
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
        max_stored: messages kept per session, newest kept (None: unlimited);
            trimmed inside each commit.
        clock: a monotonic clock in seconds for expiry, replaceable in tests
            to move time forward without sleeping.
        wall_clock: the time messages are stamped with, in ms since the epoch.
        observers: objects with ``on_load`` / ``on_save`` / ``on_error`` hooks.
    """

    def __init__(
        self,
        *,
        max_stored: int | None = DEFAULT_MAX_STORED,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], int] = _now_ms,
        observers: Sequence[object] = (),
    ) -> None:
        check_limit("max_stored", max_stored)
        super().__init__(observers=observers)
        self._max_stored = max_stored
        self._clock = clock
        self._wall_clock = wall_clock
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

    @property
    def max_stored(self) -> int | None:
        """Messages kept per session (newest kept; None: unlimited)."""
        return self._max_stored

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

    async def load(
        self, session_id: str, limit: int | None = None, *, before: str | None = None
    ) -> list[Message]:
        """The newest ``limit`` messages (all when None), oldest first.

        With ``before`` (a message id), the ``limit`` kept messages just older
        than that message.

        Raises:
            MessageNotFound: no kept message has the id ``before``.
        """
        session_id = check_session_id(session_id)
        check_limit("limit", limit, minimum=0)
        started = perf_counter()
        hist = self._live(session_id, self._clock())
        stored = hist.messages if hist is not None else []
        end = len(stored)
        if before is not None:
            end = _position(stored, check_before(before), hist)
            if end < 0:
                raise MessageNotFound(session_id, before)
        if limit is None:
            window = stored[:end]
        else:
            window = stored[max(0, end - limit) : end] if limit else []
        self._instruments.loaded(session_id, started, len(window))
        return window

    async def count(self, session_id: str) -> int:
        """How many messages the session keeps (0 if none)."""
        hist = self._live(check_session_id(session_id), self._clock())
        return 0 if hist is None else len(hist.messages)

    async def commit(self, turn: Turn) -> tuple[Message, ...]:
        """Append ``turn`` atomically unless its turn id was applied or aborted before.

        Returns the messages as stored, with their ids and time.
        """
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
            if seen:  # a re-sent commit of a turn already applied
                last_turn, last_stored = hist.last
                return last_stored if last_turn == turn.turn_id else batch
            if seen is not None:
                raise StoreUnavailable(
                    f"session {session_id!r} not saved: turn {turn.turn_id} was aborted earlier",
                    session_id=session_id,
                    unsaved=batch,
                )
        hist.remember(turn.turn_id, True)
        ms = self._wall_clock()
        if ms < hist.last_ms:
            ms = hist.last_ms
        hist.last_ms = ms
        when = time_of(ms)
        first = hist.next_id
        batch = tuple(stamped(m, str(first + i), when) for i, m in enumerate(batch))
        hist.next_id = first + len(batch)
        hist.last = (turn.turn_id, batch)
        added = 0
        for m in batch:
            added += _approx_size(m)
        stored = hist.messages
        stored.extend(batch)
        removed_count = 0
        cap = self._max_stored
        if turn.max_messages is not None and (cap is None or turn.max_messages < cap):
            cap = turn.max_messages
        if cap is not None and len(stored) > cap:
            removed_count = len(stored) - cap
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
        return batch

    async def restore(
        self,
        session_id: str,
        messages: Sequence[Message],
        *,
        replace: bool = False,
        ttl: TTL = DEFAULT_TTL,
    ) -> list[Message]:
        """Write a whole conversation (an import); the messages as stored.

        Raises:
            SessionExists: the session has history and ``replace`` is false.
            InvalidMessage: ids or times that cannot be kept as given.
        """
        session_id = check_session_id(session_id)
        seconds = ttl_seconds(ttl)
        now = self._clock()
        self._sweep(now)
        if self._live(session_id, now) is not None and not replace:
            raise SessionExists(session_id)
        stored, times, next_id = restored(messages, self._max_stored, self._wall_clock())
        self._drop(session_id)
        if not stored:
            return []
        hist = self._data[session_id] = _History()
        hist.messages.extend(stored)
        hist.next_id = next_id
        hist.last_ms = times[-1]
        hist.size = sum(_approx_size(m) for m in stored)
        self._bytes_total += hist.size
        self._messages_total += len(stored)
        if seconds is not None:
            hist.expires_at = now + seconds
            self._schedule(session_id, hist.expires_at)
        return list(stored)

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


def _position(stored: list[Message], message_id: str, hist: _History | None) -> int:
    """Where the message with ``message_id`` is in ``stored`` (-1: not kept)."""
    number = id_number(message_id)
    if hist is not None and number is not None:
        at = number - (hist.next_id - len(stored))
        if 0 <= at < len(stored) and stored[at].id == message_id:
            return at
    for at, message in enumerate(stored):
        if message.id == message_id:
            return at
    return -1
