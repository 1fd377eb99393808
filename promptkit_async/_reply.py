"""A session's call to its provider, and the ReplyStream it returns.

``session.stream(text)`` sends the window plus the new message, yields the
reply text as it arrives, and stages the user message and the assembled reply
together once the reply is complete: a failed or abandoned call stages
nothing (unless ``save_unanswered``), so a turn is written whole or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from . import _telemetry
from ._compact import compacted
from ._exceptions import MessageTooLarge, ProviderStreamError
from ._messages import Message
from ._resources import AsyncResource
from ._trim import trim
from .providers._base import ReplyDone, TextDelta

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator

    from ._session import Session
    from .providers._base import Provider

__all__ = ["ReplyStream", "RunOutcome", "RunStop", "aclose_events", "run_reply"]

#: How a ``session.run()`` ended: the model answered without calling a tool,
#: or the step limit was reached (the last tools' results are staged, unanswered).
RunStop = Literal["answered", "max_steps"]


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What one ``session.run()`` did (``ReplyStream.outcome`` once it is read).

    Attributes:
        stop: ``"answered"`` or ``"max_steps"``.
        steps: how many model calls were made.
        messages: what the run staged, in order: the user message, each
            assistant message with its tool calls and their results, and the
            last reply.
    """

    stop: RunStop
    steps: int
    messages: tuple[Message, ...]


async def run_reply(
    session: Session, provider: Provider, user: Message, *, again: bool = False
) -> AsyncGenerator[str | Message, None]:
    """Yield the reply's text pieces, then the assembled assistant message.

    ``again``: ``user`` is already the last message of the history (a
    regenerated reply): it is neither sent twice nor staged.
    """
    settings = session.settings
    history = await session.load()
    if again:
        history = history[:-1]
    staged = session._check_turn_size(() if again else (user,))  # checked before sending
    # The reply is held to the same limits while it streams, not only once it
    # is whole: a reply past them is abandoned (its response closed) at once.
    budget = min(settings.max_message_bytes, settings.max_turn_bytes - staged)
    pending = list(session.pending)
    window = trim(
        compacted([*history, *pending, user], settings),
        session.window_limit,
        max_tokens=session.window_budget,
        count_tokens=settings.token_counter,
    )
    if not window or window[-1] is not user:  # a token budget smaller than the question
        window = _minimal_window([*history, *pending], user)
    reply: Message | None = None
    received = 0
    events = provider.stream_reply(window, system=session.system_prompt)
    telemetry = _telemetry.active
    if telemetry is not None:
        events = telemetry.provider_call(session, provider, window, (), events)
    try:
        async for event in events:
            if type(event) is TextDelta:
                text = event.text
                received += len(text) if text.isascii() else len(text.encode("utf-8", "replace"))
                if received > budget:
                    raise MessageTooLarge(
                        f"the reply passed {budget} bytes (max_message_bytes="
                        f"{settings.max_message_bytes}, max_turn_bytes={settings.max_turn_bytes}) "
                        "and was abandoned",
                        size=received,
                        limit=budget,
                    )
                yield text
            elif type(event) is ReplyDone:
                reply = event.message
    except GeneratorExit:
        raise  # the caller stopped reading: not a failure, nothing is staged
    except BaseException:
        if settings.save_unanswered and not again:
            session.add(user)
        raise
    finally:
        await aclose_events(events)
    if reply is None:
        if settings.save_unanswered and not again:
            session.add(user)
        raise ProviderStreamError("the provider stream ended without a complete reply")
    if again:
        session.add(reply)
    else:
        session.add(user, reply)
    yield reply


def _minimal_window(before: list[Message], user: Message) -> list[Message]:
    """The least an API accepts: the new message, with its tool call if it is a result."""
    if user.role != "tool":
        return [user]
    for i in range(len(before) - 1, -1, -1):
        if before[i].role == "assistant" and before[i].tool_calls:
            return [*before[i:], user]  # the call and every result given so far
    return [user]


async def aclose_events(events: AsyncIterator[Any]) -> None:
    # Provider.stream_reply is declared as an AsyncIterator; the bundled ones are
    # async generators, which must be closed for their HTTP response to close.
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()


class ReplyStream(AsyncResource):
    """The reply of one ``session.stream()`` or ``session.run()`` call: an async iterator
    of text pieces.

    After it is exhausted, :attr:`message` holds the assembled assistant message
    (for a run, the last one), and for a run :attr:`outcome` says how it ended
    and what it staged.
    """

    __slots__ = ("_gen", "finished", "message", "outcome")

    def __init__(self, gen: AsyncGenerator[str | Message | RunOutcome, None]) -> None:
        self._gen = gen
        self.message: Message | None = None
        self.outcome: RunOutcome | None = None
        self.finished = False

    def __aiter__(self) -> ReplyStream:
        return self

    async def __anext__(self) -> str:
        if self.finished:
            raise StopAsyncIteration
        try:
            item = await self._gen.__anext__()
            if type(item) is RunOutcome:
                self.outcome = item
                item = await self._gen.__anext__()
        except BaseException:
            self.finished = True
            raise
        if isinstance(item, Message):
            self.message = item
            self.finished = True
            await self._gen.aclose()
            raise StopAsyncIteration
        assert type(item) is str
        return item

    async def aclose(self) -> None:
        """Stop the reply early and close the HTTP response; nothing is staged."""
        self.finished = True
        await self._gen.aclose()

    async def text(self) -> str:
        """Consume the rest of the stream and return the whole reply text."""
        parts = [piece async for piece in self]
        return "".join(parts)
