"""The hooks through which a turn reports to tracing and metrics: off unless turned on.

Nothing here imports OpenTelemetry. The hooks are protocols, implemented by
:mod:`promptkit_async.otel`, and :data:`active` is None until
:func:`promptkit_async.otel.instrument` sets it. Each hook point in the core
reads that one attribute (or the session's own trace, None when off), so a turn
with telemetry off pays an attribute check per hook point and nothing more.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Sequence

    from ._messages import Message, ToolCall
    from ._session import Session
    from ._tools import Tool
    from .providers._base import StreamEvent
    from .stores._contract import Turn

__all__ = ["Telemetry", "TurnTrace", "active"]


class TurnTrace(Protocol):
    """The trace of one turn (one ``async with Session(...)`` block)."""

    async def load(self, call: Awaitable[list[Message]]) -> list[Message]:
        """Await the store's load of the history, traced."""
        ...

    async def commit(
        self, turn: Turn, call: Awaitable[Sequence[Message] | None]
    ) -> Sequence[Message] | None:
        """Await the store's commit of ``turn``, traced."""
        ...

    def end(self, error: BaseException | None) -> None:
        """The block is over (``error``: what it raised, or None); called exactly once."""
        ...


class Telemetry(Protocol):
    """What the core calls while telemetry is on."""

    def turn(self, session: Session) -> TurnTrace | None:
        """A block is entered: its trace (None: nothing to record for it)."""
        ...

    def provider_call(
        self,
        session: Session,
        provider: object,
        window: Sequence[Message],
        tools: Sequence[Tool],
        events: AsyncIterator[StreamEvent],
    ) -> AsyncIterator[StreamEvent]:
        """The provider's reply stream, traced (or ``events`` itself)."""
        ...

    async def tool(self, call: ToolCall, run: Awaitable[Message]) -> Message:
        """Await one tool call of a ``session.run()``, traced."""
        ...

    def retrying(self, provider: str, attempt: int, delay: float) -> None:
        """A provider request is about to be retried after ``delay`` seconds."""
        ...


#: The telemetry in force: None (off) until ``promptkit_async.otel.instrument()``.
active: Telemetry | None = None
