"""Shared httpx plumbing for the HTTP providers.

Owns everything the HTTP clients have in common: the ``httpx.AsyncClient``
(created and closed here, or borrowed and left open), timeouts, retries with
backoff (only before the first byte of a reply, and never for an exhausted
quota), and decoding the streamed body as Server-Sent Events or NDJSON.
Errors are mapped through ``_errors.py``, so no ``httpx`` exception leaves
unmapped, and the API key is redacted from every message.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import random
import time
import zlib
from typing import TYPE_CHECKING, Any, Final

import anyio
import httpx

from .. import _telemetry
from .._exceptions import (
    ProviderError,
    ProviderStatusError,
    ProviderStreamError,
    ProviderUnavailable,
)
from .._resources import AsyncResource
from ._body import ACCEPT_ENCODING, BodyDecoder, BodyTooLarge, UnsupportedEncoding
from ._errors import error_message, mapped_httpx_errors, status_error
from ._ndjson import NDJSONDecoder
from ._sse import ServerSentEvent, SSEDecoder

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Iterator, Mapping


__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_MAX_RETRY_WAIT",
    "DEFAULT_READ_TIMEOUT",
    "DEFAULT_REPLY_TIMEOUT",
    "HTTPProvider",
]

logger = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT: Final = 10.0
DEFAULT_READ_TIMEOUT: Final = 120.0
"""Longest silence allowed between two chunks of a reply (models can think for a while)."""
DEFAULT_MAX_RETRIES: Final = 2
DEFAULT_MAX_RETRY_WAIT: Final = 60.0
"""A ``Retry-After`` longer than this is not waited out: the error is raised at once."""
DEFAULT_REPLY_TIMEOUT: Final = 600.0
"""Longest a whole reply may take, from the request to its last byte."""
DEFAULT_MAX_BODY_BYTES: Final = 64 << 20
"""Largest reply body read (decompressed): a streamed reply carries framing around
its text, so this is many times the largest message a session stores."""
_BACKOFF_BASE: Final = 0.5
_BACKOFF_MAX: Final = 8.0
_MAX_ERROR_BODY: Final = 64 * 1024


class _State(enum.Enum):
    OPEN = enum.auto()
    CLOSED = enum.auto()


class _Secret:
    """Holds the API key so that no repr, log or traceback local shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "_Secret('***')"

    __str__ = __repr__


class HTTPProvider(AsyncResource):
    """Base for providers that stream a reply over one ``httpx.AsyncClient``.

    Subclasses build the request (URL, headers, body) and translate what
    arrives: Server-Sent Events (``_stream_events``) or NDJSON lines
    (``_stream_lines``), both decoded from the same raw byte stream
    (``_stream_body``). This class sends the request, retries what is safe to
    retry, maps errors, and closes the response as soon as the consumer stops.
    """

    _provider_name: str = "provider"

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str,
        client: httpx.AsyncClient | None,
        connect_timeout: float | None,
        read_timeout: float | None,
        max_retries: int,
        max_retry_wait: float,
        retry_backoff: float,
        reply_timeout: float | None = DEFAULT_REPLY_TIMEOUT,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if reply_timeout is not None and not reply_timeout > 0:
            raise ValueError(f"reply_timeout must be > 0 seconds or None, got {reply_timeout!r}")
        if not (isinstance(max_body_bytes, int) and max_body_bytes > 0):
            raise ValueError(f"max_body_bytes must be a positive int, got {max_body_bytes!r}")
        self.reply_timeout = reply_timeout
        self.max_body_bytes = max_body_bytes
        self._api_key = _Secret(api_key) if api_key else None
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self.retry_backoff = retry_backoff
        self._state = _State.OPEN
        # None: a borrowed client keeps its own timeouts unless ours were given.
        self._timeout: httpx.Timeout | None = None
        given = connect_timeout is not None or read_timeout is not None
        if client is None:
            self._timeout = httpx.Timeout(
                DEFAULT_READ_TIMEOUT if read_timeout is None else read_timeout,
                connect=DEFAULT_CONNECT_TIMEOUT if connect_timeout is None else connect_timeout,
            )
            self._client = httpx.AsyncClient(timeout=self._timeout)
            self._owns_client = True
        else:
            if given:
                base = client.timeout
                self._timeout = httpx.Timeout(
                    connect=base.connect if connect_timeout is None else connect_timeout,
                    read=base.read if read_timeout is None else read_timeout,
                    write=base.write,
                    pool=base.pool,
                )
            self._client = client
            self._owns_client = False

    def __repr__(self) -> str:
        model = getattr(self, "model", None)
        base_url = self._redact(self.base_url)  # in case the key rides in the URL
        return f"{type(self).__name__}(model={model!r}, base_url={base_url!r})"

    async def aclose(self) -> None:
        """Close the HTTP client if this provider created it. Safe to call twice."""
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        if self._owns_client:
            await self._client.aclose()

    # -- for subclasses -------------------------------------------------------

    def _redact(self, text: str) -> str:
        if self._api_key is not None:
            text = text.replace(self._api_key.reveal(), "***")
        return text

    def _check_open(self) -> None:
        if self._state is _State.CLOSED:
            raise ProviderError(f"{type(self).__name__} is closed")

    @contextlib.contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        with mapped_httpx_errors(self._provider_name, self._redact):
            yield

    async def _stream_events(
        self, url: str, body: Mapping[str, Any], headers: Mapping[str, str]
    ) -> AsyncGenerator[ServerSentEvent, None]:
        """POST ``body`` and yield the reply's Server-Sent Events as they arrive."""
        decoder = SSEDecoder()
        async with contextlib.aclosing(self._stream_body(url, body, headers)) as chunks:
            async for chunk in chunks:
                for event in decoder.feed(chunk):
                    yield event
        decoder.close()

    async def _stream_lines(
        self, url: str, body: Mapping[str, Any], headers: Mapping[str, str]
    ) -> AsyncGenerator[Any, None]:
        """POST ``body`` and yield the JSON value of each line of an NDJSON reply."""
        decoder = NDJSONDecoder()
        async with contextlib.aclosing(self._stream_body(url, body, headers)) as chunks:
            async for chunk in chunks:
                for value in self._decode_lines(decoder, chunk):
                    yield value
        for value in self._decode_lines(decoder, None):
            yield value

    def _decode_lines(self, decoder: NDJSONDecoder, chunk: bytes | None) -> list[Any]:
        try:
            return decoder.close() if chunk is None else decoder.feed(chunk)
        except ProviderStreamError as exc:
            # The decoder knows lines, not providers: say whose stream it was.
            raise ProviderStreamError(self._redact(f"{self._provider_name}: {exc}")) from exc

    async def _stream_body(
        self, url: str, body: Mapping[str, Any], headers: Mapping[str, str]
    ) -> AsyncGenerator[bytes, None]:
        """POST ``body`` and yield the raw bytes of a streamed reply as they arrive.

        Retries happen only inside ``_open``, before any byte is yielded. The
        response is closed in ``finally``, so closing this generator (or
        cancelling its consumer) drops the connection at once.
        """
        self._check_open()
        started = time.monotonic()
        response = await self._open(url, body, headers)
        try:
            content_type = response.headers.get("content-type", "")
            if content_type.startswith("application/json"):
                # A server that ignored ``stream: true`` or reports an error with a 200.
                raw = await self._read_prefix(response)
                detail = self._redact(error_message(raw) or raw[:200].decode("utf-8", "replace"))
                raise ProviderStreamError(
                    f"{self._provider_name}: expected a stream, got {content_type}: {detail}"
                )
            decoder = self._body_decoder(response, self.max_body_bytes)
            deadline = None if self.reply_timeout is None else started + self.reply_timeout
            with self._mapped_errors():
                async for raw in response.aiter_raw():
                    for piece in self._decoded(decoder, raw):
                        yield piece
                    if deadline is not None and time.monotonic() > deadline:
                        raise ProviderStreamError(
                            f"{self._provider_name}: the reply took longer than "
                            f"reply_timeout={self.reply_timeout:g}s and was abandoned"
                        )
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()

    def _body_decoder(self, response: httpx.Response, max_bytes: int) -> BodyDecoder:
        encoding = response.headers.get("content-encoding", "")
        try:
            return BodyDecoder(encoding, max_bytes)
        except UnsupportedEncoding:
            raise ProviderStreamError(
                f"{self._provider_name}: the reply is {encoding}-encoded; only gzip and "
                "deflate are accepted (and asked for)"
            ) from None

    def _decoded(self, decoder: BodyDecoder, raw: bytes) -> list[bytes]:
        try:
            return decoder.feed(raw)
        except BodyTooLarge:
            raise ProviderStreamError(
                f"{self._provider_name}: the reply passed max_body_bytes={decoder.max_bytes} "
                "and was abandoned"
            ) from None
        except zlib.error as exc:
            raise ProviderStreamError(
                f"{self._provider_name}: undecodable compressed reply: {exc}"
            ) from exc

    async def _open(
        self, url: str, body: Mapping[str, Any], headers: Mapping[str, str]
    ) -> httpx.Response:
        attempt = 0
        while True:
            try:
                with self._mapped_errors():
                    request = self._client.build_request(
                        "POST",
                        url,
                        json=body,
                        headers={"Accept-Encoding": ACCEPT_ENCODING, **headers},
                        timeout=(
                            httpx.USE_CLIENT_DEFAULT if self._timeout is None else self._timeout
                        ),
                    )
                    response = await self._client.send(request, stream=True)
            except ProviderUnavailable as exc:
                cause = exc.__cause__
                retryable = isinstance(
                    cause, (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError)
                )
                if not retryable or attempt >= self.max_retries:
                    raise
                await self._sleep_before_retry(attempt, None, str(exc))
                attempt += 1
                continue
            if response.is_success:
                return response
            error, retry_after, retryable = await self._status_error(response)
            if (
                not retryable
                or attempt >= self.max_retries
                or (retry_after is not None and retry_after > self.max_retry_wait)
            ):
                raise error
            await self._sleep_before_retry(attempt, retry_after, str(error))
            attempt += 1

    async def _sleep_before_retry(self, attempt: int, retry_after: float | None, why: str) -> None:
        if retry_after is None:
            # Full jitter: spreads out clients that failed together.
            cap = min(self.retry_backoff * 2**attempt, _BACKOFF_MAX)
            delay = random.uniform(0, cap)
        else:
            delay = retry_after
        telemetry = _telemetry.active
        if telemetry is not None:
            telemetry.retrying(self._provider_name, attempt + 1, delay)
        logger.info(
            "%s: retrying in %.2fs (retry %d of %d) after: %s",
            self._provider_name,
            delay,
            attempt + 1,
            self.max_retries,
            why,
        )
        await anyio.sleep(delay)

    async def _read_prefix(self, response: httpx.Response) -> bytes:
        """Up to 64 KiB of a (non-stream) body; a failed read returns what arrived."""
        raw = bytearray()
        try:
            # Decoded pieces are at most 64 KiB each: reading stops at the first
            # past the prefix, so no error body, compressed or not, is read whole.
            decoder = self._body_decoder(response, self.max_body_bytes)
            with self._mapped_errors():
                async for chunk in response.aiter_raw():
                    for piece in decoder.feed(chunk):
                        raw += piece
                    if len(raw) >= _MAX_ERROR_BODY:
                        break
        except (ProviderError, BodyTooLarge, zlib.error):
            pass  # what arrived, or the status alone, is still worth reporting
        return bytes(raw[:_MAX_ERROR_BODY])

    async def _status_error(
        self, response: httpx.Response
    ) -> tuple[ProviderStatusError, float | None, bool]:
        """Read (a bounded prefix of) an error reply: the error, its Retry-After, retryable?"""
        try:
            raw = await self._read_prefix(response)
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()
        return status_error(self._provider_name, response, raw, self._redact)
