"""BaseStore: what the bundled stores share, written once.

Each bundled store implements the contract's capabilities itself (loading,
committing a :class:`Turn`, settling a turn id); this base gives them the
rest alike: the lock registry they own, observers and latency bookkeeping,
``append`` in terms of ``commit`` (with its validation), and the listing
helpers built on ``sessions``. A user store need not derive from it: the
protocols in :mod:`._contract` are the contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from abc import abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .._codec import EPOCH, id_number, ms_of, time_of
from .._config import DEFAULT_TTL, check_limit, check_owner, check_session_id, ttl_seconds
from .._exceptions import InvalidCursor, InvalidMessage, StoreUnavailable
from .._ids import new_turn_id
from .._info import UNCHANGED
from .._locks import LockRegistry
from .._messages import Message, check_text, json_copy, stamped
from .._metrics import Instruments
from .._resources import AsyncResource
from .._summary import Summary
from ._contract import Turn

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from .._info import ConversationInfo, ConversationPage
    from .._metrics import StateMetrics
    from .._types import TTL, JSONValue
    from ._contract import Lease, TurnOutcome

__all__ = [
    "BaseStore",
    "aborted_earlier",
    "check_before",
    "check_fork",
    "check_info_update",
    "check_page",
    "check_summary_write",
    "restored",
    "summary_stamped",
]


def aborted_earlier(turn: Turn) -> StoreUnavailable:
    """A commit refused because its turn id was settled as aborted: nothing was written."""
    return StoreUnavailable(
        f"session {turn.session_id!r} not saved: turn {turn.turn_id} was aborted earlier",
        session_id=turn.session_id,
        unsaved=turn.messages,
    )


#: The most conversations one listing page returns.
MAX_PAGE = 1000


def check_page(limit: object, cursor: object) -> None:
    if type(limit) is not int or not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be an int from 1 to {MAX_PAGE}, got {limit!r}")
    if cursor is not None and type(cursor) is not str:
        raise InvalidCursor(f"a cursor is a str from a previous page, got {cursor!r}")


def check_info_update(
    title: object, metadata: object, owner: object
) -> tuple[object, Mapping[str, JSONValue] | None, str | None]:
    """The arguments of ``update_info``, checked (a title of None removes it)."""
    if title is not None and title is not UNCHANGED:
        if not isinstance(title, str):
            raise TypeError(f"title must be a str or None, got {type(title).__name__}")
        check_text(title, "title")
        if not title or "\0" in title:
            raise ValueError("title must be non-empty and hold no NUL (None removes it)")
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a mapping, got {type(metadata).__name__}")
        for key, value in metadata.items():
            if not isinstance(key, str) or not key:
                raise TypeError(f"metadata keys must be non-empty str, got {key!r}")
            check_text(key, "metadata key")
            if value is not None:
                json_copy(value, f"metadata[{key!r}]")  # checked (the copy is not kept)
    return title, metadata, None if owner is None else check_owner(owner)


def check_fork(source_id: str, new_id: str, upto: object, title: object) -> None:
    if source_id == new_id:
        raise ValueError("a fork needs a new id, not its source's")
    if upto is not None and (type(upto) is not str or not upto):
        raise TypeError(f"upto must be a message id (a non-empty str) or None, got {upto!r}")
    if title is not None:
        if not isinstance(title, str) or not title:
            raise TypeError(f"title must be a non-empty str or None, got {title!r}")
        check_text(title, "title")


def check_before(before: object) -> str:
    if type(before) is not str or not before:
        raise TypeError(f"before must be a message id (a non-empty str), got {before!r}")
    return before


def restored(
    messages: Sequence[Message], max_stored: int | None, now_ms: int
) -> tuple[tuple[Message, ...], tuple[int, ...], int, int]:
    """What a restore writes: the messages stamped, their times in ms, the next number
    and the generation (the highest ``~<n>`` among the ids).

    Messages without ids are numbered from 0; messages with ids keep them if
    they are the consecutive numbers a store gives (what an export holds).
    Times are kept (to the ms, the stored precision) and must not go back;
    a message without one gets the previous one's, or ``now_ms``. Only the
    newest ``max_stored`` are kept, as a commit would.

    Raises:
        InvalidMessage: not messages, ids of both kinds or not consecutive, or
            times that go back or precede 1970.
    """
    batch = tuple(messages)
    for i, m in enumerate(batch):
        if not isinstance(m, Message):
            raise InvalidMessage(f"messages[{i}] is {type(m).__name__}, not a Message")
    given = [m.id for m in batch]
    if all(i is None for i in given):
        ids = [str(n) for n in range(len(batch))]
        start = 0
    elif any(i is None for i in given):
        raise InvalidMessage(
            "restore needs ids on every message or on none (none: they are numbered anew)"
        )
    else:
        ids = [str(i) for i in given]
        numbers = [id_number(i) for i in ids]
        first = numbers[0]
        if first is None or any(n != first + k for k, n in enumerate(numbers)):
            raise InvalidMessage(
                "restore keeps message ids only when they are consecutive numbers, as a "
                "store gives them; clear them to number the messages anew "
                "([m.replace(id=None) for m in messages])"
            )
        start = first
    times: list[int] = []
    last = 0
    for i, m in enumerate(batch):
        if m.created_at is None:
            ms = max(last, now_ms)
        else:
            ms = ms_of(m.created_at)
            if ms < 0:
                raise InvalidMessage(f"messages[{i}].created_at is before {EPOCH.isoformat()}")
            if ms < last:
                raise InvalidMessage(
                    f"messages[{i}].created_at goes back in time: a conversation is stored "
                    "in the order it happened"
                )
        times.append(ms)
        last = ms
    if max_stored is not None and len(batch) > max_stored:
        drop = len(batch) - max_stored
        batch, ids, times = batch[drop:], ids[drop:], times[drop:]
    out = tuple(stamped(m, i, time_of(t)) for m, i, t in zip(batch, ids, times, strict=True))
    suffixes = [i.partition("~")[2] for i in ids]
    generation = max((int(x) for x in suffixes if x.isdigit()), default=0)
    return out, tuple(times), start + len(given), generation


def check_summary_write(summary: object, previous: object) -> None:
    """The arguments of ``write_summary``, checked the same way by every store.

    Raises:
        TypeError: ``summary`` is not a Summary, or ``previous`` neither a str nor None.
    """
    if not isinstance(summary, Summary):
        raise TypeError(f"write_summary takes a Summary, got {type(summary).__name__}")
    if previous is not None and (not isinstance(previous, str) or not previous):
        raise TypeError(f"previous must be a summary's version (a str) or None, got {previous!r}")


def summary_stamped(summary: Summary, ms: int) -> Summary:
    """``summary`` as a store keeps it: stamped with the time it was written."""
    return dataclasses.replace(summary, updated_at=time_of(ms))


class BaseStore(AsyncResource):
    """Base of MemoryStore and RedisStore (see the module docstring).

    Args:
        observers: objects with ``on_load`` / ``on_save`` / ``on_error`` hooks.
    """

    def __init__(self, *, observers: Sequence[object] = ()) -> None:
        self._locks = LockRegistry()
        self._instruments = Instruments(observers)

    @property
    def locks(self) -> LockRegistry:
        """The per-session locks that serialise turns in this process."""
        return self._locks

    @property
    def observers(self) -> tuple[object, ...]:
        """The registered observers (see :class:`Observer`), in call order."""
        return self._instruments.observers.items

    def add_observer(self, observer: object) -> None:
        """Register an object with ``on_load`` / ``on_save`` / ``on_error`` hooks.

        Raises:
            TypeError: it has none of the three.
        """
        self._instruments.observers.add(observer)

    def remove_observer(self, observer: object) -> None:
        """Stop calling ``observer``.

        Raises:
            ValueError: it was not registered.
        """
        self._instruments.observers.remove(observer)

    # -- the contract ------------------------------------------------------------

    @abstractmethod
    async def load(
        self, session_id: str, limit: int | None = None, *, before: str | None = None
    ) -> list[Message]:
        """The newest ``limit`` messages (all when None), oldest first; older than
        the message with id ``before`` when given."""

    @abstractmethod
    async def count(self, session_id: str) -> int:
        """How many messages the session keeps (0 if none)."""

    @abstractmethod
    async def load_summarized(
        self, session_id: str, longest: int | None
    ) -> tuple[list[Message], Summary | None]:
        """The valid rolling summary and the newest ``longest`` kept messages after it."""

    @abstractmethod
    async def write_summary(
        self, session_id: str, summary: Summary, *, previous: str | None
    ) -> bool:
        """Replace the summary of version ``previous`` by ``summary`` (compare-and-set)."""

    @abstractmethod
    async def summary(self, session_id: str) -> Summary | None:
        """The conversation's valid rolling summary, or None."""

    @abstractmethod
    async def commit(self, turn: Turn) -> tuple[Message, ...]:
        """Write ``turn`` atomically, at most once per turn id; the messages as stored."""

    @abstractmethod
    async def restore(
        self,
        session_id: str,
        messages: Sequence[Message],
        *,
        replace: bool = False,
        ttl: TTL = DEFAULT_TTL,
    ) -> list[Message]:
        """Write a whole conversation (an import), as one atomic step."""

    @abstractmethod
    async def settle_turn(self, session_id: str, turn_id: str) -> TurnOutcome:
        """Decide a commit whose outcome is unknown: applied, or aborted for good."""

    @abstractmethod
    async def delete(self, session_id: str) -> bool:
        """Erase the session; True if it existed."""

    @abstractmethod
    def sessions(self, prefix: str = "") -> AsyncIterator[str]:
        """Yield the ids of live sessions starting with ``prefix`` (a literal)."""

    @abstractmethod
    async def ttl(self, session_id: str) -> float | None:
        """Seconds until the session expires; None if it has no TTL or does not exist."""

    @abstractmethod
    async def exists(self, session_id: str) -> bool:
        """Whether the session holds a history."""

    @abstractmethod
    async def metrics(self, *, sample: int = 200) -> StateMetrics:
        """A snapshot for health endpoints and alerts (see :class:`StateMetrics`)."""

    @abstractmethod
    async def info(self, session_id: str, *, owner: str | None = None) -> ConversationInfo | None:
        """The conversation's info; None for an unknown id (or, with ``owner``, another's)."""

    @abstractmethod
    async def update_info(
        self,
        session_id: str,
        *,
        title: str | None = UNCHANGED,
        metadata: Mapping[str, JSONValue] | None = None,
        owner: str | None = None,
    ) -> bool:
        """Rename and merge custom metadata atomically; False if there is no such conversation."""

    @abstractmethod
    async def conversations(
        self, owner: str, *, limit: int = 20, cursor: str | None = None
    ) -> ConversationPage:
        """An owner's conversations, newest ``updated_at`` first."""

    @abstractmethod
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
        """Copy a conversation up to and including message ``upto``, all or nothing."""

    @abstractmethod
    async def delete_owner(self, owner: str) -> int:
        """Erase every conversation of ``owner`` and their listing; how many."""

    async def append(
        self,
        session_id: str,
        messages: Sequence[Message],
        *,
        max_messages: int | None = None,
        ttl: TTL = DEFAULT_TTL,
        turn_id: str | None = None,
    ) -> None:
        """Append atomically and at most once per ``turn_id``, cap, refresh the TTL.

        A commit of the messages as one :class:`Turn` (see :meth:`commit`);
        an empty ``messages`` writes nothing, as on every store.

        Raises:
            InvalidSessionId, InvalidMessage, TypeError, ValueError: bad arguments.
            StoreUnavailable: nothing was written (``.unsaved`` holds the messages).
            CommitOutcomeUnknown: it may or may not have been written (never twice).
            StoreRejected: the store refused the write; nothing was written.
        """
        batch = tuple(messages)
        if not batch:
            check_session_id(session_id)
            check_limit("max_messages", max_messages)
            ttl_seconds(ttl)
            return
        await self.commit(
            Turn(
                session_id=session_id,
                messages=batch,
                turn_id=turn_id if turn_id is not None else new_turn_id(),
                ttl=ttl_seconds(ttl),
                max_messages=max_messages,
            )
        )

    async def truncate(
        self,
        session_id: str,
        *,
        after: str,
        owner: str | None = None,
        ttl: TTL = DEFAULT_TTL,
    ) -> None:
        """Drop every message after the one with id ``after``, as a turn of its own.

        It takes the session's lock (and, with ``distributed_lock``, its lease)
        like a session does, so it never interleaves with a turn, and it is
        one exactly-once commit (refreshing the TTL to ``ttl``).

        Raises:
            MessageNotFound: no kept message has the id ``after``.
            OwnerMismatch: ``owner`` given, and the conversation is another's.
        """
        turn = Turn(
            session_id=session_id,
            messages=(),
            turn_id=new_turn_id(),
            ttl=ttl,
            owner=owner,
            after=after,
        )
        entry = await self._locks.acquire(turn.session_id)
        try:
            lease = await self._lease_for(turn.session_id)
            if lease is not None:
                turn = turn._replace(fence=lease.token)
            try:
                await self._commit_settled(turn)
            finally:
                if lease is not None:
                    await lease.release()
        finally:
            self._locks.release(turn.session_id, entry)

    async def _lease_for(self, session_id: str) -> Lease | None:
        """The lease a write outside a session takes (None: this store has none)."""
        return None

    async def _commit_settled(self, turn: Turn) -> None:
        """Commit; a cancellation mid-commit is settled by turn id before it is re-raised."""
        task = asyncio.ensure_future(self.commit(turn))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                task.cancel()
                settle = asyncio.ensure_future(self.settle_turn(turn.session_id, turn.turn_id))
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(asyncio.shield(settle), 10.0)
            raise

    async def list_sessions(self, prefix: str = "") -> list[str]:
        """The ids of sessions starting with ``prefix``, sorted (see :meth:`sessions`)."""
        return sorted({session_id async for session_id in self.sessions(prefix)})

    async def delete_prefix(self, prefix: str) -> int:
        """Erase every session whose id starts with ``prefix``; returns how many.

        Raises:
            ValueError: an empty prefix (erasing everything must be explicit:
                iterate :meth:`sessions` yourself).
        """
        if not isinstance(prefix, str) or not prefix:
            raise ValueError("delete_prefix needs a non-empty str prefix")
        doomed = {s async for s in self.sessions(prefix)}
        count = 0
        for session_id in doomed:
            count += await self.delete(session_id)
        return count
