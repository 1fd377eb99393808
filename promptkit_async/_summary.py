"""A rolling summary of what left the window: the record, the protocol, the LLM one.

A conversation with a summarizer is sent in three tiers: the system prompt,
the summary of everything older than the window, then the window. The
summary records the id of the newest message it covers, so that the window
(the kept messages after that one) and the summary never overlap and never
leave a gap, whatever retention drops later. Summaries are written in the
background after a turn's commit (see ``_summaries``), never by the turn.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ._codec import id_number
from ._exceptions import ProviderStreamError
from ._messages import Message
from .providers._base import ReplyDone, TextDelta

if TYPE_CHECKING:
    from datetime import datetime

    from .providers._base import Provider

__all__ = [
    "DEFAULT_SUMMARY_PROMPT",
    "LLMSummarizer",
    "Summarizer",
    "SummarizerLike",
    "Summary",
    "as_summarizer",
    "with_summary",
]


@dataclass(frozen=True, slots=True)
class Summary:
    """A conversation's rolling summary, as its store keeps it.

    Attributes:
        text: the summary.
        upto: the id of the newest message it covers: the window is the kept
            messages after this one.
        covered: how many messages it covers in all.
        version: a token new with each write; a write names the version it
            extends, and loses to any other that got there first.
        updated_at: when it was written (None before it is stored).
    """

    text: str
    upto: str
    covered: int
    version: str
    updated_at: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise TypeError(f"a summary's text must be a str, got {type(self.text).__name__}")
        if not isinstance(self.upto, str) or id_number(self.upto) is None:
            raise ValueError(f"a summary covers up to a stored message's id, got {self.upto!r}")
        if type(self.covered) is not int or self.covered < 1:
            raise ValueError(f"a summary covers at least one message, got {self.covered!r}")
        if not isinstance(self.version, str) or not self.version:
            raise ValueError(f"a summary's version must be a non-empty str, got {self.version!r}")

    def to_dict(self) -> dict[str, object]:
        """The summary as JSON values (``updated_at`` in ISO 8601, or None)."""
        return {
            "text": self.text,
            "upto": self.upto,
            "covered": self.covered,
            "version": self.version,
            "updated_at": None if self.updated_at is None else self.updated_at.isoformat(),
        }

    @property
    def upto_number(self) -> int:
        """The position of :attr:`upto` in the conversation (what the window starts after)."""
        number = id_number(self.upto)
        assert number is not None  # checked at construction
        return number


@runtime_checkable
class Summarizer(Protocol):
    """Folds messages into a summary: the previous one (None at first) and what follows it.

    It runs in the background, after a turn's commit; it may take its time,
    raise (it is logged and retried later) or hang (it is cancelled after the
    session's ``summary_timeout``): no turn waits for it.
    """

    async def summarize(self, previous: str | None, messages: Sequence[Message]) -> str: ...


#: What ``Session(summarizer=...)`` accepts: a :class:`Summarizer`, or a plain
#: async function with the same signature.
SummarizerLike = Summarizer | Callable[[str | None, Sequence[Message]], Awaitable[str]]


def as_summarizer(value: object) -> Callable[[str | None, Sequence[Message]], Awaitable[str]]:
    """The coroutine function to call for ``value`` (a Summarizer or an async function).

    Raises:
        TypeError: neither.
    """
    summarize = getattr(value, "summarize", None)
    if summarize is not None and callable(summarize):
        return summarize  # type: ignore[no-any-return]
    if callable(value) and (
        inspect.iscoroutinefunction(value)
        or inspect.iscoroutinefunction(getattr(value, "__call__", None))  # noqa: B004
    ):
        return value
    raise TypeError(
        "summarizer must have an async summarize(previous, messages) method, or be an "
        f"async function of (previous, messages); got {value!r}"
    )


#: The instructions :class:`LLMSummarizer` sends (``{max_words}`` is filled in).
DEFAULT_SUMMARY_PROMPT = (
    "You maintain the running summary of a conversation between a user and an "
    "assistant. You are given the summary so far (if any) and the messages that "
    "followed it. Write the new summary: one text that replaces the old one and "
    "covers both. Keep the facts, names, numbers, decisions, open questions and "
    "the user's preferences that later turns may need; drop greetings and "
    "repetition. Write in the third person, in the conversation's language, in at "
    "most {max_words} words. Reply with the summary only."
)


class LLMSummarizer:
    """A :class:`Summarizer` that asks a model (any provider) to fold messages in.

    Args:
        provider: the model to ask (a small, cheap one does well).
        prompt: the instructions, sent as the system prompt; ``{max_words}``
            in it is replaced by about three quarters of ``max_tokens``.
        max_tokens: the cap on the summary's length, in estimated tokens
            (about 4 characters each): the prompt asks for less, and a reply
            that runs past it is cut there and its stream closed.

    The request is one user message: the previous summary (if any) and the
    messages to fold, one per line as ``role: text`` (tool calls and results
    as short lines, media as their kind), so that any provider accepts it
    whatever the conversation held.
    """

    __slots__ = ("max_tokens", "prompt", "provider")

    def __init__(
        self,
        provider: Provider,
        *,
        prompt: str = DEFAULT_SUMMARY_PROMPT,
        max_tokens: int = 400,
    ) -> None:
        if type(max_tokens) is not int or max_tokens < 16:
            raise ValueError(f"max_tokens must be an int >= 16, got {max_tokens!r}")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("prompt must be a non-empty str")
        self.provider = provider
        self.prompt = prompt
        self.max_tokens = max_tokens

    def __repr__(self) -> str:
        return f"LLMSummarizer({self.provider!r}, max_tokens={self.max_tokens})"

    def request(self, previous: str | None, messages: Sequence[Message]) -> tuple[str, Message]:
        """The system prompt and the one user message sent for a summary."""
        system = self.prompt.replace("{max_words}", str(max(8, self.max_tokens * 3 // 4)))
        lines = [_line(m) for m in messages]
        body = "Summary so far:\n" + (previous if previous else "(none)")
        body += "\n\nMessages that followed:\n" + "\n".join(lines)
        return system, Message.user(body)

    async def summarize(self, previous: str | None, messages: Sequence[Message]) -> str:
        system, question = self.request(previous, messages)
        limit = self.max_tokens * 4
        pieces: list[str] = []
        size = 0
        events = self.provider.stream_reply([question], system=system)
        done: Message | None = None
        try:
            async for event in events:
                if type(event) is TextDelta:
                    pieces.append(event.text)
                    size += len(event.text)
                    if size >= limit:
                        break
                elif type(event) is ReplyDone:
                    done = event.message
        finally:
            aclose: Any = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
        text = "".join(pieces) if pieces or done is None else done.text
        if done is None and size < limit:
            raise ProviderStreamError("the summary's stream ended without a complete reply")
        text = text[:limit].strip()
        if not text:
            raise ProviderStreamError("the model returned an empty summary")
        return text


def _line(message: Message) -> str:
    """One message as a line of the summary request."""
    parts: list[str] = []
    text = message.text
    if text:
        parts.append(text)
    if not isinstance(message.content, str):
        parts.extend(f"[{p.kind}]" for p in message.content if p.kind in ("image", "file", "audio"))
    parts.extend(f"[calls {call.name}({call.arguments})]" for call in message.tool_calls)
    role: str = message.role
    if role == "tool":
        role = "tool result" + (" (error)" if message.is_error else "")
    return f"{role}: " + " ".join(parts)


#: How the summary is introduced in the system prompt a model is sent.
_HEADING = "Summary of the earlier conversation (older messages are not repeated below):"


def with_summary(system: str | None, summary: Summary | None) -> str | None:
    """The system prompt sent with ``summary``: the user's first, then the summary.

    Every provider's format has one place for system instructions (Anthropic's
    ``system``, Gemini's ``systemInstruction``, the Responses API's
    ``instructions``, a first ``system`` message for Chat Completions and
    Ollama), so the summary goes there, after the user's prompt and before the
    window: the same on all five, and a prompt cache keyed on the user's
    prompt still matches its start.
    """
    if summary is None:
        return system
    block = f"{_HEADING}\n{summary.text}"
    return block if not system else f"{system}\n\n{block}"
