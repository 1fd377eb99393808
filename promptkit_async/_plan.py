"""How a session uses a store: its capabilities, found once, and the commit strategies.

A session never probes a store per call. The first session on a store reads
its capabilities from the protocols in :mod:`.stores._contract` and keeps
them in a :class:`StorePlan`, held beside the store (weakly: the plan lives
as long as the store, and is never shared with another one):

- the lock registry: the store's own (:class:`SupportsLocks`), or one the plan
  keeps for a store that has none, which is how a store implementing only the
  core protocol still serialises its turns (:meth:`LockRegistry.of`);
- how a block holds the session: the in-process lock, then (when the store
  has :class:`SupportsLeases` and ``distributed_lock`` on) the store's lease,
  both given back by :func:`release` whatever happens;
- how a turn is committed. A store with :class:`SupportsTurns` is awaited
  directly, and a cancellation that lands mid-commit is settled by turn id
  (applied, or aborted for good). Any other store's ``append`` runs as a task
  of its own that a cancelled caller waits for, so that it is never left
  half-done. Either way the wait is bounded by ``commit_grace``.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from time import perf_counter
from typing import TYPE_CHECKING, Any, cast

from ._exceptions import SessionBusy
from ._locks import LockRegistry
from .stores._contract import (
    Store,
    SupportsLeases,
    SupportsLocks,
    SupportsSummaries,
    SupportsTurns,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ._messages import Message
    from .stores._contract import Lease, Turn

__all__ = ["StorePlan", "plan_for", "release", "settle_after_cancel", "wait_bounded"]

logger = logging.getLogger("promptkit_async._session")

#: How long a leaving session waits for its lease to be released.
_LEASE_RELEASE_WAIT = 2.0
#: Lease releases still running after their session was cancelled.
_background: set[asyncio.Future[Any]] = set()


async def release(locks: LockRegistry, session_id: str, entry: object, lease: Lease | None) -> None:
    """Give back a block's lease (if any), then its in-process lock."""
    try:
        if lease is not None:
            # Its own task: a cancellation here must not leave the lease held
            # (it would block other instances until it expires). Waited for a
            # bounded time only: a store that stopped answering must not hold
            # the turn (the release goes on, and the lease expires anyway).
            task = asyncio.ensure_future(lease.release())
            _background.add(task)
            task.add_done_callback(_background.discard)
            await asyncio.wait({task}, timeout=_LEASE_RELEASE_WAIT)
    finally:
        locks.release(session_id, entry)


class StorePlan:
    """The capabilities of one store, as a session uses them."""

    __slots__ = ("leases", "locks", "summaries", "turns")

    def __init__(self, store: object) -> None:
        if not isinstance(store, Store):
            raise TypeError(
                f"{type(store).__name__} is not a Store: it needs the coroutines load, "
                "append, delete and aclose (see promptkit_async.Store)"
            )
        if isinstance(store, SupportsLocks):
            locks = store.locks
            if not isinstance(locks, LockRegistry):
                raise TypeError(
                    f"{type(store).__name__}.locks must be a promptkit_async.LockRegistry, "
                    f"got {type(locks).__name__}"
                )
        else:
            locks = LockRegistry()
        self.locks: LockRegistry = locks
        self.turns = isinstance(store, SupportsTurns)
        self.leases = isinstance(store, SupportsLeases)
        self.summaries = isinstance(store, SupportsSummaries)
        if self.leases and not self.turns:
            raise TypeError(
                f"{type(store).__name__} offers leases but not turns (commit, settle_turn): "
                "a lease can only fence a commit that carries it"
            )

    async def take_lease(
        self, store: Store, session_id: str, timeout: float | None, started: float
    ) -> Lease | None:
        """The store's lease for the block, when it uses one (``started``: when the
        block began waiting, so that the lock and the lease share ``timeout``).

        Raises:
            SessionBusy: not acquired within ``timeout`` seconds (both together).
        """
        leases = cast("SupportsLeases", store)
        if not leases.distributed_lock:
            return None
        left = timeout
        if left is not None:
            left = max(0.0, left - (perf_counter() - started))
        try:
            return await leases.acquire_lease(session_id, left)
        except SessionBusy:
            assert timeout is not None
            raise SessionBusy(session_id, timeout) from None

    async def commit(self, store: Store, turn: Turn, grace: float) -> Sequence[Message] | None:
        """Commit ``turn`` so that a cancellation cannot leave its outcome undecided.

        A cancelled caller waits (up to ``grace``) until the commit is finished
        or settled, then re-raises the cancellation. Holding the session lock
        until then keeps the next turn from loading a history still being written.
        (A session inlines the first branch, the common one.)
        """
        if self.turns:
            try:
                return await cast("SupportsTurns", store).commit(turn)
            except asyncio.CancelledError:
                await settle_after_cancel(store, turn, grace)
                raise
        appending: asyncio.Future[None] = asyncio.ensure_future(
            store.append(
                turn.session_id,
                turn.messages,
                max_messages=turn.max_messages,
                ttl=turn.ttl,
                turn_id=turn.turn_id,
            )
        )
        try:
            await asyncio.shield(appending)
        except asyncio.CancelledError:
            await wait_bounded(appending, grace)
            _log_after_cancel(appending, turn, grace)
            raise
        return None


async def settle_after_cancel(store: Store, turn: Turn, grace: float) -> None:
    """A cancellation landed mid-commit: decide the turn by id (within ``grace``)."""
    turns = cast("SupportsTurns", store)
    task = asyncio.ensure_future(turns.settle_turn(turn.session_id, turn.turn_id))
    await wait_bounded(task, grace)
    _log_after_cancel(task, turn, grace)


_plans: weakref.WeakKeyDictionary[object, StorePlan] = weakref.WeakKeyDictionary()
# The store last planned, weakly, and its plan: an application opens its
# sessions on one store, and this check costs half a WeakKeyDictionary lookup
# (which makes a weak reference each time). A dead reference matches nothing.
_last: tuple[Callable[[], object], StorePlan | None] = (lambda: None, None)


def plan_for(store: object) -> StorePlan:
    """The plan of ``store``, made on first use and kept as long as the store lives.

    Raises:
        TypeError: ``store`` is not a Store, or cannot carry a plan (neither
            hashable and weak-referenceable, nor with a ``locks`` registry).
    """
    global _last
    last, plan = _last
    if plan is not None and last() is store:
        return plan
    try:
        plan = _plans[store]
    except KeyError:
        plan = _plans[store] = StorePlan(store)
    except TypeError:  # unhashable, or no __weakref__ slot
        return _unkept_plan(store)
    _last = (weakref.ref(store), plan)
    return plan


def _unkept_plan(store: object) -> StorePlan:
    """The plan of a store that cannot be a weak key: made anew, from its own locks."""
    plan = StorePlan(store)
    if not isinstance(store, SupportsLocks):
        raise TypeError(
            f"{type(store).__name__} can hold no lock registry of its own: give it a "
            "`locks` attribute (a promptkit_async.LockRegistry), or make it hashable "
            "and weak-referenceable"
        ) from None
    return plan


async def wait_bounded(task: asyncio.Future[Any], grace: float) -> None:
    """Wait for ``task`` up to ``grace`` seconds, whatever further cancellations arrive."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while not task.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        try:
            await asyncio.wait({task}, timeout=remaining)
        except asyncio.CancelledError:
            continue


def _log_after_cancel(task: asyncio.Future[Any], turn: Turn, grace: float) -> None:
    if not task.done():
        task.cancel()
        logger.warning(
            "session %r: commit of turn %s not settled within %.1fs of a cancellation, "
            "outcome unknown: it is stored once or not at all",
            turn.session_id,
            turn.turn_id,
            grace,
        )
    elif task.cancelled() or task.exception() is not None:
        logger.warning(
            "session %r: commit of turn %s after a cancellation: %s",
            turn.session_id,
            turn.turn_id,
            "cancelled" if task.cancelled() else task.exception(),
        )
    else:
        logger.info(
            "session %r: turn %s %s despite a cancellation",
            turn.session_id,
            turn.turn_id,
            task.result() if task.result() is not None else "committed",
        )
