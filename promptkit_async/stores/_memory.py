"""MemoryStore: the embedded store for development, tests and demos.

Same semantics as :class:`RedisStore` (append-only, capped, sliding TTL,
idempotent turn ids) with no I/O, so that code tested against it behaves the
same in production. State is per instance, never module-global.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from time import perf_counter
from typing import TYPE_CHECKING

from .._config import DEFAULT_TTL, TTL, check_limit, check_session_id, ttl_seconds
from .._exceptions import InvalidMessage
from .._locks import LockRegistry
from .._messages import Message
from .._metrics import LatencyWindow, Observers, StateMetrics
from .._resources import AsyncResource

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence


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
        self.turns: deque[str] = deque(maxlen=_TURN_MEMORY)
        self.size = 0


class MemoryStore(AsyncResource):
    """An in-process store with Redis semantics.

    Args:
        clock: a monotonic clock in seconds, replaceable in tests to move
            time forward without sleeping.
        observers: objects with ``on_load`` / ``on_save`` / ``on_error`` hooks.
    """

    #: Operations never suspend, so a commit cannot be interrupted half-way.
    in_process = True

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, observers: Sequence[object] = ()
    ) -> None:
        self._clock = clock
        self._data: dict[str, _History] = {}
        # (expires_at, session id) of every write with a TTL, earliest first:
        # expired sessions are swept from the top in O(log n) each, whatever mix
        # of TTLs they have. Entries made stale by a later write are skipped,
        # and the heap is rebuilt when they outnumber the live sessions.
        self._expiry: list[tuple[float, str]] = []
        self.locks = LockRegistry()
        self.observers = Observers(observers)
        self._load_latency = LatencyWindow()
        self._save_latency = LatencyWindow()
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

    def add_observer(self, observer: object) -> None:
        """Register an object with ``on_load`` / ``on_save`` / ``on_error`` hooks."""
        self.observers.add(observer)

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
        elapsed = perf_counter() - started
        self._load_latency.add(elapsed)
        if self.observers:
            self.observers.load(session_id, elapsed, len(window))
        return window

    async def append(
        self,
        session_id: str,
        messages: Sequence[Message],
        *,
        max_messages: int | None = None,
        ttl: TTL = DEFAULT_TTL,
        turn_id: str | None = None,
    ) -> None:
        """Append atomically, cap to the newest ``max_messages``, refresh the TTL."""
        session_id = check_session_id(session_id)
        check_limit("max_messages", max_messages)
        seconds = ttl_seconds(ttl)
        batch = list(messages)
        if not batch:
            return  # as on Redis: nothing to write creates nothing
        added = 0
        for i, m in enumerate(batch):
            if type(m) is not Message and not isinstance(m, Message):
                raise InvalidMessage(f"messages[{i}] is {type(m).__name__}, not a Message")
            added += _approx_size(m)
        started = perf_counter()
        now = self._clock()
        self._sweep(now)
        hist = self._live(session_id, now)
        if hist is None:
            hist = self._data[session_id] = _History()
        elif turn_id is not None and turn_id in hist.turns:
            return  # a re-sent commit of a turn already applied
        if turn_id is not None:
            hist.turns.append(turn_id)
        stored = hist.messages
        stored.extend(batch)
        removed_count = 0
        if max_messages is not None and len(stored) > max_messages:
            removed_count = len(stored) - max_messages
            added -= sum(_approx_size(m) for m in stored[:removed_count])
            del stored[:removed_count]
        hist.size += added
        self._bytes_total += added
        self._messages_total += len(batch) - removed_count
        if seconds is None:
            hist.expires_at = None
        else:
            hist.expires_at = now + seconds
            self._schedule(session_id, hist.expires_at)
        elapsed = perf_counter() - started
        self._save_latency.add(elapsed)
        if self.observers:
            self.observers.save(session_id, elapsed, len(batch))

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

    async def list_sessions(self, prefix: str = "") -> list[str]:
        """The ids of sessions starting with ``prefix``, sorted (see :meth:`sessions`)."""
        return sorted({session_id async for session_id in self.sessions(prefix)})

    async def delete_prefix(self, prefix: str) -> int:
        """Erase every session whose id starts with ``prefix``; returns how many."""
        if not isinstance(prefix, str) or not prefix:
            raise ValueError("delete_prefix needs a non-empty str prefix")
        doomed = [s async for s in self.sessions(prefix)]
        for session_id in doomed:
            self._drop(session_id)
        return len(doomed)

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
            load_latency=self._load_latency.summary(),
            save_latency=self._save_latency.summary(),
            storage_used=self._bytes_total,
            sampled=active,
            exact=True,
        )
