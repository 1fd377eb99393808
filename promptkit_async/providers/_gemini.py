"""GeminiProvider: streams replies from the Gemini API over httpx.

The wire format (contents, chunk parsing) is in ``_gemini_wire.py``; this
module sends it and turns the stream into :class:`TextDelta` / :class:`ReplyDone`.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

from .._exceptions import ProviderStreamError
from ._base import ReplyDone, StreamEvent, TextDelta
from ._gemini_wire import GeminiChunkParser, to_gemini_contents
from ._http import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_RETRY_WAIT,
    DEFAULT_REPLY_TIMEOUT,
    HTTPProvider,
)
from ._tool_specs import gemini_tools

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Mapping, Sequence

    import httpx

    from .._messages import Message
    from .._tools import Tool

__all__ = ["DEFAULT_GEMINI_BASE_URL", "GeminiProvider"]

DEFAULT_GEMINI_BASE_URL: Final = "https://generativelanguage.googleapis.com"


class GeminiProvider(HTTPProvider):
    """Streams replies from the Gemini API (``streamGenerateContent``, as SSE).

    Args:
        model: The model name, e.g. ``"gemini-2.5-flash"`` (a ``models/`` or
            ``tunedModels/`` prefix is kept as given).
        api_key: Sent as ``x-goog-api-key``, never in the URL. Defaults to
            ``GEMINI_API_KEY``, then ``GOOGLE_API_KEY``.
        base_url: The API root, without a version:
            ``https://generativelanguage.googleapis.com`` by default.
        client: An ``httpx.AsyncClient`` to borrow. It is not closed by
            :meth:`aclose`; without it the provider creates and owns one.
        params: Extra request body fields: ``generationConfig``, ``tools``,
            ``toolConfig``, ``safetySettings``, ...
        headers: Extra request headers.
        connect_timeout: Seconds to establish a connection (default 10).
        read_timeout: Longest silence between two chunks of the reply, in
            seconds (default 120). For a borrowed client, unset timeouts
            keep the client's own.
        max_retries: How many times to retry 408/409/429/5xx replies and
            connection failures; only before any reply byte was yielded, and
            never a quota spent for the day or depleted prepaid credits.
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

    _provider_name = "gemini"

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
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
            api_key = os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY")
        super().__init__(
            api_key=api_key,
            base_url=base_url or DEFAULT_GEMINI_BASE_URL,
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
        self._headers = {"Accept": "text/event-stream", **(headers or {})}

    @property
    def url(self) -> str:
        """Where replies are streamed from."""
        path = self.model
        if not path.startswith(("models/", "tunedModels/")):
            path = f"models/{path}"
        return f"{self.base_url}/v1beta/{quote(path)}:streamGenerateContent?alt=sse"

    def build_body(
        self,
        messages: Sequence[Message],
        system: str | None,
        tools: Sequence[Tool] | None = None,
    ) -> dict[str, Any]:
        """The JSON request body for one reply (useful for logging or debugging).

        ``tools`` replace any ``tools`` given in ``params`` for this request.
        """
        instruction, contents = to_gemini_contents(messages, system)
        body: dict[str, Any] = {**self.params, "contents": contents}
        if instruction is not None:
            body["systemInstruction"] = instruction
        if tools:
            body["tools"] = gemini_tools(tools)
        return body

    async def stream_reply(
        self,
        messages: Sequence[Message],
        *,
        system: str | None = None,
        tools: Sequence[Tool] | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """Stream one assistant reply to ``messages``.

        Yields a :class:`TextDelta` per piece of text as it arrives (thought
        summaries are not reply text), then one :class:`ReplyDone` whose
        message carries ``tool_calls`` and metadata ``finish_reason``
        (``"stop"``, ``"length"``, or Gemini's own reason lowercased),
        ``usage`` (Gemini's ``usageMetadata``), ``model`` (``modelVersion``),
        ``provider``, ``id`` (``responseId``), ``blocked`` (when a safety
        filter or another reason cut the reply short, or blocked the prompt:
        the text that arrived is kept), and what the next request needs
        back (``gemini_signatures``, ``gemini_call_ids``).

        Raises:
            ProviderAuthError: HTTP 401 / 403.
            RateLimited: HTTP 429 after the allowed retries, or at once when
                the daily quota is spent.
            ProviderStatusError: any other non-2xx reply (402: prepaid
                credits depleted).
            ProviderUnavailable: connection failure or timeout.
            ProviderStreamError: an error chunk mid-stream, malformed data, or
                a stream that ended before any ``finishReason``.
            ProviderError: the provider was closed.
        """
        headers = dict(self._headers)
        if self._api_key is not None:
            headers["x-goog-api-key"] = self._api_key.reveal()
        parser = GeminiChunkParser(provider=self._provider_name)
        body = self.build_body(messages, system, tools)
        # No terminator on this stream: it is read to its end, which follows the
        # chunk carrying the finishReason (and the final usage).
        async with contextlib.aclosing(self._stream_events(self.url, body, headers)) as events:
            async for event in events:
                text = parser.feed(event)
                if text:
                    yield TextDelta(text)
        if not parser.done:
            raise ProviderStreamError(f"{self._provider_name}: stream ended without a finishReason")
        yield ReplyDone(parser.message())
