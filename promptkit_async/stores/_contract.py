"""The store contract: what every store offers, and what a session may use when offered.

:class:`Store` is the core a backend must implement (four coroutines). The
capabilities are separate protocols, so that a store declares each one by
implementing it, and a wrapper around another store keeps a capability by
forwarding it:

- :class:`SupportsLocks`: the store owns the :class:`LockRegistry` that
  serialises turns on one session within a process. A store without it gets a
  registry of its own (see :meth:`LockRegistry.of`).
- :class:`SupportsTurns`: exactly-once commits. ``commit(turn)`` applies a
  :class:`Turn` at most once per ``turn_id``, and ``settle_turn`` decides a
  commit whose outcome is unknown (applied, or aborted for good). A session
  interrupted mid-commit settles it instead of guessing.
- :class:`SupportsLeases`: a lease per session across processes, and fenced
  commits (``Turn.fence``): a holder whose lease was lost cannot write.
- :class:`SupportsHistory`: the kept history for a UI: pages older than a
  message id, a count, and a whole conversation restored at once (an import).
- :class:`SupportsSummaries`: a rolling summary of what left the window,
  loaded with the window in one step and replaced by compare-and-set.

A session checks these once per store, never per call, and passes a store
nothing its protocols do not declare.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol, runtime_checkable

from .._config import DEFAULT_TTL, check_limit, check_owner, check_session_id, ttl_seconds
from .._exceptions import InvalidMessage, MessageNotFound
from .._messages import Message

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .._locks import LockRegistry
    from .._summary import Summary
    from .._types import TTL

__all__ = [
    "Lease",
    "Store",
    "SupportsHistory",
    "SupportsLeases",
    "SupportsLocks",
    "SupportsSummaries",
    "SupportsTurns",
    "Turn",
    "TurnOutcome",
    "TurnStatus",
]

#: How a commit with an unknown outcome was decided.
TurnOutcome = Literal["applied", "aborted"]
#: What a store knows of a turn id: applied, aborted, or nothing (too old, never sent).
TurnStatus = Literal["applied", "aborted", "unknown"]


@runtime_checkable
class Store(Protocol):
    """Where session histories live: the four coroutines every backend implements.

    No base class is needed. ``append`` must be atomic (all messages or none),
    must append rather than rewrite (so that concurrent writers from several
    processes never lose each other's messages), must keep at most its own
    retention (and ``max_messages`` when given) and refresh the sliding ``ttl``
    (``None``: keep forever). A store that receives the same ``turn_id`` twice
    applies it once. A store that gives messages ids and times does so here.

    Raises (all of them):
        InvalidSessionId: the id is empty, not a str, or too long.
        StoreUnavailable: the backend could not be reached; nothing was
            written, and on ``append`` the messages are in ``.unsaved``.
        CorruptHistory: a stored record cannot be decoded (``load``).
    """

    async def load(self, session_id: str, limit: int | None = None) -> list[Message]:
        """The newest ``limit`` messages (all when None), oldest first."""
        ...

    async def append(
        self,
        session_id: str,
        messages: Sequence[Message],
        *,
        max_messages: int | None = None,
        ttl: TTL = DEFAULT_TTL,
        turn_id: str | None = None,
    ) -> None:
        """Atomically append, cap to ``max_messages`` and refresh the TTL."""
        ...

    async def delete(self, session_id: str) -> bool:
        """Erase the session; True if it existed."""
        ...

    async def aclose(self) -> None:
        """Release what the store owns; idempotent."""
        ...


@runtime_checkable
class SupportsLocks(Protocol):
    """A store that owns the registry of its per-session in-process locks."""

    @property
    def locks(self) -> LockRegistry: ...


class _TurnFields(NamedTuple):
    session_id: str
    messages: tuple[Message, ...]
    turn_id: str
    ttl: float | None
    max_messages: int | None
    fence: str | None
    owner: str | None = None
    after: str | None = None
    replace_last: str | None = None


class Turn(_TurnFields):
    """One turn's write, as a session hands it to a store (immutable).

    Build it with keywords: ``Turn(session_id=..., messages=..., turn_id=...)``.
    (A named tuple rather than a dataclass: a turn is built on every commit,
    and a tuple is built in a fraction of the time.)

    Attributes:
        session_id: the conversation written to.
        messages: what the turn appends, in order (at least one).
        turn_id: the idempotency key: a store applies each turn id at most
            once, so a re-sent commit never duplicates a turn.
        ttl: the sliding expiry refreshed by the write, in seconds (None:
            keep forever). Given as a timedelta or int, it is normalised.
        max_messages: an extra cap on the stored history for this write, below
            the store's own retention (None: the store's retention only). A
            session never sets it: its window deletes nothing.
        fence: a lease token (see :class:`SupportsLeases`): the write happens
            only if that lease is still held; None writes unfenced.
        owner: who the conversation belongs to: recorded by its first commit,
            and a commit naming another owner is refused (``OwnerMismatch``),
            writing nothing. None: not checked.
        after: a message id: the commit first drops every message after that
            one (an edit, a regenerated reply), then appends ``messages``; an
            id the session does not keep fails it (``MessageNotFound``). With
            ``after``, ``messages`` may be empty (a truncation).
        replace_last: a message id: the commit first removes the session's
            newest message, which must still be the one with that id, then
            appends ``messages`` (none: a removal). When the newest kept
            message is another one, or there is none, the commit is refused
            with ``MessageNotFound`` and writes nothing. A compare-and-set on
            the tail: a read-modify-write of the newest message (a pop) never
            removes a message another writer added after it was read. Ids are
            unique within a session until it is deleted, so a check by id
            cannot be fooled by a later message. Not together with ``after``.

    Raises:
        InvalidSessionId: a bad session id.
        InvalidMessage: no messages, or an item that is not a Message.
        TypeError, ValueError: a bad ttl, max_messages, turn_id, after or replace_last.
    """

    __slots__ = ()

    def __new__(
        cls,
        *,
        session_id: str,
        messages: Sequence[Message],
        turn_id: str,
        ttl: TTL = DEFAULT_TTL,
        max_messages: int | None = None,
        fence: str | None = None,
        owner: str | None = None,
        after: str | None = None,
        replace_last: str | None = None,
    ) -> Turn:
        session_id = check_session_id(session_id)
        seconds = ttl_seconds(ttl)
        check_limit("max_messages", max_messages)
        batch = messages if type(messages) is tuple else tuple(messages)
        if after is not None and (type(after) is not str or not after):
            raise TypeError(f"after must be a message id (a non-empty str), got {after!r}")
        if replace_last is not None:
            if type(replace_last) is not str or not replace_last:
                raise TypeError(
                    f"replace_last must be a message id (a non-empty str), got {replace_last!r}"
                )
            if after is not None:
                raise ValueError("a turn takes after or replace_last, not both")
        if owner is not None:
            owner = check_owner(owner)
        if not batch and after is None and replace_last is None:
            raise InvalidMessage("a turn writes at least one message")
        for i, m in enumerate(batch):
            if type(m) is not Message and not isinstance(m, Message):
                raise InvalidMessage(f"messages[{i}] is {type(m).__name__}, not a Message")
        if type(turn_id) is not str or not turn_id:
            raise TypeError(f"turn_id must be a non-empty str, got {turn_id!r}")
        if fence is not None and (type(fence) is not str or not fence):
            raise TypeError(f"fence must be a non-empty str or None, got {fence!r}")
        return tuple.__new__(
            cls,
            (session_id, batch, turn_id, seconds, max_messages, fence, owner, after, replace_last),
        )

    def __repr__(self) -> str:
        return (
            f"Turn(session_id={self.session_id!r}, turn_id={self.turn_id!r}, "
            f"messages={len(self.messages)}, ttl={self.ttl!r}, "
            f"max_messages={self.max_messages!r}, fenced={self.fence is not None}, "
            f"owner={self.owner!r}, after={self.after!r}, replace_last={self.replace_last!r})"
        )


def trusted_turn(
    session_id: str,
    messages: tuple[Message, ...],
    turn_id: str,
    ttl: float | None,
    max_messages: int | None,
    fence: str | None,
    owner: str | None = None,
    after: str | None = None,
) -> Turn:
    """A :class:`Turn` from values already checked (a session's own): no re-validation.

    A session validated its id and settings when it was created, and every
    staged message when it was added.
    """
    return tuple.__new__(
        Turn, (session_id, messages, turn_id, ttl, max_messages, fence, owner, after, None)
    )


def not_newest(session_id: str, message_id: str) -> MessageNotFound:
    """The refusal of a ``Turn.replace_last`` whose message is no longer the newest."""
    error = MessageNotFound(session_id, message_id)
    # The same class as for ``after`` (no kept message fits), with what happened.
    error.args = (
        f"session {session_id!r}: its newest message is not {message_id!r} (the history "
        "changed since it was read, or is empty); nothing was written",
    )
    return error


@runtime_checkable
class SupportsTurns(Protocol):
    """Exactly-once commits, settled by turn id when their outcome is unknown.

    ``commit`` applies ``turn`` atomically (all its messages or none) unless
    its ``turn_id`` was applied or aborted before. When a commit is
    interrupted (a cancellation, a lost reply), ``settle_turn`` returns
    ``"applied"`` if it was, and otherwise marks the id aborted, so that a
    copy of the commit still in flight can never apply afterwards.
    """

    async def commit(self, turn: Turn) -> Sequence[Message] | None:
        """Write ``turn`` once; the messages as stored (with their ids and times), or None.

        Raises:
            StoreUnavailable: nothing was written (``.unsaved``).
            CommitOutcomeUnknown: it may or may not have been written (never
                twice); settle it by ``.turn_id``.
            StoreRejected: the store refused the write; nothing was written.
            LockLost: ``turn.fence`` is not the current lease; nothing was written.
            MessageNotFound: ``turn.after`` is not kept, or ``turn.replace_last``
                is not the newest message; nothing was written.
        """
        ...

    async def settle_turn(self, session_id: str, turn_id: str) -> TurnOutcome:
        """Decide a commit: ``"applied"``, or ``"aborted"`` for good.

        Raises:
            StoreUnavailable: the store could not be reached; still undecided.
        """
        ...


class Lease(Protocol):
    """A per-session lease held by one turn across processes."""

    @property
    def token(self) -> str:
        """What fences the turn's commit (``Turn.fence``)."""
        ...

    @property
    def lost(self) -> bool:
        """True once the holder knows the lease expired or was taken over."""
        ...

    async def release(self) -> None:
        """Give the lease back if still held; never raises for a store failure."""
        ...


@runtime_checkable
class SupportsLeases(Protocol):
    """Per-session leases across processes, and commits fenced by them.

    When ``distributed_lock`` is true, a session takes the lease (after its
    in-process lock) for the whole block and fences its commit with the
    lease's token.
    """

    @property
    def distributed_lock(self) -> bool: ...

    async def acquire_lease(self, session_id: str, timeout: float | None = None) -> Lease:
        """Take the session's lease, waiting up to ``timeout`` seconds (None: forever).

        Raises:
            SessionBusy: another holder kept it for the whole timeout.
            StoreUnavailable: the store could not be reached.
        """
        ...


@runtime_checkable
class SupportsHistory(Protocol):
    """The kept history, for a UI: pages by message id, a count, and restores.

    ``load(session_id, limit, before=id)`` returns, oldest first, the
    ``limit`` kept messages just older than the message with that id, so that
    paging back from the newest visits every kept message once.
    """

    async def load(
        self, session_id: str, limit: int | None = None, *, before: str | None = None
    ) -> list[Message]:
        """Raises MessageNotFound when no kept message has the id ``before``."""
        ...

    async def count(self, session_id: str) -> int:
        """How many messages the session keeps."""
        ...

    async def restore(
        self,
        session_id: str,
        messages: Sequence[Message],
        *,
        replace: bool = False,
        ttl: TTL = DEFAULT_TTL,
    ) -> list[Message]:
        """Write a whole conversation at once; raises SessionExists unless ``replace``."""
        ...


@runtime_checkable
class SupportsSummaries(Protocol):
    """A conversation's rolling summary, kept beside its history.

    A summary is valid while the message it covers up to is still the one with
    that id (or has been dropped by retention, all kept messages being newer):
    a rewind or a fork before it makes it void, and the store stops returning it.
    """

    async def load_summarized(
        self, session_id: str, longest: int | None
    ) -> tuple[list[Message], Summary | None]:
        """In one step: the valid summary (or None) and the kept messages after the
        one it covers (all kept ones without a summary), the newest ``longest``
        of them (None: all), oldest first."""
        ...

    async def write_summary(
        self, session_id: str, summary: Summary, *, previous: str | None
    ) -> bool:
        """Replace the summary of version ``previous`` (None: there is none valid)
        by ``summary``, in one atomic step; False, writing nothing, when the
        current summary is another, the conversation is gone, or its message
        ``summary.upto`` is not kept with that id (rewound meanwhile)."""
        ...

    async def summary(self, session_id: str) -> Summary | None:
        """The valid summary, or None."""
        ...
