"""Distributed leases: one holder per session across processes, fencing its commit.

A lease is a ``SET NX PX`` key holding a random token (a lease key found
without a TTL is given one, so that nothing foreign or left over blocks a
session forever). The holder renews it
in the background while its turn runs and deletes it when done (only if the
token is still its own). The commit script compares the token with the key's
value, so a holder whose lease expired or was taken over cannot write,
whatever its renewal task believed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import TYPE_CHECKING, Any

from ..._exceptions import SessionBusy
from . import _keys
from ._errors import classify, mapped_errors
from ._replies import flag
from ._scripts import ACQUIRE, RELEASE, RENEW

if TYPE_CHECKING:
    from ._link import Link

__all__ = ["Leases", "RedisLease"]

logger = logging.getLogger("promptkit_async.stores.redis")

#: Releases still running after their owner moved on (kept referenced until done).
_background: set[asyncio.Task[None]] = set()


def _consume(task: asyncio.Task[Any]) -> None:
    """Retrieve a background task's outcome (already logged where it matters)."""
    if not task.cancelled():
        task.exception()


class RedisLease:
    """A per-session Redis lease held by one turn (see ``distributed_lock``).

    Renewed in the background while the turn runs; released only by its owner.
    If renewal finds the lease gone, ``lost`` is set, and the fencing check in
    the commit refuses the write whatever the renewal task saw.
    """

    __slots__ = ("_link", "_renewer", "_ttl", "key", "lost", "session_id", "token")

    def __init__(self, link: Link, ttl: float, session_id: str, key: bytes, token: str) -> None:
        self._link = link
        self._ttl = ttl
        self.session_id = session_id
        self.key = key
        self.token = token
        self.lost = False
        self._renewer: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"RedisLease({self.session_id!r}, lost={self.lost})"

    def _start(self) -> None:
        self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())
        self._renewer.add_done_callback(_consume)

    async def _renew_forever(self) -> None:
        ttl_ms = int(self._ttl * 1000)
        while self._renewer is not None:
            await asyncio.sleep(self._ttl / 3)
            try:
                held = flag(
                    "the lease renewal",
                    await RENEW(self._link.client, (self.key,), (self.token, ttl_ms)),
                )
            except Exception as exc:
                if classify(exc) is None:
                    raise
                logger.warning("lease on session %r not renewed: %s", self.session_id, exc)
                continue
            if not held:
                self.lost = True
                logger.warning("lease on session %r was lost", self.session_id)
                return

    async def release(self) -> None:
        """Stop renewing and delete the lease if this owner still holds it."""
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.cancel()
            # The renewer's own failure must never fail a turn that was committed,
            # nor may a renewal stuck on a dead connection hold the release.
            await asyncio.wait({renewer}, timeout=1.0)
        try:
            await RELEASE(self._link.client, (self.key,), (self.token,))
        except Exception as exc:  # it expires by itself
            if classify(exc) is None:
                raise
            logger.warning("lease on session %r not released: %s", self.session_id, exc)


class Leases:
    """Takes session leases of ``ttl`` seconds through ``link``."""

    __slots__ = ("_link", "ttl")

    def __init__(self, link: Link, ttl: float) -> None:
        self._link = link
        self.ttl = ttl

    async def acquire(self, session_id: str, timeout: float | None) -> RedisLease:
        k = _keys.key(self._link.prefix, session_id, _keys.LEASE)
        token = secrets.token_hex(16)
        ttl_ms = int(self.ttl * 1000)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        pause = 0.005
        while True:
            try:
                with mapped_errors(session_id, f"taking the lease of session {session_id!r}"):
                    got = flag(
                        "the lease request",
                        await ACQUIRE(self._link.client, (k,), (token, ttl_ms)),
                    )
            except BaseException:
                # The SET may have run with its reply lost (or the wait was cancelled
                # after it was sent): give back a lease we might hold, in the background.
                self._release_in_background(k, token)
                raise
            if got:
                lease = RedisLease(self._link, self.ttl, session_id, k, token)
                lease._start()
                return lease
            if deadline is not None and loop.time() + pause > deadline:
                raise SessionBusy(session_id, timeout or 0.0)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.1)

    def _release_in_background(self, key: bytes, token: str) -> None:
        client = self._link.client

        async def release() -> None:
            with contextlib.suppress(Exception):
                await RELEASE(client, (key,), (token,))

        try:
            task = asyncio.get_running_loop().create_task(release())
        except RuntimeError:  # pragma: no cover - no loop: the lease expires by itself
            return
        _background.add(task)
        task.add_done_callback(_background.discard)
