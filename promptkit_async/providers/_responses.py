"""OpenAIResponsesProvider: streams replies from the OpenAI Responses API over httpx.

The wire format (input items, event parsing) is in ``_responses_wire.py``;
this module sends it and turns the stream into :class:`TextDelta` / :class:`ReplyDone`.
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
from ._openai import DEFAULT_OPENAI_BASE_URL
from ._responses_wire import ResponsesEventParser, to_responses_input
from ._tool_specs import responses_tools

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Mapping, Sequence

    import httpx

    from .._messages import Message
    from .._tools import Tool

__all__ = ["OpenAIResponsesProvider"]

_ENCRYPTED_REASONING: Final = "reasoning.encrypted_content"


class OpenAIResponsesProvider(HTTPProvider):
    """Streams replies from the OpenAI Responses API (``POST /responses``).

    Requests are sent with ``store: false`` unless ``store=True``: OpenAI
    keeps neither the request nor the reply, and each request carries the
    whole window, because the history is ours (the session's store), not the
    provider's. Reasoning models' encrypted reasoning is asked for, kept in
    the reply's metadata (``openai_reasoning``) and sent back with the next
    request, so they keep their chain of thought across tool calls.

    Args:
        model: The model name, e.g. ``"gpt-5.1"`` or ``"gpt-4o-mini"``.
        api_key: Sent as ``Authorization: Bearer``. Defaults to
            ``OPENAI_API_KEY``; pass ``""`` to send none.
        base_url: The API root, up to and including ``/v1``. Defaults to
            ``OPENAI_BASE_URL``, then ``https://api.openai.com/v1``.
        store: Let OpenAI store the responses (``store: true``).
        client: An ``httpx.AsyncClient`` to borrow. It is not closed by
            :meth:`aclose`; without it the provider creates and owns one.
        organization: Sent as ``OpenAI-Organization``.
        params: Extra request body fields: ``max_output_tokens``,
            ``reasoning``, ``tools``, ``tool_choice``, ``include``, ...
            (``stream`` is always true).
        headers: Extra request headers.
        connect_timeout: Seconds to establish a connection (default 10).
        read_timeout: Longest silence between two chunks of the reply, in
            seconds (default 120). For a borrowed client, unset timeouts
            keep the client's own.
        max_retries: How many times to retry 408/409/429/5xx replies and
            connection failures; only before any reply byte was yielded, and
            never a 429 that says the quota is exhausted.
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

    _provider_name = "openai-responses"

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        store: bool = False,
        client: httpx.AsyncClient | None = None,
        organization: str | None = None,
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
        self.store = store
        self.params: dict[str, Any] = dict(params or {})
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
            "input": to_responses_input(messages),
            "stream": True,
            "store": self.store,
        }
        if system:
            body["instructions"] = system
        if not self.store:
            # Nothing is kept server-side, so reasoning must travel with the history.
            include = list(self.params.get("include") or [])
            if _ENCRYPTED_REASONING not in include:
                include.append(_ENCRYPTED_REASONING)
            body["include"] = include
        if tools:
            body["tools"] = responses_tools(tools)
        return body

    async def stream_reply(
        self,
        messages: Sequence[Message],
        *,
        system: str | None = None,
        tools: Sequence[Tool] | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """Stream one assistant reply to ``messages``.

        Yields a :class:`TextDelta` per piece of text (or refusal) as it
        arrives, then one :class:`ReplyDone` whose message carries
        ``tool_calls`` and metadata ``finish_reason`` (``"stop"``,
        ``"tool_calls"``, or the reason of an incomplete response such as
        ``"max_output_tokens"``), ``usage``, ``model``, ``provider``, ``id``,
        ``refusal`` (when the model refused) and ``openai_reasoning``.

        Raises:
            ProviderAuthError: HTTP 401 / 403.
            RateLimited: HTTP 429 after the allowed retries, or at once when
                the quota is exhausted.
            ProviderStatusError: any other non-2xx reply.
            ProviderUnavailable: connection failure or timeout.
            ProviderStreamError: an ``error`` or ``response.failed`` event
                (with the provider's message and code), malformed data, or
                no terminal event before the connection ended.
            ProviderError: the provider was closed.
        """
        headers = dict(self._headers)
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key.reveal()}"
        parser = ResponsesEventParser(provider=self._provider_name)
        body = self.build_body(messages, system, tools)
        url = f"{self.base_url}/responses"
        async with contextlib.aclosing(self._stream_events(url, body, headers)) as events:
            async for event in events:
                text = parser.feed(event)
                if text:
                    yield TextDelta(text)
                if parser.done:
                    break
        if not parser.done:
            raise ProviderStreamError(
                f"{self._provider_name}: stream ended without response.completed"
            )
        yield ReplyDone(parser.message())
