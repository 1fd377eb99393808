"""A tiny RESP2 server on loopback that answers from a script: a hostile or broken peer.

It parses the commands a client sends (arrays of bulk strings) and answers
each with the raw bytes the test chose for that command name, so a test can
put any reply shape in front of the store. Connection handshakes (CLIENT
SETINFO, SELECT) are answered ``+OK``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

Reply = bytes | Callable[[list[bytes]], bytes]


class RespServer:
    """``replies[COMMAND]`` is sent for every COMMAND (upper case); ``seen`` logs them."""

    def __init__(self, replies: dict[str, Reply] | None = None) -> None:
        self.replies: dict[str, Reply] = {"CLIENT": b"+OK\r\n", "SELECT": b"+OK\r\n"}
        self.replies.update(replies or {})
        self.seen: list[list[bytes]] = []
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for handler in self._handlers:  # clients still connected: hang up on them
            handler.cancel()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=2)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                command = await _read_command(reader)
                if command is None:
                    return
                self.seen.append(command)
                reply = self.replies.get(command[0].decode().upper(), b"-ERR unknown command\r\n")
                writer.write(reply(command) if callable(reply) else reply)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return
        finally:
            self._handlers.discard(task)
            writer.close()


async def _read_command(reader: asyncio.StreamReader) -> list[bytes] | None:
    header = await reader.readline()
    if not header:
        return None
    assert header.startswith(b"*"), header
    args = []
    for _ in range(int(header[1:])):
        size_line = await reader.readline()
        assert size_line.startswith(b"$"), size_line
        data = await reader.readexactly(int(size_line[1:]) + 2)
        args.append(data[:-2])
    return args
