"""A provider that replays scripted replies, for tests, demos and offline work.

It needs no network and no key, yet exercises the real machinery: each reply
is rendered as the bytes of an OpenAI Chat Completions stream (text chunks,
tool-call fragments, finish reason, usage, ``[DONE]``) and decoded by the
same :class:`SSEDecoder` and chunk parser as :class:`OpenAIProvider`.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .._exceptions import ProviderError
from .._messages import Message
from .._resources import AsyncResource
from ._base import ReplyDone, StreamEvent, TextDelta
from ._openai_wire import OpenAIChunkParser
from ._sse import SSEDecoder

if TYPE_CHECKING:
    from .._tools import Tool

__all__ = ["ScriptedReply", "ScriptedCall", "ScriptedProvider", "echo_reply"]

ScriptedReply = str | Message | Callable[[Sequence[Message]], str | Message] | Exception
"""One scripted reply: text, a full assistant message (e.g. with tool calls), a
function of the history, or an exception to raise instead of replying."""

_WORD = re.compile(r"\s*\S+\s*|\s+")


@dataclass(frozen=True, slots=True)
class ScriptedCall:
    """What one ``stream_reply`` call received (``tools``: their names, in order)."""

    messages: tuple[Message, ...]
    system: str | None
    tools: tuple[str, ...] = ()


def _quote(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def echo_reply(messages: Sequence[Message]) -> str:
    """The default reply: repeats the user, and what they said before.

    It makes memory visible in a demo: turn 2 quotes turn 1.
    """
    said = [m.text for m in messages if m.role == "user"]
    if not said:
        return "Hello! Tell me something and I will remember it."
    last = _quote(said[-1])
    # No second full stop after a quote that already ends a sentence.
    reply = f'You said: "{last}"' + ("" if last.endswith((".", "!", "?", "…")) else ".")
    if len(said) == 1:
        return reply + " That is the first thing you told me in this conversation."
    earlier = len(said) - 1
    plural = "message" if earlier == 1 else "messages"
    return (
        f'{reply} Before that you said: "{_quote(said[-2])}" '
        f"({earlier} earlier {plural} from you in this conversation)."
    )


class ScriptedProvider(AsyncResource):
    """Replays replies as a token-by-token stream, without network.

    Args:
        replies: Used in order, one per ``stream_reply`` call. A ``str`` is
            the reply text; a :class:`Message` may add tool calls and
            metadata; a callable receives the messages and returns either;
            an exception instance is raised instead of replying. With no
            replies, every call gets :func:`echo_reply`. When given replies
            run out, ``stream_reply`` raises :class:`ProviderError`.
        delay: Seconds to wait before each text chunk, so a demo visibly streams.
        chunk: How text is split: ``"word"`` (a word with its surrounding
            whitespace), ``"char"``, or ``"all"`` (one chunk).
        model: Reported as the ``model`` metadata of each reply.

    ``calls`` records the messages and system prompt of every call, so tests
    can check what a session sent.
    """

    def __init__(
        self,
        replies: Iterable[ScriptedReply] = (),
        *,
        delay: float = 0.0,
        chunk: Literal["word", "char", "all"] = "word",
        model: str = "scripted",
    ) -> None:
        if chunk not in ("word", "char", "all"):
            raise ValueError(f"chunk must be 'word', 'char' or 'all', got {chunk!r}")
        if delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay}")
        self._replies = list(replies)
        self.delay = delay
        self.chunk = chunk
        self.model = model
        self.calls: list[ScriptedCall] = []
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(replies={len(self._replies)}, "
            f"delay={self.delay!r}, chunk={self.chunk!r})"
        )

    async def aclose(self) -> None:
        """Mark the provider closed. Safe to call twice."""
        self._closed = True

    def _next_reply(self, messages: Sequence[Message]) -> Message:
        if not self._replies:
            return Message.assistant(echo_reply(messages))
        index = len(self.calls) - 1
        if index >= len(self._replies):
            raise ProviderError(
                f"ScriptedProvider has no reply left: {len(self._replies)} were scripted"
            )
        reply = self._replies[index]
        if isinstance(reply, Exception):
            raise reply
        if callable(reply):
            reply = reply(messages)
        return Message.assistant(reply) if isinstance(reply, str) else reply

    def _pieces(self, text: str) -> list[str]:
        if not text:
            return []
        if self.chunk == "char":
            return list(text)
        if self.chunk == "all":
            return [text]
        return _WORD.findall(text)

    def _render(self, reply: Message, prompt_words: int) -> Iterable[tuple[bytes, bool]]:
        """The reply as OpenAI stream bytes: (chunk, carries text) pairs."""
        call_id = f"scripted-{len(self.calls)}"

        def frame(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            chunk = {
                "id": call_id,
                "object": "chat.completion.chunk",
                "model": self.model,
                "choices": choices,
                **extra,
            }
            return b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"

        def delta(**fields: Any) -> bytes:
            return frame([{"index": 0, "delta": fields, "finish_reason": None}])

        yield delta(role="assistant", content=""), False
        pieces = self._pieces(reply.text)
        for piece in pieces:
            yield delta(content=piece), True
        for index, call in enumerate(reply.tool_calls):
            head = {"index": index, "id": call.id, "type": "function"}
            yield (
                delta(tool_calls=[{**head, "function": {"name": call.name, "arguments": ""}}]),
                False,
            )
            half = len(call.arguments) // 2
            for part in (call.arguments[:half], call.arguments[half:]):
                fragment = {"index": index, "function": {"arguments": part}}
                yield delta(tool_calls=[fragment]), False
        finish = "tool_calls" if reply.tool_calls else "stop"
        yield frame([{"index": 0, "delta": {}, "finish_reason": finish}]), False
        usage = {
            "prompt_tokens": prompt_words,
            "completion_tokens": len(pieces) + len(reply.tool_calls),
            "total_tokens": prompt_words + len(pieces) + len(reply.tool_calls),
        }
        yield frame([], usage=usage), False
        yield b"data: [DONE]\n\n", False

    async def stream_reply(
        self,
        messages: Sequence[Message],
        *,
        system: str | None = None,
        tools: Sequence[Tool] | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """Stream the next scripted reply (``tools`` are only recorded).

        Raises:
            ProviderError: the provider was closed, or the scripted replies ran out.
            Exception: a scripted exception instance, raised as given.
        """
        if self._closed:
            raise ProviderError("ScriptedProvider is closed")
        self.calls.append(ScriptedCall(tuple(messages), system, tuple(t.name for t in tools or ())))
        reply = self._next_reply(messages)
        prompt_words = sum(len(m.text.split()) for m in messages)
        if system:
            prompt_words += len(system.split())
        decoder = SSEDecoder()
        parser = OpenAIChunkParser(provider="scripted")
        for raw, has_text in self._render(reply, prompt_words):
            if has_text:
                await asyncio.sleep(self.delay)  # sleep(0) still lets other tasks run
            for event in decoder.feed(raw):
                text = parser.feed(event)
                if text:
                    yield TextDelta(text)
        if not parser.done:  # pragma: no cover - the renderer always ends with [DONE]
            raise ProviderError("scripted stream ended without [DONE]")
        message = parser.message()
        if reply.metadata:
            message = Message.assistant(
                message.content,
                tool_calls=message.tool_calls,
                **{**message.metadata, **reply.metadata},
            )
        yield ReplyDone(message)
