"""Conversations: store, provider and session settings held once for an application.

A web handler should not repeat five arguments per request; it holds one
``Conversations`` (created at start-up, closed at shutdown) and opens sessions
from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ._config import DEFAULT_MAX_MESSAGES, DEFAULT_TTL, TTL, OnError, OnLoadError, check_session_id
from ._messages import Message
from ._resources import AsyncResource
from ._session import (
    DEFAULT_COMMIT_GRACE,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_TURN_BYTES,
    Session,
)
from ._trim import TokenCounter, estimate_tokens

if TYPE_CHECKING:
    from ._types import Role
    from .providers._base import Provider
    from .stores._base import Store

__all__ = ["Conversations", "SessionSettings"]


@dataclass(frozen=True, kw_only=True, slots=True)
class SessionSettings:
    """The per-session settings of :class:`Session`, grouped (see its docs)."""

    max_messages: int | None = DEFAULT_MAX_MESSAGES
    ttl: TTL = DEFAULT_TTL
    system: str | None = None
    lock_timeout: float | None = None
    on_error: OnError = "discard"
    on_load_error: OnLoadError = "raise"
    max_tokens: int | None = None
    token_counter: TokenCounter = field(default=estimate_tokens)
    save_unanswered: bool = False
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_turn_bytes: int = DEFAULT_MAX_TURN_BYTES
    commit_grace: float = DEFAULT_COMMIT_GRACE


class Conversations(AsyncResource):
    """Opens sessions over one store (and optionally one provider) with shared settings.

    Example::

        chats = Conversations(RedisStore.from_url(url), provider=provider, system="Be brief.")
        async with chats.session("user-123") as session:
            async for text in session.stream("hello"):
                ...
        await chats.aclose()   # closes the store and provider

    Args:
        store: the store sessions load from and write to.
        provider: the model client for ``send``/``stream`` (optional).
        owns: close the store and provider in :meth:`aclose` (default True).
        **settings: any :class:`SessionSettings` field, e.g. ``max_messages=10``.
    """

    def __init__(
        self,
        store: Store,
        *,
        provider: Provider | None = None,
        owns: bool = True,
        **settings: Any,
    ) -> None:
        self.store = store
        self.provider = provider
        self.settings = SessionSettings(**settings)
        self.session("settings-check")  # bad settings fail here, not on every request
        self._owns = owns
        self._closed = False

    def __repr__(self) -> str:
        return f"Conversations(store={self.store!r}, provider={self.provider!r})"

    def session(
        self,
        session_id: str,
        *,
        lazy: bool = False,
        provider: Provider | None = None,
        **overrides: Any,
    ) -> Session:
        """A new :class:`Session` with these settings (``overrides`` win)."""
        settings = replace(self.settings, **overrides) if overrides else self.settings
        return Session(
            self.store,
            session_id,
            lazy=lazy,
            provider=provider or self.provider,
            max_messages=settings.max_messages,
            ttl=settings.ttl,
            system=settings.system,
            lock_timeout=settings.lock_timeout,
            on_error=settings.on_error,
            on_load_error=settings.on_load_error,
            max_tokens=settings.max_tokens,
            token_counter=settings.token_counter,
            save_unanswered=settings.save_unanswered,
            max_message_bytes=settings.max_message_bytes,
            max_turn_bytes=settings.max_turn_bytes,
            commit_grace=settings.commit_grace,
        )

    async def execute(self, session_id: str, role: Role, content: str) -> Message | None:
        """One whole turn in one call.

        A ``user`` message with a provider configured is sent, and the reply is
        returned (both are saved). Without a provider, or for another role, the
        message is only appended (one round trip, no load) and None is returned.
        """
        message = Message(role, content)
        if role == "user" and self.provider is not None:
            async with self.session(session_id) as session:
                return await session.send(message)
        async with self.session(session_id, lazy=True) as session:
            session.add(message)
        return None

    async def history(self, session_id: str) -> list[Message]:
        """The stored messages of a session (all of them, oldest first)."""
        return await self.store.load(check_session_id(session_id))

    async def delete(self, session_id: str) -> bool:
        return await self.store.delete(check_session_id(session_id))

    async def aclose(self) -> None:
        """Close the store and provider if owned; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owns:
            try:
                if self.provider is not None:
                    await self.provider.aclose()
            finally:
                await self.store.aclose()
