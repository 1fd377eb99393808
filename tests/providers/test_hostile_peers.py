"""Provider peers that never stop, send too much, or inflate: bounded memory and time.

A raw HTTP server on loopback plays the hostile peer. The reply size limit
holds while the reply streams (the response is closed as soon as it is
passed), a compressed body is inflated only up to its bound, and a reply
that never ends is abandoned at ``reply_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import tracemalloc
from typing import TYPE_CHECKING

import pytest

from promptkit_async import (
    MemoryStore,
    MessageTooLarge,
    OpenAIProvider,
    ProviderStreamError,
    Session,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator


def _delta(text: str) -> bytes:
    chunk = {"choices": [{"index": 0, "delta": {"content": text}}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


class Peer:
    """Answers every request with a 200 whose body comes from ``body()``, chunked."""

    def __init__(self, body: Callable[[], Iterator[bytes]], headers: dict[str, str]) -> None:
        self._body = body
        self._headers = headers
        self.sent = 0
        self.closed = asyncio.Event()
        self.request_headers: dict[str, str] = {}
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Peer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        if hasattr(self._server, "close_clients"):
            self._server.close_clients()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")[1:]
            self.request_headers = {
                k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines if h)
            }
            length = int(self.request_headers.get("content-length", "0"))
            await reader.readexactly(length)
            fields = {"content-type": "text/event-stream", **self._headers}
            writer.write(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n"
                + b"".join(f"{k}: {v}\r\n".encode() for k, v in fields.items())
                + b"\r\n"
            )
            for piece in self._body():
                writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                await writer.drain()
                self.sent += len(piece)
                await asyncio.sleep(0)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.closed.set()
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@contextlib.contextmanager
def peak_memory() -> Iterator[list[int]]:
    peak: list[int] = []
    tracemalloc.start()
    try:
        yield peak
    finally:
        peak.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    async with MemoryStore() as s:
        yield s


async def test_a_reply_past_the_size_limit_is_abandoned_while_it_streams(
    store: MemoryStore,
) -> None:
    def endless() -> Iterator[bytes]:
        while True:
            yield _delta("x" * 65536)

    async with Peer(endless, {}) as peer, OpenAIProvider("m", "k", peer.url) as provider:
        with peak_memory() as peak, pytest.raises(MessageTooLarge) as info:
            async with Session(store, "s", provider=provider, max_message_bytes=1 << 20) as s:
                async for _ in s.stream("hi"):
                    pass
        await asyncio.wait_for(peer.closed.wait(), 5)  # the response was closed
    assert info.value.limit == 1 << 20
    assert peer.sent < 8 << 20  # a few chunks past the limit, not the stream
    assert peak[0] < 24 << 20, f"peaked at {peak[0]} bytes"
    assert await store.load("s") == []  # nothing staged, nothing written


async def test_a_reply_that_never_ends_is_abandoned_at_the_reply_timeout(
    store: MemoryStore,
) -> None:
    def keepalive() -> Iterator[bytes]:
        while True:
            yield b": still thinking\n\n"  # a comment: no data, ever

    async with (
        Peer(keepalive, {}) as peer,
        OpenAIProvider("m", "k", peer.url, reply_timeout=0.5) as provider,
    ):
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ProviderStreamError, match="reply_timeout"):
            async with Session(store, "s", provider=provider) as s:
                await s.send("hi")
        assert loop.time() - started < 3
        await asyncio.wait_for(peer.closed.wait(), 5)


async def test_a_compressed_reply_inflates_only_up_to_its_bound(store: MemoryStore) -> None:
    bomb = gzip.compress(_delta("x" * 1000) * 200_000, 9)  # ~200 MB inflated
    assert len(bomb) < 2 << 20

    def body() -> Iterator[bytes]:
        for i in range(0, len(bomb), 16384):
            yield bomb[i : i + 16384]

    async with (
        Peer(body, {"content-encoding": "gzip"}) as peer,
        OpenAIProvider("m", "k", peer.url, max_body_bytes=1 << 20) as provider,
    ):
        with peak_memory() as peak, pytest.raises(ProviderStreamError, match="max_body_bytes"):
            async with Session(store, "s", provider=provider, max_message_bytes=64 << 20) as s:
                await s.send("hi")
        assert peer.request_headers["accept-encoding"] == "gzip, deflate"
    assert peak[0] < 16 << 20, f"peaked at {peak[0]} bytes"


async def test_an_encoding_that_cannot_be_bounded_is_refused(store: MemoryStore) -> None:
    async with (
        Peer(lambda: iter([b"\x1b\x00"]), {"content-encoding": "br"}) as peer,
        OpenAIProvider("m", "k", peer.url) as provider,
    ):
        with pytest.raises(ProviderStreamError, match="only gzip and deflate"):
            async with Session(store, "s", provider=provider) as s:
                await s.send("hi")


async def test_a_gzip_reply_within_its_bound_reads_normally(store: MemoryStore) -> None:
    body = gzip.compress(_delta("Hello") + _delta(" there") + b"data: [DONE]\n\n")
    async with (
        Peer(lambda: iter([body[:7], body[7:]]), {"content-encoding": "gzip"}) as peer,
        OpenAIProvider("m", "k", peer.url) as provider,
    ):
        async with Session(store, "s", provider=provider) as s:
            assert (await s.send("hi")).content == "Hello there"
