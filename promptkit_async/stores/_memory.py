"""MemoryStore: the embedded store for development, tests and demos.

Same semantics as :class:`RedisStore` (append-only, retention cap, sliding
TTL, idempotent turn ids, ids and times given at commit) with no I/O, so that
code tested against it behaves the same in production. State is per
instance, never module-global.
"""

from __future__ import annotations

import heapq
import json
import secrets
import time
from time import perf_counter, time_ns
from typing import TYPE_CHECKING

from .._codec import EPOCH, id_number, message_id, time_of
from .._config import (
    DEFAULT_MAX_STORED,
    DEFAULT_TTL,
    check_limit,
    check_owner,
    check_session_id,
    ttl_seconds,
)
from .._exceptions import (
    ConversationExists,
    ConversationNotFound,
    InvalidCursor,
    MessageNotFound,
    OwnerMismatch,
    SessionExists,
)
from .._info import UNCHANGED, ConversationInfo, ConversationPage
from .._messages import Message, _Unfrozen, message_bytes
from .._metrics import StateMetrics
from .._summaries import close_summaries, summary_figures
from ._contract import not_newest
from ._shared import (
    BaseStore,
    aborted_earlier,
    check_before,
    check_fork,
    check_info_update,
    check_page,
    check_summary_write,
    restored,
    summary_stamped,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping, Sequence
    from datetime import datetime

    from .._summary import Summary
    from .._types import TTL, JSONValue
    from ._contract import Turn, TurnOutcome


__all__ = ["MemoryStore"]

#: How many recent turn ids each session remembers for idempotent re-sends.
_TURN_MEMORY = 64
#: How long the snapshot behind a listing's later pages lives.
_SNAPSHOT_SECONDS = 600.0


def _approx_size(message: Message) -> int:
    """Roughly the bytes the stored record takes (the content plus record framing)."""
    size = 40 + message_bytes(message)
    for call in message.tool_calls:
        size += 12 + len(call.id)
    return size


def _now_ms() -> int:
    return time_ns() // 1_000_000


class _History:
    __slots__ = (
        "created_ms",
        "custom",
        "expires_at",
        "forked_from",
        "gen",
        "last",
        "last_ms",
        "messages",
        "next_id",
        "owner",
        "scheduled",
        "size",
        "summary",
        "title",
        "turns",
    )

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.expires_at: float | None = None
        # The expiry this history's entry in the store's heap was pushed with
        # (None: it has none).
        self.scheduled: float | None = None
        # Ids count positions per session (next_id: the next one), with the
        # generation once the history was rewound; a commit's time never goes
        # below the last.
        self.next_id = 0
        self.gen = 0
        self.last_ms = 0
        self.created_ms = 0
        self.owner: str | None = None
        self.title: str | None = None
        self.forked_from: str | None = None
        self.custom: dict[str, JSONValue] = {}
        # The last turn's id and its messages as stored: what a re-send returns.
        self.last: tuple[str, tuple[Message, ...]] = ("", ())
        # Recent turn ids, oldest first: True applied, False aborted (a dict for
        # O(1) checks; insertion order is the age order).
        self.turns: dict[str, bool] = {}
        self.size = 0
        self.summary: Summary | None = None

    def valid_summary(self) -> Summary | None:
        """The summary, while the message it covers up to is still that one."""
        summary = self.summary
        if summary is None:
            return None
        number = summary.upto_number
        base = self.next_id - len(self.messages)
        if number < base:
            return summary  # dropped by retention: every kept message is newer
        if number >= self.next_id or self.messages[number - base].id != summary.upto:
            return None  # rewound before it
        return summary

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
        # (expires_at, session id) of the sessions with a TTL, earliest first:
        # expired sessions are swept from the top in O(log n) each, whatever mix
        # of TTLs they have. A session has one entry, pushed again when it comes
        # up before its (since extended) expiry, so a write that only extends
        # the TTL pushes nothing. Entries of sessions gone are skipped, and the
        # heap is rebuilt when they outnumber the live sessions.
        self._expiry: list[tuple[float, str]] = []
        self._messages_total = 0
        self._bytes_total = 0
        self._closed = False
        # owner -> {session id: time of its last commit (ms)}: the listings.
        self._owners: dict[str, dict[str, int]] = {}
        # A listing's later pages: token -> (owner, ids newest first, expires at).
        self._snapshots: dict[str, tuple[str, list[str], float]] = {}
        # The time of the last commit's stamp, and that stamp (ms): see _stamp_time.
        self._when_ms = -1
        self._when = EPOCH

    def __repr__(self) -> str:
        return f"MemoryStore(sessions={len(self._data)})"

    @property
    def max_stored(self) -> int | None:
        """Messages kept per session (newest kept; None: unlimited)."""
        return self._max_stored

    async def aclose(self) -> None:
        self._closed = True
        await close_summaries(self)

    def _stamp_time(self, ms: int) -> datetime:
        """The datetime of a stamp in ms, kept for the commits within the same ms."""
        self._when = when = time_of(ms)
        self._when_ms = ms
        return when

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
            if hist.owner is not None:
                listed = self._owners.get(hist.owner)
                if listed is not None:
                    listed.pop(session_id, None)
                    if not listed:
                        del self._owners[hist.owner]

    def _sweep(self, now: float) -> None:
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            scheduled, session_id = heapq.heappop(expiry)
            hist = self._data.get(session_id)
            if hist is None or hist.scheduled != scheduled:
                continue  # the session is gone, or this entry is not its own
            hist.scheduled = None
            expires_at = hist.expires_at
            if expires_at is None:
                continue  # its TTL was removed since
            if expires_at <= now:
                self._drop(session_id)
            else:  # extended since: due again at its new expiry
                self._schedule(session_id, hist, expires_at)

    def _schedule(self, session_id: str, hist: _History, expires_at: float) -> None:
        """Make sure the heap holds ``hist`` at ``expires_at`` or before (it was just set)."""
        scheduled = hist.scheduled
        if scheduled is not None and scheduled <= expires_at:
            return  # its entry comes up first, and is pushed again then
        hist.scheduled = expires_at
        expiry = self._expiry
        heapq.heappush(expiry, (expires_at, session_id))
        if len(expiry) > 2 * len(self._data) + 64:
            rebuilt = []
            for sid, h in self._data.items():
                h.scheduled = h.expires_at
                if h.expires_at is not None:
                    rebuilt.append((h.expires_at, sid))
            heapq.heapify(rebuilt)
            self._expiry = rebuilt

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
        if type(limit) is not int or limit < 0:  # the common case needs no call
            check_limit("limit", limit, minimum=0)
        started = perf_counter()
        hist = self._data.get(session_id)  # _live, inlined: a turn's hot path
        if hist is not None and hist.expires_at is not None and hist.expires_at <= self._clock():
            self._drop(session_id)
            hist = None
        if hist is None:
            stored: list[Message] = []
        else:
            stored = hist.messages
        end = len(stored)
        if before is not None:
            end = _position(stored, check_before(before), hist)
            if end < 0:
                raise MessageNotFound(session_id, before)
        if limit is None:
            window = stored[:end]
        elif end == len(stored):
            window = stored[-limit:] if limit else []
        else:
            window = stored[max(0, end - limit) : end] if limit else []
        instruments = self._instruments  # instruments.loaded(...), inlined
        elapsed = perf_counter() - started
        instruments.add_load(elapsed)
        if instruments.hooked:
            instruments.observers.load(session_id, elapsed, len(window))
        return window

    # -- summaries ---------------------------------------------------------------

    async def load_summarized(
        self, session_id: str, longest: int | None
    ) -> tuple[list[Message], Summary | None]:
        """The valid summary and the newest ``longest`` kept messages after it."""
        session_id = check_session_id(session_id)
        check_limit("longest", longest)
        started = perf_counter()
        hist = self._live(session_id, self._clock())
        if hist is None:
            self._instruments.loaded(session_id, started, 0)
            return [], None
        summary = hist.valid_summary()
        stored = hist.messages
        start = 0
        if summary is not None:
            start = max(0, summary.upto_number + 1 - (hist.next_id - len(stored)))
        if longest is not None:
            start = max(start, len(stored) - longest)
        window = stored[start:]
        self._instruments.loaded(session_id, started, len(window))
        return window, summary

    async def write_summary(
        self, session_id: str, summary: Summary, *, previous: str | None
    ) -> bool:
        """Replace the summary of version ``previous`` by ``summary`` (see the contract)."""
        session_id = check_session_id(session_id)
        check_summary_write(summary, previous)
        hist = self._live(session_id, self._clock())
        if hist is None:
            return False
        current = hist.valid_summary()
        if (None if current is None else current.version) != previous:
            return False
        number = summary.upto_number
        base = hist.next_id - len(hist.messages)
        if number >= hist.next_id or number < base:
            return False
        if hist.messages[number - base].id != summary.upto:
            return False
        if current is not None and number <= current.upto_number:
            return False
        hist.summary = summary_stamped(summary, self._wall_clock())
        return True

    async def summary(self, session_id: str) -> Summary | None:
        """The valid summary of the conversation, or None."""
        session_id = check_session_id(session_id)
        hist = self._live(session_id, self._clock())
        return None if hist is None else hist.valid_summary()

    async def count(self, session_id: str) -> int:
        """How many messages the session keeps (0 if none)."""
        hist = self._live(check_session_id(session_id), self._clock())
        return 0 if hist is None else len(hist.messages)

    async def commit(self, turn: Turn) -> tuple[Message, ...]:
        """Append ``turn`` atomically unless its turn id was applied or aborted before.

        Returns the messages as stored, with their ids and time.
        """
        # One unpack instead of a property read per field: a turn's hot path.
        session_id, batch, turn_id, ttl, max_messages, fence, owner, after, replace_last = turn
        if fence is not None:
            raise TypeError("MemoryStore has no leases: a fenced turn cannot be written here")
        started = perf_counter()
        now = self._clock()
        expiry = self._expiry
        if expiry and expiry[0][0] <= now:
            self._sweep(now)
        hist = self._data.get(session_id)  # _live, inlined
        if hist is not None and hist.expires_at is not None and hist.expires_at <= now:
            self._drop(session_id)
            hist = None
        if hist is not None:
            seen = hist.turns.get(turn_id)
            if seen:  # a re-sent commit of a turn already applied
                last_turn, last_stored = hist.last
                return last_stored if last_turn == turn_id else batch
            if seen is not None:
                raise aborted_earlier(turn)
            if owner is not None and hist.owner not in (None, owner):
                raise OwnerMismatch(session_id)
        keep = -1  # how many messages the rewind keeps (-1: no rewind)
        if after is not None:
            cut = -1 if hist is None else _position(hist.messages, after, hist)
            if cut < 0:
                raise MessageNotFound(session_id, after)
            keep = cut + 1
        elif replace_last is not None:
            if hist is None or not hist.messages or hist.messages[-1].id != replace_last:
                raise not_newest(session_id, replace_last)
            keep = len(hist.messages) - 1
        if hist is None:
            hist = self._data[session_id] = _History()
        turns = hist.turns  # hist.remember(turn_id, True), inlined
        turns[turn_id] = True
        if len(turns) > _TURN_MEMORY:
            del turns[next(iter(turns))]
        stored = hist.messages
        if 0 <= keep < len(stored):
            dropped = stored[keep:]
            del stored[keep:]
            freed = sum(_approx_size(m) for m in dropped)
            hist.size -= freed
            self._bytes_total -= freed
            self._messages_total -= len(dropped)
            hist.next_id -= len(dropped)
            hist.gen += 1
        wall_clock = self._wall_clock
        ms = time_ns() // 1_000_000 if wall_clock is _now_ms else wall_clock()  # no call
        if ms < hist.last_ms:
            ms = hist.last_ms
        hist.last_ms = ms
        if not hist.created_ms:
            hist.created_ms = ms
        if owner is not None and hist.owner is None:
            hist.owner = owner
        # One datetime per ms (time_of caches too, for a call's price).
        when = self._when if ms == self._when_ms else self._stamp_time(ms)
        number, gen = hist.next_id, hist.gen
        added = 0
        for m in batch:
            # stamped(m, message_id(number, gen), when), inlined: without its
            # call, nor message_id's in the common case (two or more per turn).
            new = _Unfrozen()
            new.role = m.role
            new.content = content = m.content
            new.tool_calls = calls = m.tool_calls
            new.tool_call_id = m.tool_call_id
            new.name = m.name
            new.metadata = m.metadata
            new.is_error = m.is_error
            new.id = message_id(number, gen) if gen else str(number)
            new.created_at = when
            new.__class__ = Message  # type: ignore[assignment]
            stored.append(new)  # type: ignore[arg-type]  # a Message now
            number += 1
            if type(content) is str and content.isascii() and not calls:
                added += 40 + len(content)  # _approx_size's common case, inlined
            else:
                added += _approx_size(m)
        count = number - hist.next_id
        hist.next_id = number
        batch = tuple(stored[-count:]) if count else ()
        hist.last = (turn_id, batch)
        if hist.owner is not None:
            self._owners.setdefault(hist.owner, {})[session_id] = ms
        removed_count = 0
        cap = self._max_stored
        if max_messages is not None and (cap is None or max_messages < cap):
            cap = max_messages
        if cap is not None and len(stored) > cap:
            removed_count = len(stored) - cap
            added -= sum(_approx_size(m) for m in stored[:removed_count])
            del stored[:removed_count]
        hist.size += added
        self._bytes_total += added
        self._messages_total += count - removed_count
        if ttl is None:
            hist.expires_at = None
        else:
            expires_at = hist.expires_at = now + ttl
            scheduled = hist.scheduled
            if scheduled is None or expires_at < scheduled:  # else nothing to push
                self._schedule(session_id, hist, expires_at)
        instruments = self._instruments  # instruments.saved(...), inlined
        elapsed = perf_counter() - started
        instruments.add_save(elapsed)
        if instruments.hooked:
            instruments.observers.save(session_id, elapsed, count)
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
        stored, times, next_id, generation = restored(
            messages, self._max_stored, self._wall_clock()
        )
        self._drop(session_id)
        if not stored:
            return []
        hist = self._data[session_id] = _History()
        hist.messages.extend(stored)
        hist.next_id = next_id
        hist.gen = generation
        hist.last_ms = hist.created_ms = times[-1]
        hist.size = sum(_approx_size(m) for m in stored)
        self._bytes_total += hist.size
        self._messages_total += len(stored)
        if seconds is not None:
            hist.expires_at = now + seconds
            self._schedule(session_id, hist, hist.expires_at)
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

    # -- conversations -------------------------------------------------------------------

    def _owned(self, session_id: str, owner: str | None) -> _History | None:
        hist = self._live(check_session_id(session_id), self._clock())
        if hist is None or (owner is not None and hist.owner != check_owner(owner)):
            return None
        return hist

    async def info(self, session_id: str, *, owner: str | None = None) -> ConversationInfo | None:
        """The conversation's info; None for an unknown id (or, with ``owner``, another's)."""
        hist = self._owned(session_id, owner)
        return None if hist is None else _info(session_id, hist)

    async def update_info(
        self,
        session_id: str,
        *,
        title: str | None = UNCHANGED,
        metadata: Mapping[str, JSONValue] | None = None,
        owner: str | None = None,
    ) -> bool:
        """Rename, and merge custom metadata (a key set to None is removed); False when
        there is no such conversation (it is never created).

        Raises:
            OwnerMismatch: ``owner`` given, and the conversation is another's.
        """
        new_title, metadata, checked = check_info_update(title, metadata, owner)
        hist = self._live(check_session_id(session_id), self._clock())
        if hist is None:
            return False
        if checked is not None and hist.owner != checked:
            raise OwnerMismatch(session_id)
        if new_title is not UNCHANGED:
            hist.title = new_title  # type: ignore[assignment]
        for key, value in (metadata or {}).items():
            if value is None:
                hist.custom.pop(key, None)
            else:
                hist.custom[key] = json.loads(json.dumps(value))  # a copy, as stored
        return True

    async def conversations(
        self, owner: str, *, limit: int = 20, cursor: str | None = None
    ) -> ConversationPage:
        """An owner's conversations, newest ``updated_at`` first.

        Raises:
            InvalidCursor: a cursor this store did not give, or one that expired.
        """
        owner = check_owner(owner)
        check_page(limit, cursor)
        now = self._clock()
        self._sweep(now)
        for token in [t for t, (_, _, exp) in self._snapshots.items() if exp <= now]:
            del self._snapshots[token]
        if cursor is None:
            listed = self._owners.get(owner, {})
            ids = sorted(listed, key=lambda sid: (listed[sid], sid), reverse=True)
            token, offset = secrets.token_hex(8), 0
            if len(ids) > limit:
                self._snapshots[token] = (owner, ids, now + _SNAPSHOT_SECONDS)
        else:
            token, _, at = cursor.partition(".")
            snapshot = self._snapshots.get(token)
            if snapshot is None or snapshot[0] != owner or not at.isdigit():
                raise InvalidCursor(
                    f"cursor {cursor!r} is not one of this store's, or its listing expired; "
                    "start again from the first page"
                )
            ids, offset = snapshot[1], int(at)
        infos = [self._owned(sid, owner) for sid in ids[offset : offset + limit]]
        end = offset + limit
        if end >= len(ids):
            self._snapshots.pop(token, None)
        page = ids[offset:end]
        return ConversationPage(
            tuple(_info(sid, h) for sid, h in zip(page, infos, strict=True) if h is not None),
            f"{token}.{end}" if end < len(ids) else None,
        )

    async def fork(
        self,
        source_id: str,
        new_id: str,
        *,
        upto: str | None = None,
        title: str | None = None,
        replace: bool = False,
        owner: str | None = None,
    ) -> ConversationInfo:
        """Copy a conversation up to and including message ``upto`` (None: all of it).

        Raises:
            ConversationNotFound, MessageNotFound, ConversationExists, OwnerMismatch:
                as :meth:`RedisStore.fork`.
        """
        source_id, new_id = check_session_id(source_id), check_session_id(new_id)
        check_fork(source_id, new_id, upto, title)
        now = self._clock()
        source = self._live(source_id, now)
        if source is None:
            raise ConversationNotFound(source_id)
        if owner is not None and source.owner != check_owner(owner):
            raise OwnerMismatch(source_id)
        last = len(source.messages) - 1
        if upto is not None:
            last = _position(source.messages, upto, source)
            if last < 0:
                raise MessageNotFound(source_id, upto)
        if self._live(new_id, now) is not None and not replace:
            raise ConversationExists(new_id)
        self._drop(new_id)
        copy = self._data[new_id] = _History()
        copy.messages.extend(source.messages[: last + 1])
        copy.next_id = source.next_id - (len(source.messages) - 1 - last)
        copy.gen = source.gen + 1
        copy.last_ms = copy.created_ms = max(source.last_ms, self._wall_clock())
        copy.owner, copy.title = source.owner, title if title is not None else source.title
        copy.custom = json.loads(json.dumps(source.custom))
        copy.forked_from = source_id
        copy.size = sum(_approx_size(m) for m in copy.messages)
        self._bytes_total += copy.size
        self._messages_total += len(copy.messages)
        if source.expires_at is not None:
            copy.expires_at = source.expires_at
            self._schedule(new_id, copy, copy.expires_at)
        if copy.owner is not None:
            self._owners.setdefault(copy.owner, {})[new_id] = copy.last_ms
        return _info(new_id, copy)

    async def delete_owner(self, owner: str) -> int:
        """Erase every conversation of ``owner`` and their listing; how many were erased."""
        owner = check_owner(owner)
        now = self._clock()
        ids = [sid for sid in self._owners.get(owner, {}) if self._live(sid, now) is not None]
        for sid in ids:
            self._drop(sid)
        self._owners.pop(owner, None)
        for token in [t for t, snap in self._snapshots.items() if snap[0] == owner]:
            del self._snapshots[token]
        return len(ids)

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
            **summary_figures(self),
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


def _info(session_id: str, hist: _History) -> ConversationInfo:
    return ConversationInfo(
        id=session_id,
        owner=hist.owner,
        title=hist.title,
        created_at=time_of(hist.created_ms),
        updated_at=time_of(hist.last_ms),
        message_count=len(hist.messages),
        metadata=json.loads(json.dumps(hist.custom)),
        forked_from=hist.forked_from,
    )
