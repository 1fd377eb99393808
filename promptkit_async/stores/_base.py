"""The :class:`Store` protocol: the contract every conversation store meets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .._config import TTL
    from .._messages import Message

__all__ = ["Store"]


@runtime_checkable
class Store(Protocol):
    """Where session histories live.

    Implement these coroutines to add a backend; no base class is needed.
    ``append`` must be atomic (all messages or none), must append rather than
    rewrite (so that concurrent writers from several processes never lose each
    other's messages), must cap the stored list to the newest ``max_messages``
    and refresh the sliding ``ttl`` (``None``: keep forever). A store that
    receives the same ``turn_id`` twice applies it once.

    Raises (all of them):
        InvalidSessionId: the id is empty, not a str, or too long.
        StoreUnavailable: the backend could not be reached; on ``append`` it
            carries the unsaved messages in ``.unsaved``.
        CorruptHistory: a stored record cannot be decoded (``load``).
    """

    async def load(self, session_id: str, limit: int | None = None) -> list[Message]:
        """The newest ``limit`` messages (all when None), oldest first."""
        ...

    async def append(
        self,
        session_id: str,
        messages: Sequence[Message],
        *,
        max_messages: int | None = None,
        ttl: TTL = ...,
        turn_id: str | None = None,
    ) -> None:
        """Atomically append, cap to ``max_messages`` and refresh the TTL."""
        ...

    async def delete(self, session_id: str) -> bool:
        """Erase the session; True if it existed."""
        ...

    async def aclose(self) -> None:
        """Release what the store owns; idempotent."""
        ...
