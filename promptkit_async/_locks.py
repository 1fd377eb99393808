"""Per-session locks that serialise turns within one process.

Entries are reference-counted and dropped when the last holder or waiter
leaves, so a million distinct session ids touched one after another leave the
registry empty. A registry belongs to one store: asyncio locks bind to the
event loop that first waits on them, and sharing one across stores or loops
would couple unrelated code.
"""

from __future__ import annotations

import asyncio
import sys

from ._exceptions import SessionBusy

__all__ = ["LockRegistry"]


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class LockRegistry:
    """One asyncio lock per session id, created on demand, refcounted."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

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
        return entry is not None and entry.lock.locked()

    async def acquire(self, session_id: str, timeout: float | None = None) -> object:
        """Wait for the session's lock; the returned token is given back to release().

        Raises:
            SessionBusy: the lock was not acquired within ``timeout`` seconds.
        """
        entry = self._entries.get(session_id)
        if entry is None:
            entry = self._entries[session_id] = _Entry()
        entry.users += 1
        try:
            if timeout is None:
                await entry.lock.acquire()
            elif entry.users == 1 and not entry.lock.locked():
                # Nobody else holds or waits: take it without timer machinery.
                await entry.lock.acquire()
            else:
                await _acquire_within(entry.lock, timeout, session_id)
        except BaseException:
            self._leave(session_id, entry)
            raise
        return entry

    def release(self, session_id: str, entry: object) -> None:
        """Give the lock back; ``entry`` is what :meth:`acquire` returned."""
        assert isinstance(entry, _Entry)
        entry.lock.release()
        self._leave(session_id, entry)

    def _leave(self, session_id: str, entry: _Entry) -> None:
        entry.users -= 1
        if entry.users == 0 and self._entries.get(session_id) is entry:
            del self._entries[session_id]


if sys.version_info >= (3, 11):

    async def _acquire_within(lock: asyncio.Lock, timeout: float, session_id: str) -> None:
        try:
            async with asyncio.timeout(timeout):
                await lock.acquire()
        except TimeoutError:
            raise SessionBusy(session_id, timeout) from None

else:  # pragma: no cover - exercised on 3.10 only

    async def _acquire_within(lock: asyncio.Lock, timeout: float, session_id: str) -> None:
        try:
            await asyncio.wait_for(lock.acquire(), timeout)
        except asyncio.TimeoutError:
            raise SessionBusy(session_id, timeout) from None
