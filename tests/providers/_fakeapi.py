"""Fake provider APIs that play scripted HTTP replies, two ways.

``loopback``: a real HTTP/1.1 server on 127.0.0.1 (asyncio streams, chunked
transfer encoding, ``Connection: close``), so the provider's own client,
sockets and timeouts are exercised. ``mock``: the same scripts through
``httpx.MockTransport``. Both record each request and whether the client
closed the response before the script finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import httpx

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

HANG: Final = "hang"
"""Script item: stop sending (loopback) or time out (mock) until the client gives up."""


@dataclass
class Script:
    """One HTTP reply: status, headers, then body items in order.

    An item is bytes (one chunk, flushed), an ``asyncio.Event`` to wait for
    before going on, or :data:`HANG`. ``drop`` cuts the connection after the
    items instead of ending the body properly.
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "text/event-stream"})
    items: Sequence[bytes | asyncio.Event | str] = ()
    drop: bool = False


@dataclass
class Served:
    """One request the fake API received, and what became of its reply."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def json(self) -> Any:
        return json.loads(self.body)


_REASONS: Final = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 429: "Too Many Requests"}


class FakeAPI:
    """Plays queued :class:`Script` s, one per request, and records :class:`Served`."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.scripts: list[Script] = []
        self.served: list[Served] = []
        self.base_url = "http://fake.invalid"
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._clients: list[httpx.AsyncClient] = []

    def queue(self, *scripts: Script) -> None:
        self.scripts.extend(scripts)

    def client(self) -> httpx.AsyncClient | None:
        """A client for the provider to borrow (mock), or None to let it own one."""
        if self.kind == "loopback":
            return None
        client = httpx.AsyncClient(transport=httpx.MockTransport(self._mock_handler))
        self._clients.append(client)
        return client

    def _next_script(self) -> Script:
        if self.scripts:
            return self.scripts.pop(0)
        return Script(status=500, items=[b'{"error": {"message": "no script left"}}'])

    # -- mock ------------------------------------------------------------------

    async def _mock_handler(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        served = Served(
            request.method,
            request.url.raw_path.decode(),
            {k.lower(): v for k, v in request.headers.items()},
            body,
        )
        self.served.append(served)
        script = self._next_script()
        return httpx.Response(
            script.status, headers=script.headers, stream=_MockStream(script, served)
        )

    # -- loopback ----------------------------------------------------------------

    async def start(self) -> None:
        if self.kind != "loopback":
            return
        self._server = await asyncio.start_server(self._on_connection, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        for client in self._clients:
            await client.aclose()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        watcher: asyncio.Task[None] | None = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, path, _ = request_line.split(" ", 2)
            headers = {}
            for line in header_lines:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            served = Served(method, path, headers, body)
            self.served.append(served)
            watcher = asyncio.create_task(_watch_eof(reader, served))
            await self._play(self._next_script(), served, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            if watcher is not None:
                watcher.cancel()

    async def _play(self, script: Script, served: Served, writer: asyncio.StreamWriter) -> None:
        reason = _REASONS.get(script.status, "Status")
        lines = [f"HTTP/1.1 {script.status} {reason}"]
        lines += [f"{name}: {value}" for name, value in script.headers.items()]
        lines += ["Transfer-Encoding: chunked", "Connection: close", "", ""]
        writer.write("\r\n".join(lines).encode("latin-1"))
        await writer.drain()
        for item in script.items:
            if isinstance(item, asyncio.Event):
                await item.wait()
            elif item == HANG:
                await served.closed.wait()
                return
            elif isinstance(item, bytes) and item:
                writer.write(b"%x\r\n%s\r\n" % (len(item), item))
                await writer.drain()
        if script.drop:
            return
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        served.finished.set()


async def _watch_eof(reader: asyncio.StreamReader, served: Served) -> None:
    """Sets ``served.closed`` when the client closes its end of the connection."""
    with contextlib.suppress(ConnectionError):
        while await reader.read(65536):
            pass
    served.closed.set()


class _MockStream(httpx.AsyncByteStream):
    def __init__(self, script: Script, served: Served) -> None:
        self._script = script
        self._served = served

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for item in self._script.items:
            if isinstance(item, asyncio.Event):
                await item.wait()
            elif item == HANG:
                raise httpx.ReadTimeout("simulated read timeout")
            elif isinstance(item, bytes):
                yield item
        if self._script.drop:
            raise httpx.RemoteProtocolError("peer closed connection without complete body")
        self._served.finished.set()

    async def aclose(self) -> None:
        self._served.closed.set()


def sse(*events: dict[str, Any] | str, event: str | None = None) -> bytes:
    """``data:`` frames for JSON payloads (or raw strings such as ``[DONE]``)."""
    out = []
    for payload in events:
        data = payload if isinstance(payload, str) else json.dumps(payload)
        prefix = f"event: {event}\n" if event else ""
        out.append(f"{prefix}data: {data}\n\n")
    return "".join(out).encode()


def anthropic_sse(*events: dict[str, Any]) -> bytes:
    """Messages API frames: ``event: <type>`` then the JSON payload."""
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()


def typed_sse(*events: dict[str, Any]) -> bytes:
    """Frames named after the payload's own ``type``: ``event: <type>`` then the JSON."""
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()


CHUNKINGS: Final = ("whole", "events", "ragged", "bytes")
"""How a recorded body is replayed: in one chunk, one chunk per event (as servers
flush), at ragged offsets that fall inside events and characters, or a byte at a time."""

_RAGGED: Final = (1, 7, 3, 64, 2, 301, 5, 13)


def chunked(body: bytes, how: str, *, separator: bytes = b"\n\n") -> list[bytes]:
    """``body`` cut into chunks the way ``how`` (one of :data:`CHUNKINGS`) says."""
    if how == "whole":
        return [body]
    if how == "bytes":
        return [body[i : i + 1] for i in range(len(body))]
    if how == "events":
        chunks, start = [], 0
        while (end := body.find(separator, start)) != -1:
            chunks.append(body[start : end + len(separator)])
            start = end + len(separator)
        return [*chunks, body[start:]] if start < len(body) else chunks
    if how == "ragged":
        chunks, start, i = [], 0, 0
        while start < len(body):
            size = _RAGGED[i % len(_RAGGED)]
            chunks.append(body[start : start + size])
            start += size
            i += 1
        return chunks
    raise ValueError(how)
