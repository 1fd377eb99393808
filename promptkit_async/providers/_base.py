"""The :class:`Provider` protocol and the events a provider stream yields.

A provider turns a neutral message list into one assistant reply, streamed.
It yields :class:`TextDelta` events as text arrives and ends with exactly one
:class:`ReplyDone` carrying the assembled assistant :class:`Message` (tool calls,
finish reason and usage in its metadata). A stream that ends without
``ReplyDone`` is a broken stream: the session writes nothing for that turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from .._messages import Message

__all__ = ["Provider", "ReplyDone", "StreamEvent", "TextDelta"]


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of reply text, yielded as soon as the provider sent it."""

    text: str


@dataclass(frozen=True, slots=True)
class ReplyDone:
    """The end of a reply: the assembled assistant message."""

    message: Message


StreamEvent = TextDelta | ReplyDone


@runtime_checkable
class Provider(Protocol):
    """What a session needs from a model provider.

    ``stream_reply`` is an async generator: the session closes it (``aclose``)
    when the caller stops early or is cancelled, which must close the HTTP
    response at once. For ``session.run()`` (the tool loop) it must also take
    ``tools=`` (a sequence of :class:`Tool`), as every bundled provider does.
    """

    def stream_reply(
        self, messages: Sequence[Message], *, system: str | None = None
    ) -> AsyncIterator[StreamEvent]: ...

    async def aclose(self) -> None: ...
