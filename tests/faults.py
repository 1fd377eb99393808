"""A small asyncio TCP proxy in front of a Redis server, for injecting network faults.

It runs on the test's own event loop, listens on 127.0.0.1 and relays bytes
both ways. Faults are switched at run time:

- ``mode = "pass"``: relay as is (after the optional delays below);
- ``mode = "blackhole"``: accept connections, swallow requests, never answer;
- ``refuse()`` / ``accept()``: stop / resume listening, so new connections are
  refused (ECONNREFUSED); existing ones are cut;
- ``request_delay`` / ``reply_delay``: seconds to hold each chunk before
  forwarding it (order is kept); ``delay_match`` restricts the request delay to
  chunks containing those bytes (e.g. ``b"EVALSHA"``);
- ``delay_replies_of(match, seconds)``: hold each reply chunk ``seconds`` on the
  links that sent a request containing ``match`` (e.g. ``b"promptkit-inv"``,
  the near cache's invalidation connection), the others untouched;
- ``drop_reply(match)``: one-shot. The next request containing ``match`` is
  forwarded, and when the server's reply arrives (proof it was executed) the
  client connection is cut instead: the reply is lost;
- ``drop_request(match)``: one-shot. The next request containing ``match``
  is not forwarded and its connection is cut: the command never ran;
- ``kill_all()``: cut every live connection.

Every chunk read from clients is recorded in ``requests`` (those passed on
in ``forwarded``, those from the server in ``replies``), so tests can count
how many times a command was sent (``proxy.count(b"EVALSHA")``).
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from typing_extensions import Self

__all__ = ["FaultProxy", "Mode"]

Mode = Literal["pass", "blackhole"]

_CHUNK = 65536


class _Link:
    """One client connection and its upstream connection."""

    __slots__ = ("client", "drop_on_reply", "reply_delay", "tasks", "upstream")

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.drop_on_reply = False
        self.reply_delay = 0.0  # set by FaultProxy.delay_replies_of
        self.tasks: list[asyncio.Task[None]] = []

    def cut(self) -> None:
        for writer in (self.client, self.upstream):
            transport = writer.transport
            if not transport.is_closing():
                # abort(): no FIN handshake, like a network failure mid-flight.
                transport.abort()


class FaultProxy:
    """TCP proxy ``127.0.0.1:<port>`` -> ``upstream_host:upstream_port`` with faults.

    Use as ``async with FaultProxy(redis_port) as proxy:``; ``proxy.url`` is a
    ``redis://`` URL through it.
    """

    def __init__(
        self,
        upstream_port: int,
        *,
        upstream_host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.port = port
        self.mode: Mode = "pass"
        self.request_delay = 0.0
        self.reply_delay = 0.0
        self.delay_match: bytes | None = None
        self.delayed_links = 0  # links matched by delay_replies_of
        self._link_delay: tuple[bytes, float] | None = None
        self.requests: list[bytes] = []
        self.replies: list[bytes] = []
        self.forwarded: list[bytes] = []
        self.dropped_replies = 0
        self.dropped_requests = 0
        self.reply_dropped = asyncio.Event()
        self._drop_reply: bytes | None = None
        self._drop_request: bytes | None = None
        self._after_drop: Callable[[], None] | None = None
        self._server: asyncio.Server | None = None
        self._closing: list[asyncio.Server] = []
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[object]] = set()
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def __aenter__(self) -> Self:
        await self.accept()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def accept(self) -> None:
        """Listen (again) on the proxy port: new connections are accepted."""
        if self._server is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._handle, sock=sock)

    async def refuse(self) -> None:
        """Stop listening and cut live connections: connecting now fails with ECONNREFUSED."""
        self.refuse_now()
        closing, self._closing = self._closing, []
        for server in closing:
            await server.wait_closed()

    def refuse_now(self) -> None:
        """:meth:`refuse` without waiting (usable as a ``drop_reply(then=...)`` callback)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            self._closing.append(server)
        self.kill_all()

    def kill_all(self) -> int:
        """Cut every live connection (both sides); returns how many."""
        links = list(self._links)
        for link in links:
            link.cut()
        return len(links)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.refuse()
        # Cancel the pumps only: each connection handler then ends by itself.
        pumps = [t for link in list(self._links) for t in link.tasks]
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        if self._handlers:
            await asyncio.wait(set(self._handlers), timeout=5)

    @property
    def connections(self) -> int:
        return len(self._links)

    # -- faults ------------------------------------------------------------------

    def drop_reply(self, match: bytes, *, then: Callable[[], None] | None = None) -> None:
        """Lose the reply to the next request containing ``match`` (after it ran).

        ``then`` runs right after the drop, before the client can react (e.g.
        ``proxy.blackhole`` so that checking the outcome is impossible too).
        """
        self.reply_dropped.clear()
        self._drop_reply = match
        self._after_drop = then

    def drop_request(self, match: bytes) -> None:
        """Cut the connection instead of forwarding the next request containing ``match``."""
        self._drop_request = match

    def delay_replies_of(self, match: bytes, seconds: float) -> None:
        """Hold each reply chunk ``seconds`` on links that sent a request containing
        ``match`` (from then on, links open now included; order is kept)."""
        self._link_delay = (match, seconds)

    def blackhole(self) -> None:
        self.mode = "blackhole"

    def heal(self) -> None:
        """Back to a plain relay: no mode, no delays, nothing armed."""
        self.mode = "pass"
        self.request_delay = 0.0
        self.reply_delay = 0.0
        self.delay_match = None
        self._link_delay = None
        for link in self._links:
            link.reply_delay = 0.0
        self._drop_reply = None
        self._drop_request = None
        self._after_drop = None

    def count(self, needle: bytes) -> int:
        """How many request chunks contained ``needle``."""
        return sum(needle in chunk for chunk in self.requests)

    # -- relay -------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        me = asyncio.current_task()
        if me is not None:
            self._handlers.add(me)
            me.add_done_callback(self._handlers.discard)
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            writer.transport.abort()  # upstream down: the client sees a reset
            return
        link = _Link(writer, up_writer)
        self._links.add(link)
        link.tasks = [
            asyncio.ensure_future(self._pump_requests(link, reader)),
            asyncio.ensure_future(self._pump_replies(link, up_reader)),
        ]
        try:
            await asyncio.gather(*link.tasks, return_exceptions=True)
        finally:
            link.cut()
            self._links.discard(link)

    async def _pump_requests(self, link: _Link, reader: asyncio.StreamReader) -> None:
        half_close = False
        try:
            while True:
                chunk = await reader.read(_CHUNK)
                if not chunk:
                    # The client closed: pass the FIN on, so requests already
                    # forwarded (or still held by a delay) are answered by the
                    # server, which then closes its side.
                    half_close = True
                    break
                self.requests.append(chunk)
                if self._drop_request is not None and self._drop_request in chunk:
                    self._drop_request = None
                    self.dropped_requests += 1
                    break
                if self.mode == "blackhole":
                    continue
                delay = self._link_delay
                if delay is not None and not link.reply_delay and delay[0] in chunk:
                    link.reply_delay = delay[1]
                    self.delayed_links += 1
                if self._drop_reply is not None and self._drop_reply in chunk:
                    self._drop_reply = None
                    link.drop_on_reply = True
                if self.request_delay and (self.delay_match is None or self.delay_match in chunk):
                    await asyncio.sleep(self.request_delay)
                if link.upstream.transport.is_closing():
                    break
                link.upstream.write(chunk)
                self.forwarded.append(chunk)
                await link.upstream.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if half_close and not link.upstream.transport.is_closing():
                link.upstream.write_eof()
            else:
                link.cut()

    async def _pump_replies(self, link: _Link, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                chunk = await reader.read(_CHUNK)
                if not chunk:
                    break
                self.replies.append(chunk)
                if link.drop_on_reply:
                    # The server executed the request (it answered); the client never
                    # learns the answer.
                    self.dropped_replies += 1
                    after, self._after_drop = self._after_drop, None
                    if after is not None:
                        after()
                    self.reply_dropped.set()
                    break
                if self.mode == "blackhole":
                    continue
                if self.reply_delay:
                    await asyncio.sleep(self.reply_delay)
                if link.reply_delay:
                    await asyncio.sleep(link.reply_delay)
                if link.client.transport.is_closing():
                    continue  # keep reading: the server may still be answering late copies
                link.client.write(chunk)
                await link.client.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            link.cut()
