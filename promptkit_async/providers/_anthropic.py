"""AnthropicProvider: streams replies from the Anthropic Messages API over httpx.

The wire format (request conversion, event parsing) is in ``_anthropic_wire.py``;
this module sends it and turns the stream into :class:`TextDelta` / :class:`ReplyDone`.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any, Final

from .._exceptions import ProviderStreamError
from ._anthropic_wire import ANTHROPIC_VERSION, AnthropicEventParser, to_anthropic_messages
from ._base import ReplyDone, StreamEvent, TextDelta
from ._http import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_RETRY_WAIT,
    DEFAULT_REPLY_TIMEOUT,
    HTTPProvider,
)
from ._tool_specs import anthropic_tools

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Mapping, Sequence

    import httpx

    from .._messages import Message
    from .._tools import Tool

__all__ = ["DEFAULT_ANTHROPIC_BASE_URL", "AnthropicProvider"]

DEFAULT_ANTHROPIC_BASE_URL: Final = "https://api.anthropic.com"


class AnthropicProvider(HTTPProvider):
    """Streams replies from the Anthropic Messages API.

    Args:
        model: The model name, e.g. ``"claude-sonnet-4-5"``.
        api_key: Sent as ``x-api-key``. Defaults to ``ANTHROPIC_API_KEY``.
        base_url: The API root without ``/v1``. Defaults to
            ``ANTHROPIC_BASE_URL``, then ``https://api.anthropic.com``.
        max_tokens: The reply length limit the API requires on every request.
        client: An ``httpx.AsyncClient`` to borrow. It is not closed by
            :meth:`aclose`; without it the provider creates and owns one.
        params: Extra request body fields: ``temperature``, ``tools``,
            ``tool_choice``, ``stop_sequences``, ... (``stream`` is always true).
        headers: Extra request headers, e.g. ``anthropic-beta``.
        connect_timeout: Seconds to establish a connection (default 10).
        read_timeout: Longest silence between two chunks of the reply, in
            seconds (default 120). For a borrowed client, unset timeouts
            keep the client's own.
        max_retries: How many times to retry 408/409/429/5xx (including 529
            "overloaded") replies and connection failures; only before any
            reply byte was yielded.
        max_retry_wait: A ``Retry-After`` longer than this many seconds is
            raised at once as :class:`RateLimited` instead of waited out.
        retry_backoff: The first backoff in seconds, doubled per retry, with
            full jitter (capped at 8 s).
        reply_timeout: Longest a whole reply may take, in seconds, from the
            request to its last byte (default 600; None: no limit). A reply
            still streaming then is abandoned with ProviderStreamError.
        max_body_bytes: Largest reply body read, decompressed (default 64 MiB);
            past it the reply is abandoned with ProviderStreamError.
    """

    _provider_name = "anthropic"

    def __init__(
        self,
        model: str,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        max_tokens: int = 1024,
        client: httpx.AsyncClient | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT,
        retry_backoff: float = 0.5,
        reply_timeout: float | None = DEFAULT_REPLY_TIMEOUT,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        # The environment is read here and nowhere else.
        if api_key is None:
            api_key = os.environ.get("ANTHROPIC_API_KEY")
        if base_url is None:
            base_url = os.environ.get("ANTHROPIC_BASE_URL") or DEFAULT_ANTHROPIC_BASE_URL
        super().__init__(
            api_key=api_key,
            base_url=base_url,
            client=client,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_retries=max_retries,
            max_retry_wait=max_retry_wait,
            retry_backoff=retry_backoff,
            reply_timeout=reply_timeout,
            max_body_bytes=max_body_bytes,
        )
        self.model = model
        self.max_tokens = max_tokens
        self.params: dict[str, Any] = dict(params or {})
        self._headers = {
            "Accept": "text/event-stream",
            "anthropic-version": ANTHROPIC_VERSION,
            **(headers or {}),
        }

    def build_body(
        self,
        messages: Sequence[Message],
        system: str | None,
        tools: Sequence[Tool] | None = None,
    ) -> dict[str, Any]:
        """The JSON request body for one reply (useful for logging or debugging).

        ``tools`` replace any ``tools`` given in ``params`` for this request.
        """
        merged_system, wire = to_anthropic_messages(messages, system)
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            **self.params,
            "messages": wire,
            "stream": True,
        }
        if merged_system:
            body["system"] = merged_system
        if tools:
            body["tools"] = anthropic_tools(tools)
        return body

    async def stream_reply(
        self,
        messages: Sequence[Message],
        *,
        system: str | None = None,
        tools: Sequence[Tool] | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """Stream one assistant reply to ``messages``.

        Yields a :class:`TextDelta` per text delta as it arrives, then one
        :class:`ReplyDone` whose message carries ``tool_calls`` (from
        ``tool_use`` blocks) and metadata ``finish_reason`` (the API's
        ``stop_reason``), ``usage``, ``model``, ``provider`` and ``id``.
        Thinking (extended thinking) is not yielded as text: the message keeps
        it as :class:`ThinkingPart` s with their signatures, ahead of its text,
        so a later request sends it back as the API requires in a tool loop.

        Raises:
            ProviderAuthError: HTTP 401 / 403.
            RateLimited: HTTP 429 after the allowed retries.
            ProviderStatusError: any other non-2xx reply.
            ProviderUnavailable: connection failure or timeout.
            ProviderStreamError: an ``error`` event, malformed data, or no
                ``message_stop`` before the connection ended.
            ProviderError: the provider was closed.
        """
        headers = dict(self._headers)
        if self._api_key is not None:
            headers["x-api-key"] = self._api_key.reveal()
        parser = AnthropicEventParser(provider=self._provider_name)
        body = self.build_body(messages, system, tools)
        url = f"{self.base_url}/v1/messages"
        async with contextlib.aclosing(self._stream_events(url, body, headers)) as events:
            async for event in events:
                text = parser.feed(event)
                if text:
                    yield TextDelta(text)
                if parser.done:
                    break
        if not parser.done:
            raise ProviderStreamError(f"{self._provider_name}: stream ended without message_stop")
        yield ReplyDone(parser.message())
