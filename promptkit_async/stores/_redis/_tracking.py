"""Server-assisted invalidation for the near cache: a window served with no round trip.

Redis 6+ remembers which keys a connection with ``CLIENT TRACKING`` on read
(reads inside scripts included) and, when another client writes one of them,
pushes an ``invalidate`` message. Every connection that serves the near cache
redirects its invalidations to one connection of this store's own (RESP3, no
other traffic), read by a background task; ``NOLOOP`` leaves out the writes a
connection makes itself, so our own commits do not invalidate what they wrote.

A cache entry carries a *token*: the connection whose tracking covers its keys
and the marker tracking left on it (this store's invalidations, their
generation, the connection's socket at the time). It is served without asking
Redis only while the connection still carries that marker and no invalidation
for it arrived. Another store on the same pool redirects a connection elsewhere
when it sets it up; and a connection given back to the pool gets a new marker,
since a write other code makes through it there is its own, which Redis does not
report to it (``NOLOOP``). Anything that may have lost an
invalidation bumps the generation, so every entry falls back to the version
check in the load script (one round trip, as without tracking):

- the invalidation connection failed, closed, or missed its heartbeat;
- Redis flushed the database (a flush invalidates every key at once);
- the connection that tracked an entry's keys closed or reconnected (Redis
  forgets what a closed connection read): its socket is no longer the token's.

An invalidation that arrives while a load or commit of that session is in
flight, from before it is sent until its entry is stored (a :class:`Ticket`),
leaves the result untrusted: it may describe a write made after the server
answered.

What this cannot see: an invalidation Redis has sent that has not yet reached
this process. A turn starting in that instant is served the window before that
write, exactly as if it had loaded just before it; without the distributed
lease, turns land in commit order as always, and the commit reports the
version it found, so the stale entry is dropped. With ``distributed_lock`` the
store does not use this (every load is checked under the lease).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import select
import time
from typing import TYPE_CHECKING, Any, Final

from redis import exceptions as rexc

from . import _keys

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._cache import CacheEntry, NearCache

__all__ = ["Invalidations", "Ticket", "Token"]

logger = logging.getLogger("promptkit_async.stores.redis")

#: Seconds without traffic after which the invalidation connection is pinged;
#: a ping unanswered for as long again counts as a lost connection.
HEARTBEAT: Final = 1.0

#: Backoff bounds (seconds) between attempts to (re)open the connection.
_RETRY_MIN: Final = 0.05
_RETRY_MAX: Final = 2.0

#: What a connection carries once tracking is on for it: whose invalidations,
#: their generation, and the connection's socket writer at the time.
Marker = tuple["Invalidations", int, Any]

#: (connection, the marker it carried when it read the entry's keys).
Token = tuple[Any, Marker]

_TRACKED: Final = "_promptkit_tracking"  # attribute set on redis-py connections


class Invalidations:
    """The invalidation connection of one store, and the trust it gives cache entries."""

    __slots__ = (
        "_closing",
        "_conn",
        "_events",
        "_name",
        "_pending",
        "_poller",
        "_pool",
        "_prefix",
        "_loop",
        "_task",
        "cache",
        "disabled",
        "gen",
        "id",
        "live",
        "received",
    )

    def __init__(self, pool: Any, prefix: str, cache: NearCache) -> None:
        self._pool = pool
        self._prefix = prefix
        self.cache = cache
        self.gen = 0
        self.live = False
        self.id: int | None = None
        self.received = 0  # invalidation messages read
        self.disabled: str | None = None  # why tracking is off for good (ACL, old server)
        self._name = b""
        self._conn: Any = None
        self._closing = False
        self._poller: Any = None  # select.poll on the invalidation socket, where there is one
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Sessions with tracked loads or commits in flight: [how many, the number
        # of the last invalidation for it that arrived meanwhile (0: none)].
        self._pending: dict[str, list[int]] = {}
        self._events = 0  # invalidations counted for sessions in _pending

    # -- trust -------------------------------------------------------------------------

    def trusted(self, entry: CacheEntry) -> bool:
        """True when ``entry`` may be served with no round trip (module docstring)."""
        token = entry.token
        if token is None or not self.live:
            return False
        conn, marker = token
        if marker[1] != self.gen or getattr(conn, _TRACKED, None) is not marker:
            return False  # an older generation, or set up again since (by another store?)
        if self._loop is not asyncio.get_running_loop():
            return False  # invalidations are read on another loop's task (start() moves it)
        expires = entry.expires
        if expires is not None and time.monotonic() >= expires:
            return False
        writer = marker[2]
        if conn._writer is not writer or writer is None:
            return False
        reader = conn._reader
        if reader is None or reader.at_eof():
            return False
        # Bytes read off the invalidation socket and not yet parsed may hold an
        # invalidation for this entry: not now. (A message split across reads and
        # half parsed is not seen here: like one still on the wire.)
        own = self._conn
        if getattr(getattr(own, "_reader", None), "_buffer", None):
            return False
        # Nor while the socket holds bytes this loop has not read yet: one poll(2).
        poller = self._poller
        return poller is None or not poller.poll(0)

    def begin(self, session_id: str) -> Ticket:
        """Before a tracked load or commit of ``session_id`` is sent: its ticket, to be
        closed when its entry is stored (or it failed)."""
        pending = self._pending.get(session_id)
        if pending is None:
            self._pending[session_id] = [1, 0]
        else:
            pending[0] += 1
        return Ticket(self, session_id)

    @property
    def closing(self) -> bool:
        return self._closing

    def marked(self, conn: Any) -> bool:
        """Tracking is on for ``conn``, redirected to this generation's connection."""
        marker = getattr(conn, _TRACKED, None)
        return (
            marker is not None
            and marker[0] is self
            and marker[1] == self.gen
            and marker[2] is conn._writer
        )

    def setup(self, conn: Any) -> list[tuple[Any, ...]] | None:
        """The commands that turn tracking on for ``conn`` (None: already on, or not live).

        The caller sends them at once, so ``conn``'s marker is cleared here: from now
        on its invalidations may go elsewhere than an earlier marker's (another store
        on the same pool), whatever the answers turn out to be."""
        if not self.live or self.marked(conn):
            return None
        setattr(conn, _TRACKED, None)
        return [
            ("CLIENT", "TRACKING", "ON", "REDIRECT", self.id, "NOLOOP"),
            ("CLIENT", "LIST", "ID", self.id),
        ]

    def set_up(self, conn: Any, gen: int, replies: Sequence[Any]) -> None:
        """Record what the :meth:`setup` commands answered on ``conn``.

        Only a clean answer for the current generation marks it; anything else
        leaves it unmarked, so its next tracked call sets it up again. (The
        invalidation connection checked, when it opened, that this server and
        user allow both commands: a refusal here turns tracking off, as then; any
        other error, like BUSY, is a passing state.)
        """
        if gen != self.gen or not self.live:
            return  # sent for an older invalidation connection: says nothing of this one
        tracking, listing = replies
        if isinstance(tracking, Exception) and "does not exist" in str(tracking):
            # No client of that id (a restarted server): open a new connection.
            self._broken(f"turning tracking on failed: {tracking!r}")
            return
        if isinstance(tracking, Exception) or isinstance(listing, Exception):
            answer = tracking if isinstance(tracking, Exception) else listing
            if isinstance(answer, rexc.ResponseError) and _refusal(answer):
                # Refused for good here (ACLs changed, a proxy that refuses CLIENT).
                self._disable(f"a data connection may not turn tracking on: {str(answer)[:120]}")
            else:
                logger.debug("near cache: turning tracking on failed: %r", answer)
            return
        text = listing.decode() if isinstance(listing, bytes) else str(listing)
        if f" name={self._name.decode()} " not in f" {text} ":
            # The id is another client's: this connection reached another server
            # (a restart) than the invalidation connection.
            self._broken("the invalidation connection is not on this connection's server")
            return
        setattr(conn, _TRACKED, (self, gen, conn._writer))

    def lent(self, conn: Any) -> None:
        """``conn`` goes back to the pool, where other code (another store, the
        application) may write through it; Redis does not report a connection's own
        writes to its redirect (``NOLOOP``), so the entries read on it are no longer
        trusted: its marker is replaced by an equal one (a new object, which
        :meth:`trusted` and :meth:`Ticket.close` compare by identity). It stays set
        up: taken back, what it reads while held is trusted again."""
        marker = getattr(conn, _TRACKED, None)
        if marker is not None and marker[0] is self:
            setattr(conn, _TRACKED, (self, marker[1], marker[2]))

    async def untrack_idle(self) -> None:
        """Close the pool's idle connections this store turned tracking on for (the
        store is closing; a borrowed client's pool outlives it, and Redis would go on
        tracking what they read for a connection that is gone)."""
        available = getattr(self._pool, "_available_connections", ())
        for conn in list(available):
            marker = getattr(conn, _TRACKED, None)
            if marker is not None and marker[0] is self and conn in available:
                setattr(conn, _TRACKED, None)
                with contextlib.suppress(Exception):
                    # Without waiting: no other task can take it from the pool midway.
                    await conn.disconnect(nowait=True)

    # -- the connection ----------------------------------------------------------------

    def start(self) -> None:
        """Open the invalidation connection in the background (idempotent; needs a loop).

        A store used from another event loop than before (its reader task is bound
        to the old one, which may be closed) starts over there, trusting nothing
        read until then."""
        if self.disabled is not None or self._closing:
            return
        loop = asyncio.get_running_loop()
        task = self._task
        if task is not None and not task.done() and self._loop is loop:
            return
        self._lost()
        self._conn = None  # the old loop's connection: not closable from here
        self._poller = None
        self._loop = loop
        self._task = loop.create_task(self._run())

    async def aclose(self) -> None:
        """Stop the reader and close its connection.

        redis-py's reads and connects can swallow a cancellation that lands as their
        own timeout fires (seen in CI: the close then waited forever), so the reader
        is also told to stop, its socket is aborted, and the cancel repeated until
        it has ended."""
        self._closing = True
        task, self._task = self._task, None
        self.live = False
        self.gen += 1
        self._abort()
        if task is not None and self._loop is asyncio.get_running_loop():
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.1)
            if not task.cancelled():
                task.exception()  # retrieved: it ended as told
        await self._close()

    def _abort(self) -> None:
        """Fail the invalidation connection's pending read at once."""
        transport = getattr(getattr(self._conn, "_writer", None), "transport", None)
        abort = getattr(transport, "abort", None)
        if abort is not None:
            abort()

    async def _run(self) -> None:
        delay = _RETRY_MIN
        while self.disabled is None and not self._closing:
            try:
                await self._open()
                delay = _RETRY_MIN
                await self._read()
            except asyncio.CancelledError:
                # By aclose(), or from outside (a loop shutting down): trust nothing
                # from here on, and drop the connection without awaiting.
                self._lost()
                self._abort()
                raise
            except rexc.ResponseError as exc:
                if _refusal(exc):
                    self._disable(f"the server refuses what tracking needs: {str(exc)[:120]}")
                else:  # e.g. LOADING after a restart: tried again
                    logger.debug("near cache: invalidation connection refused: %r", exc)
            except Exception as exc:
                logger.debug("near cache: invalidation connection lost: %r", exc)
            self._lost()
            await self._close()
            if self.disabled is not None or self._closing:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)

    async def _open(self) -> None:
        kwargs = dict(self._pool.connection_kwargs)
        kwargs["protocol"] = 3  # pushes need RESP3; this connection carries nothing else
        # Key names as bytes, decoded as UTF-8 as the store encodes them (a client
        # decoding replies as latin-1 would garble a non-ASCII session id).
        kwargs["decode_responses"] = False
        kwargs.pop("client_name", None)
        conn = self._pool.connection_class(**kwargs)
        self._conn = conn
        self._name = f"promptkit-inv-{secrets.token_hex(8)}".encode()
        conn._parser.set_invalidation_push_handler(self._pushed)
        await conn.connect()
        await conn.send_command("CLIENT", "SETNAME", self._name)
        await conn.read_response()
        await conn.send_command("CLIENT", "ID")
        self.id = int(await conn.read_response())
        # What every data connection will need, asked once here, so that a server
        # or an ACL user without it turns tracking off before it is ever live.
        await conn.send_command("CLIENT", "TRACKING", "ON")
        await conn.read_response()
        await conn.send_command("CLIENT", "TRACKING", "OFF")
        await conn.read_response()
        await conn.send_command("CLIENT", "LIST", "ID", self.id)
        if self._name not in _bytes(await conn.read_response()):
            raise rexc.ResponseError("unknown command: CLIENT LIST does not name the client")
        self._poller = None
        sock = conn._writer.get_extra_info("socket") if conn._writer is not None else None
        if sock is not None and hasattr(select, "poll"):
            self._poller = select.poll()
            self._poller.register(sock.fileno(), select.POLLIN)
        self.gen += 1
        self.live = True

    async def _read(self) -> None:
        conn = self._conn
        waiting = False
        while not self._closing:
            # Pushes are handed to _pushed while the read waits for a reply.
            reply = await conn.read_response(timeout=HEARTBEAT, disconnect_on_error=False)
            if reply is None:
                if waiting:
                    raise rexc.TimeoutError("the invalidation connection missed its heartbeat")
                await conn.send_command("PING")
                waiting = True
            else:
                waiting = False

    async def _pushed(self, message: Any) -> None:
        """An ``invalidate`` push: its keys, or None for a flush."""
        self.received += 1
        keys = message[1] if len(message) > 1 else None
        if keys is None:
            self._untrust()  # a flush: every key at once
            return
        pending = self._pending
        for raw in keys:
            session_id = _keys.parse_key(self._prefix, raw) or _keys.parse_key(
                self._prefix, raw, _keys.TURNS
            )
            if session_id is None:
                continue
            entry = self.cache.get(session_id)
            if entry is not None:
                entry.token = None
            flight = pending.get(session_id)
            if flight is not None:
                self._events += 1
                flight[1] = self._events

    def _untrust(self) -> None:
        """Trust nothing given before now (connections turn tracking on again); a
        ticket of an older generation gives no token."""
        self.gen += 1

    def _lost(self) -> None:
        """Invalidations may have been missed, and none arrive until reopened."""
        self.live = False
        self._untrust()

    def _broken(self, why: str) -> None:
        logger.debug("near cache: %s", why)
        self._lost()
        self._abort()  # the reader fails and reopens

    def _disable(self, why: str) -> None:
        if self.disabled is None:
            logger.warning("near cache: server-assisted invalidation is off: %s", why)
        self.disabled = why
        self._broken(why)

    async def _close(self) -> None:
        self._poller = None
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)


class Ticket:
    """One tracked load or commit of a session, from before it is sent until its
    cache entry is stored: invalidations for the session that arrive in between
    leave it without a token."""

    __slots__ = ("_inv", "conn", "gen", "marker", "seen", "session_id")

    def __init__(self, inv: Invalidations, session_id: str) -> None:
        self._inv: Invalidations | None = inv
        self.session_id = session_id
        self.gen = inv.gen
        self.seen = inv._events
        self.conn: Any = None  # set once the reply was read on it
        self.marker: Marker | None = None

    def read_on(self, conn: Any) -> None:
        """The reply was read on ``conn``: what tracking covers is what it carries now."""
        self.conn = conn
        self.marker = getattr(conn, _TRACKED, None)

    def close(self) -> Token | None:
        """The token for the entry about to be stored (None: not to be trusted).

        Idempotent: only the first call counts (a second gives None)."""
        inv, self._inv = self._inv, None
        if inv is None:
            return None
        pending = inv._pending
        flight = pending.get(self.session_id)
        if flight is None:
            return None
        clean = flight[1] <= self.seen
        flight[0] -= 1
        if flight[0] <= 0:
            del pending[self.session_id]
        marker = self.marker
        conn = self.conn
        if marker is None or not clean or not inv.live or self.gen != inv.gen:
            return None
        if marker[0] is not inv or marker[1] != self.gen or conn._writer is not marker[2]:
            return None
        carried: Any = getattr(conn, _TRACKED, None)
        return (conn, marker) if carried is marker else None


def _refusal(exc: rexc.ResponseError) -> bool:
    """A refusal for good (no permission, a server without the command), not a passing state."""
    text = str(exc).lower()
    return isinstance(exc, rexc.NoPermissionError) or "unknown" in text or "noperm" in text


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()
