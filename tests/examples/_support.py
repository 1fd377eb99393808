"""Test support: a real uvicorn server in a thread, and Redis key clean-up by prefix."""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import TYPE_CHECKING

import redis

if TYPE_CHECKING:
    import uvicorn
    from starlette.types import ASGIApp


class ServerThread:
    """uvicorn on 127.0.0.1, with its own event loop in a daemon thread.

    The socket is bound before the server starts, so there is no race for the
    port; ``stop()`` asks for a graceful shutdown (lifespan shutdown runs).
    """

    def __init__(self, app: ASGIApp) -> None:
        import uvicorn  # here, so that tests of the bot need no web dependencies

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        # The loop the suite runs on, named: left to "auto", an older uvicorn
        # installs uvloop's policy for the whole process when uvloop is there.
        config = uvicorn.Config(
            app,
            lifespan="on",
            ws="none",
            log_level="warning",
            timeout_graceful_shutdown=5,
            loop=os.environ.get("PROMPTKIT_LOOP", "asyncio"),
        )
        self.server: uvicorn.Server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def start(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("uvicorn exited during start-up")
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start within 10 s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(10)
        self._sock.close()
        if self._thread.is_alive():
            raise RuntimeError("uvicorn did not stop within 10 s")


def delete_keys(url: str, prefix: str) -> None:
    """Delete this test's keys (SCAN + DEL on its prefix; never FLUSHDB)."""
    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)
    finally:
        client.close()
