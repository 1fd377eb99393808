"""OpenAIProvider: streams replies from the Chat Completions API over httpx.

The wire format (request body, chunk parsing) is in ``_openai_wire.py``; this
module sends it and turns the stream into :class:`TextDelta` / :class:`ReplyDone`.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any, Final

from .._exceptions import ProviderStreamError
from ._base import ReplyDone, StreamEvent, TextDelta
from ._http import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_RETRY_WAIT,
    DEFAULT_REPLY_TIMEOUT,
    HTTPProvider,
)
from ._openai_wire import OpenAIChunkParser, to_openai_messages
from ._tool_specs import openai_tools

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Mapping, Sequence

    import httpx

    from .._messages import Message
    from .._tools import Tool

__all__ = ["DEFAULT_OPENAI_BASE_URL", "OpenAIProvider"]

DEFAULT_OPENAI_BASE_URL: Final = "https://api.openai.com/v1"


class OpenAIProvider(HTTPProvider):
    """Streams replies from the Chat Completions API or any compatible server.

    Args:
        model: The model name sent with each request, e.g. ``"gpt-4o-mini"``
            or ``"llama3.2"`` for Ollama.
        api_key: Sent as ``Authorization: Bearer``. Defaults to
            ``OPENAI_API_KEY``; with neither, no header is sent (local servers
            need none). Pass ``""`` to send none even if the variable is set.
        base_url: The API root, up to and including ``/v1``. Defaults to
            ``OPENAI_BASE_URL``, then ``https://api.openai.com/v1``.
        client: An ``httpx.AsyncClient`` to borrow. It is not closed by
            :meth:`aclose`; without it the provider creates and owns one.
        organization: Sent as ``OpenAI-Organization``.
        params: Extra request body fields: ``temperature``, ``max_tokens``,
            ``tools``, ``tool_choice``, ... (``stream`` is always true).
        headers: Extra request headers.
        include_usage: Ask for the final usage chunk (``stream_options``).
            Turn off for old servers that reject the field.
        connect_timeout: Seconds to establish a connection (default 10).
        read_timeout: Longest silence between two chunks of the reply, in
            seconds (default 120). For a borrowed client, unset timeouts
            keep the client's own.
        max_retries: How many times to retry 408/409/429/5xx replies and
            connection failures; only before any reply byte was yielded.
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

    _provider_name = "openai"

    def __init__(
        self,
        model: str,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        organization: str | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        include_usage: bool = True,
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
            api_key = os.environ.get("OPENAI_API_KEY")
        if base_url is None:
            base_url = os.environ.get("OPENAI_BASE_URL") or DEFAULT_OPENAI_BASE_URL
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
        self.params: dict[str, Any] = dict(params or {})
        self.include_usage = include_usage
        self._headers = {"Accept": "text/event-stream", **(headers or {})}
        if organization:
            self._headers["OpenAI-Organization"] = organization

    def build_body(
        self,
        messages: Sequence[Message],
        system: str | None,
        tools: Sequence[Tool] | None = None,
    ) -> dict[str, Any]:
        """The JSON request body for one reply (useful for logging or debugging).

        ``tools`` replace any ``tools`` given in ``params`` for this request.
        """
        body: dict[str, Any] = {
            "model": self.model,
            **self.params,
            "messages": to_openai_messages(messages, system),
            "stream": True,
        }
        if self.include_usage and "stream_options" not in self.params:
            body["stream_options"] = {"include_usage": True}
        if tools:
            body["tools"] = openai_tools(tools)
        return body

    async def stream_reply(
        self,
        messages: Sequence[Message],
        *,
        system: str | None = None,
        tools: Sequence[Tool] | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """Stream one assistant reply to ``messages``.

        Yields a :class:`TextDelta` per piece of text as it arrives, then one
        :class:`ReplyDone` whose message carries ``tool_calls`` and metadata
        ``finish_reason``, ``usage``, ``model``, ``provider`` and ``id``.

        Raises:
            ProviderAuthError: HTTP 401 / 403.
            RateLimited: HTTP 429 after the allowed retries.
            ProviderStatusError: any other non-2xx reply.
            ProviderUnavailable: connection failure or timeout.
            ProviderStreamError: an error event mid-stream, malformed data, or
                no ``[DONE]`` before the connection ended.
            ProviderError: the provider was closed.
        """
        headers = dict(self._headers)
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key.reveal()}"
        parser = OpenAIChunkParser(provider=self._provider_name)
        body = self.build_body(messages, system, tools)
        url = f"{self.base_url}/chat/completions"
        async with contextlib.aclosing(self._stream_events(url, body, headers)) as events:
            async for event in events:
                text = parser.feed(event)
                if text:
                    yield TextDelta(text)
                if parser.done:
                    break
        if not parser.done:
            raise ProviderStreamError(f"{self._provider_name}: stream ended without [DONE]")
        yield ReplyDone(parser.message())
