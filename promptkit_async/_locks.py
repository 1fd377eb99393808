"""Per-session locks that serialise turns within one process.

Entries are reference-counted and dropped when the last holder or waiter
leaves, so a million distinct session ids touched one after another leave the
registry empty. A registry belongs to one store: sharing one across stores or
loops would couple unrelated code.

Nearly every turn finds its session's lock free, so that case is a dict insert
and a delete, taken synchronously (:meth:`LockRegistry.try_acquire`): no
coroutine, no future, no ``asyncio.Lock`` per turn. A session's entry becomes a
real queue only once a second user arrives: a FIFO of loop futures, and
release hands the lock straight to the oldest live waiter, so the lock is
never free while someone waits and nobody can overtake the queue.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque

from ._exceptions import SessionBusy

__all__ = ["LockRegistry"]


class _Alone:
    """The entry of a lock held by one user with nobody waiting: one shared object,
    so the uncontended turn allocates nothing. Reads as an :class:`_Entry` would."""

    __slots__ = ()
    held = True
    users = 1
    waiters = None


_ALONE = _Alone()


class _Entry:
    """A contended lock: its holder (``held``) and the futures of its waiters, oldest first."""

    __slots__ = ("held", "loop", "users", "waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.held = True
        self.users = 1  # the holder and every waiter still in acquire()
        self.loop = loop  # where the waiters' futures live
        # A future's result: True when handed the lock, False when its timeout expired.
        self.waiters: deque[asyncio.Future[bool]] = deque()


def _expire(fut: asyncio.Future[bool]) -> None:
    if not fut.done():
        fut.set_result(False)


class LockRegistry:
    """One FIFO lock per session id, created on demand, refcounted."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[str, _Entry | _Alone] = {}

    @classmethod
    def of(cls, store: object) -> LockRegistry:
        """The registry that serialises turns on ``store``'s sessions in this process.

        A store with a ``locks`` registry (``SupportsLocks``) owns it. Any other
        store gets one of its own, kept beside it (weakly) for as long as it
        lives: this is how a store implementing only the core ``Store``
        protocol still runs one turn per session at a time.

        Raises:
            TypeError: ``store`` is not a Store.
        """
        from ._plan import plan_for

        return plan_for(store).locks

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._entries

    def locked(self, session_id: str) -> bool:
        entry = self._entries.get(session_id)
        return entry is not None and entry.held

    def try_acquire(self, session_id: str) -> object | None:
        """Take the session's lock if it is free, without waiting; None if it is not.

        The token returned is given back to :meth:`release`.
        """
        entries = self._entries
        entry = entries.get(session_id)
        if entry is None:
            entries[session_id] = _ALONE
            return _ALONE
        if entry.held:
            return None
        # Free, kept only by cancelled waiters still on their way out.
        assert isinstance(entry, _Entry)
        entry.held = True
        entry.users += 1
        return entry

    async def acquire(self, session_id: str, timeout: float | None = None) -> object:
        """Wait for the session's lock; the returned token is given back to release().

        Raises:
            SessionBusy: the lock was not acquired within ``timeout`` seconds.
            RuntimeError: the session's lock is being waited for on another event loop.
        """
        entries = self._entries
        entry = entries.get(session_id)
        if entry is None:
            entries[session_id] = _ALONE
            return _ALONE
        loop = asyncio.get_running_loop()
        if isinstance(entry, _Alone):
            entry = entries[session_id] = _Entry(loop)
        elif not entry.held:
            entry.held = True
            entry.users += 1
            return entry
        elif entry.loop is not loop:
            raise RuntimeError(f"the lock of session {session_id!r} is in use on another loop")
        fut: asyncio.Future[bool] = loop.create_future()
        entry.waiters.append(fut)
        entry.users += 1
        # A timer on the future, not a cancellation of the task: cheaper than
        # asyncio.timeout / wait_for, and it cannot race with a hand-off (the
        # first to resolve the future decides).
        timer = None
        if timeout is not None and timeout != math.inf:
            timer = loop.call_later(timeout, _expire, fut)
        try:
            handed = await fut
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.result():
                # Handed the lock just as the cancellation landed: pass it on.
                self._release(session_id, entry)
            else:
                self._abandon(session_id, entry, fut)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if not handed:
            self._abandon(session_id, entry, fut)
            assert timeout is not None
            raise SessionBusy(session_id, timeout)
        return entry

    def release(self, session_id: str, entry: object) -> None:
        """Give the lock back; ``entry`` is what :meth:`acquire` returned."""
        entries = self._entries
        current = entries.get(session_id)
        if current is _ALONE:
            del entries[session_id]
            return
        if not isinstance(current, _Entry) or not current.held:
            raise RuntimeError(f"the lock of session {session_id!r} is not held")
        self._release(session_id, current)

    def _release(self, session_id: str, entry: _Entry) -> None:
        """Hand the lock to the oldest live waiter, else free it; the holder leaves."""
        waiters = entry.waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():  # else cancelled or expired: its waiter is leaving
                fut.set_result(True)
                entry.users -= 1
                return
        entry.held = False
        self._leave(session_id, entry)

    def _abandon(self, session_id: str, entry: _Entry, fut: asyncio.Future[bool]) -> None:
        """A waiter gives up (cancelled or timed out) without the lock."""
        try:
            entry.waiters.remove(fut)
        except ValueError:
            pass  # already dropped by a release
        self._leave(session_id, entry)

    def _leave(self, session_id: str, entry: _Entry) -> None:
        entry.users -= 1
        if entry.users == 0 and self._entries.get(session_id) is entry:
            del self._entries[session_id]
