"""The exactly-once commit: one script call per turn, re-sent and settled by turn id.

The commit script (``_scripts.COMMIT``) checks the turn id, the abort marker
and the fence, then appends, caps, refreshes the TTL, records the turn id and
updates the session index, all in one atomic step. Because the turn id is
checked inside that step, re-sending a commit is always safe; so is giving up
on one, because :meth:`Committer.settle` marks an unanswered turn id aborted,
and an aborted id never applies. What a failure means for the caller:

- nothing was sent, or the server refused to run it: ``StoreUnavailable`` or
  ``StoreRejected`` with ``.unsaved``: certainly not stored;
- a reply was lost: the turn is settled by id (applied, or aborted and then
  ``StoreUnavailable``), and only when even that fails ``CommitOutcomeUnknown``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Final

from ..._codec import encode_message, message_id, time_of
from ..._exceptions import (
    CommitOutcomeUnknown,
    LockLost,
    MessageNotFound,
    OwnerMismatch,
    StoreRejected,
    StoreUnavailable,
)
from ..._messages import stamped
from .._contract import not_newest
from .._shared import aborted_earlier
from . import _keys
from ._errors import Failure, classify, mapped_errors, pool_exhausted
from ._link import client_retries
from ._replies import commit_reply, last_turn_reply, status
from ._scripts import COMMIT, LIST_IN, RESOLVE, TURN_STATUS

if TYPE_CHECKING:
    from ..._messages import Message
    from .._contract import Turn, TurnOutcome, TurnStatus
    from ._cache import NearCache
    from ._index import SessionIndex
    from ._link import Link
    from ._replicas import ReplicaWait
    from ._tracking import Ticket

__all__ = ["TURN_MEMORY", "Committer"]

logger = logging.getLogger("promptkit_async.stores.redis")

#: How many recent turn ids a session remembers for exactly-once commits.
TURN_MEMORY: Final = 64
#: How long an abort marker outlives a session that had no turns key yet.
_ABORT_MARKER_TTL_MS: Final = 3_600_000

# Script statuses.
_APPLIED, _ALREADY_APPLIED, _ABORTED, _FENCED = 1, 0, -1, -2
_CANNOT_TELL, _OWNED_BY_ANOTHER, _NO_SUCH_MESSAGE = -3, -4, -5
_SETTLED: Final = frozenset((1, -1, 0))
#: Where the re-send flag sits in the commit script's arguments.
_RESEND: Final = 6
_KNOWN: Final = frozenset((1, -1, 0))


class Committer:
    """Commits turns and settles them; extends the near cache after our own commits."""

    __slots__ = (
        "_cache",
        "_index",
        "_link",
        "_max_bytes",
        "compress_above",
        "_quiet_until",
        "bookkeeping_lost",
        "max_stored",
        "replicas",
    )

    def __init__(
        self,
        link: Link,
        cache: NearCache,
        index: SessionIndex,
        compress_above: int | None,
        max_record_bytes: int,
        max_stored: int | None,
        replicas: ReplicaWait | None = None,
    ) -> None:
        self._link = link
        self._cache = cache
        self._index = index
        self.compress_above = compress_above
        self._max_bytes = max_record_bytes
        self.max_stored = max_stored
        #: Commits that found a session's bookkeeping gone while its history was there.
        self.bookkeeping_lost = 0
        self._quiet_until = 0.0
        #: With ``min_replicas``: the WAIT sent behind each commit (see _replicas.py).
        self.replicas = replicas

    def cap(self, turn_cap: int | None) -> int | None:
        """What a commit keeps: the store's retention, or the turn's own cap if lower."""
        kept = self.max_stored
        if turn_cap is not None and (kept is None or turn_cap < kept):
            return turn_cap
        return kept

    async def commit(self, turn: Turn) -> tuple[Message, ...]:
        """Write ``turn``; the messages as stored (with ids and times when known).

        The owner's listing lives in another slot than the conversation (and no
        script touches two slots), so it is written beside the commit, at the
        same time (one round trip of latency), and the commit returns only once
        both are done; a listing write that failed for a new conversation is
        tried once more. So is the registration of the session's slot in the
        index's registry, when one is due (see ``_index``).
        """
        session_id = turn.session_id
        batch = turn.messages
        compress, limit = self.compress_above, self._max_bytes
        entries = [encode_message(m, compress_above=compress, max_bytes=limit) for m in batch]
        link = self._link
        prefix = link.prefix
        keys: tuple[bytes, ...] = _keys.stored_keys(prefix, session_id)
        if turn.fence:
            # Only when fenced: during a Cluster slot migration, a declared key
            # that exists on neither node (a lease nobody holds) makes Redis
            # answer TRYAGAIN to every commit of the session until the move ends.
            keys += (_keys.key(prefix, session_id, _keys.LEASE),)
        ttl = turn.ttl
        ttl_ms = 0 if ttl is None else max(1, int(ttl * 1000))
        owner = turn.owner
        member = _keys.encode_id(session_id)
        index, registering = self._index.entry(member, ttl_ms)
        if index is not None:
            keys += (index,)  # the index of the session's own slot
        cap = self.cap(turn.max_messages)
        args = [
            turn.turn_id,
            cap or 0,
            ttl_ms,
            TURN_MEMORY,
            turn.fence or "",
            member if index is not None else "",
            "0",  # set to "1" for the store's own re-sends (see _send)
            owner or "",
            turn.after or "",
            "",  # the owner's listing: another slot, written beside (below)
            turn.replace_last or "",
            *entries,
        ]
        listing = None
        if owner is not None:
            listing = asyncio.ensure_future(self._list_in(owner, member, ttl_ms))
        sent = time.monotonic()
        ticket: Ticket | None = None
        try:
            try:
                outcome, previous, before, first, ms, gen, acked, ticket = await self._send(
                    turn, keys, args
                )
            finally:
                listed = True if listing is None else await _quietly(listing)
                if registering is not None:
                    await _quietly(registering, "a slot of the session index was not registered")
            if not listed and outcome == _APPLIED and before == 0:
                assert owner is not None
                await _quietly(asyncio.ensure_future(self._list_in(owner, member, ttl_ms)))
            if outcome == _ABORTED:
                raise aborted_earlier(turn)
            if outcome == _CANNOT_TELL:
                raise _cannot_tell(turn, "the turn ids it keeps are gone (evicted?)")
            if outcome == _FENCED:
                raise LockLost(
                    f"session {session_id!r} not saved: its distributed lease expired or was "
                    "taken over before the commit",
                    session_id=session_id,
                    unsaved=batch,
                )
            if outcome == _OWNED_BY_ANOTHER:
                raise OwnerMismatch(session_id)
            if outcome == _NO_SUCH_MESSAGE:
                if turn.replace_last is not None:
                    raise not_newest(session_id, turn.replace_last)
                assert turn.after is not None
                raise MessageNotFound(session_id, turn.after)
            if outcome == _APPLIED and previous == "" and before > 0:
                self._bookkeeping_lost(session_id)
            stored = batch
            if first >= 0:
                when = time_of(ms)
                stored = tuple(
                    stamped(m, message_id(first + i, gen), when) for i, m in enumerate(batch)
                )
            if outcome == _APPLIED and self._cache.size:
                if turn.after is None and turn.replace_last is None:
                    expires = None if ttl is None else sent + ttl
                    # The token now, with no await left before the entry is stored: an
                    # invalidation that arrived since the reply leaves it untrusted.
                    token = None if ticket is None else ticket.close()
                    self._cache.advance(
                        session_id, previous, before, turn.turn_id, stored, cap, token, expires
                    )
                else:
                    self._cache.drop(session_id)  # a rewind: the cached window is no longer it
            if self.replicas is not None:
                await self.replicas.confirm(link, turn, stored, outcome, acked)
            return stored
        finally:
            if ticket is not None:
                ticket.close()  # a no-op when the entry took its token

    def _bookkeeping_lost(self, session_id: str) -> None:
        """A commit found the history without its turn ids or its meta hash: counted,
        and said at most once a minute (under eviction it can be every turn)."""
        self.bookkeeping_lost += 1
        now = time.monotonic()
        if now < self._quiet_until:
            return
        self._quiet_until = now + 60.0
        logger.warning(
            "session %r: its history was there but its turn ids or meta hash were gone "
            "(evicted under a maxmemory-policy, or deleted around the store); the commit "
            "went through and rebuilt them, but a turn committed before the loss is no "
            "longer recognised if re-sent, and an owner recorded there is forgotten "
            "(%d such commits by this store; said at most once a minute)",
            session_id,
            self.bookkeeping_lost,
        )

    async def _list_in(self, owner: str, member: str, ttl_ms: int) -> None:
        """Put (or move up) a conversation in its owner's listing: its own round trip."""
        k = _keys.owner_key(self._link.prefix, owner)
        with mapped_errors(None, f"listing a conversation of owner {owner!r}"):
            await LIST_IN(self._link.client, (k,), (member, ttl_ms))

    async def _send(
        self, turn: Turn, keys: tuple[bytes, ...], args: list[Any]
    ) -> tuple[int, str, int, int, int, int, int | BaseException | None, Ticket | None]:
        """Send the commit script, re-sending it (same turn id: it applies once) when the
        connection failed; decide the outcome when no attempt got a reply. Last: what the
        WAIT behind it answered (with ``min_replicas``; None when settled by id); and the
        ticket for the near cache's token for what the commit leaves tracked (see
        ``_tracking``), for the caller to close."""
        link = self._link
        replicas = self.replicas
        acked: int | BaseException | None = None
        maybe_sent = False
        last: BaseException | None = None
        for attempt in range(link.retries + 1):
            try:
                ticket = None
                if replicas is None:
                    if link.invalidations is None:
                        reply = commit_reply(await COMMIT(link, keys, args))
                    else:
                        raw, ticket = await COMMIT.tracked(link, turn.session_id, keys, args)
                        try:
                            reply = commit_reply(raw)
                        except BaseException:
                            if ticket is not None:
                                ticket.close()
                            raise
                else:
                    raw, acked = await replicas.commit(link, COMMIT, keys, args)
                    reply = commit_reply(raw)
            except Exception as exc:
                failure = classify(exc)
                if failure is None:
                    raise
                last = exc
                if failure in (Failure.LOST, Failure.PROTOCOL):
                    # Sent, and no reply that can be trusted: it may have run.
                    maybe_sent = True
                elif failure is Failure.UNREACHABLE:
                    if pool_exhausted(exc):
                        break  # no connection was had: nothing was sent
                    # A failed connect proves nothing ran, unless the client retried
                    # by itself and an earlier attempt of its own lost its reply.
                    if client_retries(link.client) != 0:
                        maybe_sent = True
                elif maybe_sent:
                    break  # this attempt ran nothing, but an earlier one may have
                else:
                    raise _not_saved(turn, failure, exc) from exc
                if failure is Failure.PROTOCOL:
                    break  # a server that answers out of shape is not retried
            else:
                return (*reply, acked, ticket)
            if attempt < link.retries:
                await asyncio.sleep(link.backoff.compute(attempt + 1))
            if maybe_sent:
                args[_RESEND] = "1"  # the next copy may follow one that ran
        assert last is not None
        if not maybe_sent:
            raise StoreUnavailable(
                f"Redis unavailable, session {turn.session_id!r} not saved: {last}",
                session_id=turn.session_id,
                unsaved=turn.messages,
            ) from last
        # Settled by id: the version before it is unknown, so the near cache must
        # not extend its window (no entry has version "" and length -1).
        settled = await self._resolve(turn, last)
        first, ms, gen = -1, -1, -1
        if settled == _APPLIED:
            first, ms, gen = await self._last_turn(turn, keys[2])
        return settled, "", -1, first, ms, gen, None, None

    async def _last_turn(self, turn: Turn, meta: bytes) -> tuple[int, int, int]:
        """The first number, time and generation of ``turn`` if it is the session's last
        one (else -1s): how a commit settled by id still returns its messages' ids."""
        try:
            reply = await self._link.client.execute_command("HMGET", meta, "lt", "lf", "t", "lg")
            return last_turn_reply(reply, turn.turn_id)
        except Exception as exc:
            if classify(exc) is None:
                raise
            return -1, -1, -1  # applied; only its ids are unknown

    async def _resolve(self, turn: Turn, cause: BaseException) -> int:
        """Settle a commit whose reply was lost: applied (1) or aborted (-1), never both."""
        keys = _keys.session_keys(self._link.prefix, turn.session_id)
        try:
            reply = await RESOLVE(
                self._link.client, keys, (turn.turn_id, _ABORT_MARKER_TTL_MS, TURN_MEMORY)
            )
            settled = status("the settling script", reply, _SETTLED)
        except Exception as exc:
            if classify(exc) is None:
                raise
            logger.warning(
                "commit of session %r turn %s: reply lost and not resolved (%s)",
                turn.session_id,
                turn.turn_id,
                type(exc).__name__,
            )
            raise CommitOutcomeUnknown(
                f"session {turn.session_id!r}: the commit of turn {turn.turn_id} was sent but "
                f"its reply was lost ({type(cause).__name__}: {cause}); it is stored once or "
                "not at all",
                session_id=turn.session_id,
                turn_id=turn.turn_id,
                unsaved=turn.messages,
            ) from cause
        if settled == 0:
            raise _cannot_tell(turn, "the turn ids it keeps are gone (evicted?)") from cause
        return settled

    async def settle(self, session_id: str, turn_id: str) -> TurnOutcome:
        keys = _keys.session_keys(self._link.prefix, session_id)
        with mapped_errors(session_id, f"settling a commit of session {session_id!r}"):
            reply = await RESOLVE(
                self._link.client, keys, (turn_id, _ABORT_MARKER_TTL_MS, TURN_MEMORY)
            )
            settled = status("the settling script", reply, _SETTLED)
        self._cache.drop(session_id)
        if settled == 0:
            raise CommitOutcomeUnknown(
                f"session {session_id!r}: turn {turn_id} cannot be settled: the turn ids "
                "Redis keeps for it are gone (evicted?) while its history is not",
                session_id=session_id,
                turn_id=turn_id,
            )
        return "applied" if settled == 1 else "aborted"

    async def status(self, session_id: str, turn_id: str) -> TurnStatus:
        k = _keys.key(self._link.prefix, session_id, _keys.TURNS)
        with mapped_errors(session_id, "checking a turn"):
            reply = await TURN_STATUS(self._link.client, (k,), (turn_id,))
            known = status("the turn status script", reply, _KNOWN)
        return "applied" if known == 1 else "aborted" if known == -1 else "unknown"


_NOT_LISTED: Final = "a conversation's place in its owner's listing was not updated"


async def _quietly(task: asyncio.Future[None], what: str = _NOT_LISTED) -> bool:
    """Wait for a step sent beside a commit (a listing update, a slot's registration):
    whether it was done. Its failure does not undo the commit; it only delays the
    conversation's move up, or the slot's count in ``metrics()``."""
    try:
        await task
    except Exception as exc:
        logger.warning("%s: %s", what, exc)
        return False
    return True


def _cannot_tell(turn: Turn, why: str) -> CommitOutcomeUnknown:
    """A commit that may have applied, when Redis can no longer say whether it did."""
    return CommitOutcomeUnknown(
        f"session {turn.session_id!r}: the commit of turn {turn.turn_id} may have been "
        f"applied and cannot be checked: {why}; it is stored once or not at all",
        session_id=turn.session_id,
        turn_id=turn.turn_id,
        unsaved=turn.messages,
    )


def _not_saved(turn: Turn, failure: Failure, exc: BaseException) -> Exception:
    """The error for a commit that the server refused or never ran: nothing was written."""
    session_id = turn.session_id
    unsaved: tuple[Message, ...] = turn.messages
    if failure in (Failure.REFUSED, Failure.WRONG_TYPE):
        text = str(exc)
        # redis-py strips the OOM code from the message of OutOfMemoryError.
        if type(exc).__name__ == "OutOfMemoryError" or "OOM" in text:
            reason = "out of memory"
        elif failure is Failure.WRONG_TYPE or "WRONGTYPE" in text:
            reason = "a key of this session has the wrong Redis type"
        else:
            reason = "error"
        return StoreRejected(
            f"Redis refused to save session {session_id!r} ({reason}): {text}",
            session_id=session_id,
            unsaved=unsaved,
        )
    return StoreUnavailable(
        f"Redis unavailable, session {session_id!r} not saved: {type(exc).__name__}: {exc}",
        session_id=session_id,
        unsaved=unsaved,
    )
