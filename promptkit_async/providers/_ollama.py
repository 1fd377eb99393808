"""OllamaProvider: streams replies from Ollama's native chat API over httpx.

The wire format (messages, line parsing) is in ``_ollama_wire.py``; this module
sends it, decodes the NDJSON reply and turns it into :class:`TextDelta` /
:class:`ReplyDone`.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit, urlunsplit

from .._exceptions import ProviderStreamError
from ._base import ReplyDone, StreamEvent, TextDelta
from ._http import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_RETRY_WAIT,
    DEFAULT_REPLY_TIMEOUT,
    HTTPProvider,
)
from ._ollama_wire import OllamaLineParser, to_ollama_messages
from ._tool_specs import ollama_tools

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Mapping, Sequence

    import httpx

    from .._messages import Message
    from .._tools import Tool

__all__ = ["DEFAULT_OLLAMA_BASE_URL", "OllamaProvider", "ollama_base_url"]

DEFAULT_OLLAMA_BASE_URL: Final = "http://localhost:11434"
_DEFAULT_PORT: Final = 11434
# Addresses a server binds to in order to listen everywhere; a client reaches it on loopback.
_ANY_ADDRESS: Final = {"0.0.0.0": "127.0.0.1", "::": "::1"}


def ollama_base_url(host: str) -> str:
    """A base URL from an ``OLLAMA_HOST``-style value, read the way Ollama reads it.

    ``host:port``, a bare ``host`` or ``:port`` need no scheme (``http`` and
    port 11434 are assumed, and host ``127.0.0.1``); with a scheme, the
    scheme's own default port applies. ``0.0.0.0`` (a server's "listen
    everywhere") is reached on loopback. A path is kept (a reverse proxy).

    Raises:
        ValueError: the port is not a number from 0 to 65535.
    """
    text = host.strip()
    has_scheme = "://" in text
    url = urlsplit(text if has_scheme else f"http://{text}")
    try:
        port = url.port
    except ValueError:
        raise ValueError(f"invalid Ollama host {host!r}: bad port") from None
    if port is None and not has_scheme:
        port = _DEFAULT_PORT
    hostname = url.hostname or "127.0.0.1"
    hostname = _ANY_ADDRESS.get(hostname, hostname)
    netloc = f"[{hostname}]" if ":" in hostname else hostname
    if port is not None:
        netloc += f":{port}"
    return urlunsplit((url.scheme, netloc, url.path.rstrip("/"), "", ""))


class OllamaProvider(HTTPProvider):
    """Streams replies from Ollama's native chat API (``POST /api/chat``, NDJSON).

    Args:
        model: The model name, e.g. ``"llama3.2"`` or ``"qwen3:8b"``.
        base_url: The server, e.g. ``http://localhost:11434``; ``host:port``
            without a scheme is accepted, as Ollama accepts it. Defaults to
            ``OLLAMA_HOST``, then ``http://localhost:11434``.
        api_key: Sent as ``Authorization: Bearer``, for a server behind an
            authenticating proxy or a hosted one. A local server needs none.
        client: An ``httpx.AsyncClient`` to borrow. It is not closed by
            :meth:`aclose`; without it the provider creates and owns one.
        params: Extra request body fields: ``options`` (``temperature``,
            ``num_ctx``, ...), ``tools``, ``format``, ``keep_alive``,
            ``think``, ... (``stream`` is always true).
        headers: Extra request headers.
        connect_timeout: Seconds to establish a connection (default 10).
        read_timeout: Longest silence between two chunks of the reply, in
            seconds (default 120; loading a large model counts as silence).
            For a borrowed client, unset timeouts keep the client's own.
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

    Raises:
        ValueError: ``base_url`` (or ``OLLAMA_HOST``) has a port that is not a number.
    """

    _provider_name = "ollama"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
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
        if base_url is None:
            base_url = os.environ.get("OLLAMA_HOST") or DEFAULT_OLLAMA_BASE_URL
        super().__init__(
            api_key=api_key,
            base_url=ollama_base_url(base_url),
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
        self._headers = {"Accept": "application/x-ndjson", **(headers or {})}

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
            "messages": to_ollama_messages(messages, system),
            "stream": True,
        }
        if tools:
            body["tools"] = ollama_tools(tools)
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
        ``finish_reason`` (Ollama's ``done_reason``), ``usage``
        (``prompt_eval_count`` and ``eval_count``), ``model`` and ``provider``.

        Raises:
            ProviderAuthError: HTTP 401 / 403.
            RateLimited: HTTP 429 after the allowed retries.
            ProviderStatusError: any other non-2xx reply (404: the model is
                not pulled).
            ProviderUnavailable: connection failure or timeout.
            ProviderStreamError: an ``error`` line mid-stream, a malformed
                line, or no ``done`` line before the connection ended.
            ProviderError: the provider was closed.
        """
        headers = dict(self._headers)
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key.reveal()}"
        parser = OllamaLineParser(provider=self._provider_name)
        body = self.build_body(messages, system, tools)
        url = f"{self.base_url}/api/chat"
        async with contextlib.aclosing(self._stream_lines(url, body, headers)) as lines:
            async for line in lines:
                text = parser.feed(line)
                if text:
                    yield TextDelta(text)
                if parser.done:
                    break
        if not parser.done:
            raise ProviderStreamError(f"{self._provider_name}: stream ended without a done line")
        yield ReplyDone(parser.message())
