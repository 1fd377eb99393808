"""Per-command deadlines that never touch the task: a timer that aborts the connection.

redis-py enforces ``socket_timeout`` by running each write under
``asyncio.wait_for`` (and each read under a timeout context). On Python 3.10
and 3.11, ``wait_for`` can swallow a cancellation that arrives as the write
finishes, leaving the caller running on as if never cancelled (and it costs a
Task per command). The connections built here keep the deadline another way:
the connection is told ``socket_timeout=None``, so redis-py adds nothing, and
each write and read arms a loop timer instead. If the timer fires, the
transport is aborted, the pending I/O fails at once, and the failure is
reported as redis-py's own ``TimeoutError``. No task is cancelled, so a
cancellation of the caller is always the caller's, on every Python and on
uvloop; and a timer costs a fraction of a Task.

``RedisStore.from_url`` builds its clients with these classes.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis import exceptions as rexc

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "DeadlineConnection",
    "DeadlineSSLConnection",
    "DeadlineUnixConnection",
    "with_deadlines",
]


class _Deadlines:
    """Mixin over a redis-py connection class (see the module docstring)."""

    # Declared for the type checker; the connection classes provide them.
    _writer: asyncio.StreamWriter | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        timeout = kwargs.pop("socket_timeout", None)
        if kwargs.get("socket_connect_timeout") is None:
            kwargs["socket_connect_timeout"] = timeout  # as redis-py would default it
        super().__init__(*args, socket_timeout=None, **kwargs)  # type: ignore[call-arg]
        self.deadline: float | None = timeout
        self._expired = False

    def _arm(self) -> asyncio.TimerHandle | None:
        if not self.deadline:
            return None
        self._expired = False
        return asyncio.get_running_loop().call_later(self.deadline, self._expire)

    def _expire(self) -> None:
        self._expired = True
        writer = self._writer
        if writer is not None:
            writer.transport.abort()  # the pending write or read fails at once

    def _where(self) -> str:
        host_error = getattr(self, "_host_error", None)
        return host_error() if callable(host_error) else "the server"

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        handle = self._arm()
        try:
            await super().send_packed_command(command, check_health)  # type: ignore[misc]
        except (rexc.ConnectionError, OSError) as exc:
            if self._expired:
                raise rexc.TimeoutError(f"Timeout writing to {self._where()}") from exc
            raise
        finally:
            if handle is not None:
                handle.cancel()

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        explicit = kwargs.get("timeout", args[1] if len(args) > 1 else None)
        handle = None if explicit is not None else self._arm()
        try:
            return await super().read_response(*args, **kwargs)  # type: ignore[misc]
        except (rexc.ConnectionError, OSError) as exc:
            if self._expired and handle is not None:
                raise rexc.TimeoutError(f"Timeout reading from {self._where()}") from exc
            raise
        finally:
            if handle is not None:
                handle.cancel()


class DeadlineConnection(_Deadlines, aioredis.Connection):
    """A TCP connection whose ``socket_timeout`` is kept by a timer (module docstring)."""


class DeadlineSSLConnection(_Deadlines, aioredis.SSLConnection):
    """A TLS connection whose ``socket_timeout`` is kept by a timer (module docstring)."""


class DeadlineUnixConnection(_Deadlines, aioredis.UnixDomainSocketConnection):
    """A Unix-socket connection whose ``socket_timeout`` is kept by a timer."""


_BY_BASE: dict[type[Any], type[Any]] = {
    aioredis.Connection: DeadlineConnection,
    aioredis.SSLConnection: DeadlineSSLConnection,
    aioredis.UnixDomainSocketConnection: DeadlineUnixConnection,
}


def with_deadlines(connection_class: type[Any]) -> type[Any]:
    """The deadline-keeping version of one of redis-py's connection classes.

    Raises:
        TypeError: a connection class this module has no version of.
    """
    if connection_class in _BY_BASE.values():
        return connection_class
    try:
        return _BY_BASE[connection_class]
    except KeyError:
        raise TypeError(
            f"no deadline-keeping version of {connection_class.__name__}: pass "
            "client_options={'socket_timeout': None} to use it as it is"
        ) from None
