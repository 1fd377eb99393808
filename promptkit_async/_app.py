"""Conversations: store, provider and session settings held once for an application.

A web handler should not repeat five arguments per request; it holds one
``Conversations`` (created at start-up, closed at shutdown) and opens sessions
from it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._config import check_session_id
from ._messages import Message
from ._plan import plan_for
from ._resources import AsyncResource
from ._session import Session
from ._settings import SessionSettings
from ._summaries import close_summaries

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._settings import SessionOptions
    from ._types import Role
    from .providers._base import Provider
    from .stores._contract import Store

__all__ = ["Conversations"]


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
        settings: a :class:`SessionSettings` (default: all defaults).
        **options: any :class:`SessionSettings` field, applied over ``settings``.

    Raises:
        TypeError, ValueError: an unknown option or a bad value (at once, not
            on the first request); a store that is not a Store.
    """

    def __init__(
        self,
        store: Store,
        *,
        provider: Provider | None = None,
        owns: bool = True,
        settings: SessionSettings | None = None,
        **options: Unpack[SessionOptions],
    ) -> None:
        base = SessionSettings() if settings is None else settings
        if not isinstance(base, SessionSettings):
            raise TypeError(f"settings must be a SessionSettings, got {type(base).__name__}")
        plan_for(store)  # a store that is not one fails here, not on every request
        self.store = store
        self.provider = provider
        self.settings: SessionSettings = base.replace(**options) if options else base
        self._owns = owns
        self._closed = False

    def __repr__(self) -> str:
        return f"Conversations(store={self.store!r}, provider={self.provider!r})"

    def session(
        self,
        session_id: str,
        *,
        provider: Provider | None = None,
        **overrides: Unpack[SessionOptions],
    ) -> Session:
        """A new :class:`Session` with these settings (``overrides`` win)."""
        return Session(
            self.store,
            session_id,
            provider=provider or self.provider,
            settings=self.settings,
            **overrides,
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
        """Every message the store keeps for the session, oldest first.

        That is the whole conversation up to the store's ``max_stored``
        (10,000 by default), not the window a turn sends; page through a long
        one with ``store.load(session_id, limit, before=message.id)``.
        """
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
                # The background summaries first: they may be using the provider.
                await close_summaries(self.store)
                if self.provider is not None:
                    await self.provider.aclose()
            finally:
                await self.store.aclose()
