"""How an HTTP call to a provider fails, in our terms.

Every httpx exception maps to a :class:`ProviderError` subclass
(:func:`mapped_httpx_errors`, with a test that none escapes), and every non-2xx
reply to a :class:`ProviderStatusError` carrying the status, the provider's
own message, its request id and ``Retry-After`` (:func:`status_error`). The
API key is redacted from every message built here.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import math
import time
from typing import TYPE_CHECKING

import httpx

from .._exceptions import (
    ProviderAuthError,
    ProviderError,
    ProviderStatusError,
    ProviderStreamError,
    ProviderUnavailable,
    RateLimited,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["error_message", "mapped_httpx_errors", "parse_retry_after", "status_error"]


def parse_retry_after(headers: httpx.Headers, *, now: float | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (delta-seconds or HTTP-date) or ``retry-after-ms``.

    Returns ``None`` when absent or unreadable; negative waits become ``0``.
    """
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            ms = float(raw_ms)
        except ValueError:
            ms = math.nan
        if math.isfinite(ms):
            return max(ms / 1000.0, 0.0)
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000" dates parse as naive; HTTP dates are GMT
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


def error_message(body: bytes) -> str | None:
    """The human message from an error body, in the shapes servers actually use."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if isinstance(error, dict):
        message = error.get("message")
        if isinstance(message, str) and message:
            return message
    if isinstance(error, str) and error:  # Ollama, llama.cpp
        return error
    for key in ("message", "detail"):  # FastAPI-based servers (vLLM) use "detail"
        value = data.get(key)
        if isinstance(value, str) and value:
            return value
    return None


@contextlib.contextmanager
def mapped_httpx_errors(provider: str, redact: Callable[[str], str]) -> Iterator[None]:
    """Map every httpx error to a :class:`ProviderError`, keeping the cause."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise ProviderUnavailable(
            redact(f"{provider}: timed out ({type(exc).__name__}: {exc})")
        ) from exc
    except httpx.DecodingError as exc:
        raise ProviderStreamError(redact(f"{provider}: undecodable response body: {exc}")) from exc
    except httpx.TransportError as exc:
        raise ProviderUnavailable(
            redact(f"{provider}: connection failed ({type(exc).__name__}: {exc})")
        ) from exc
    except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
        raise ProviderError(redact(f"{provider}: {type(exc).__name__}: {exc}")) from exc


def status_error(
    provider: str, response: httpx.Response, raw: bytes, redact: Callable[[str], str]
) -> tuple[ProviderStatusError, float | None]:
    """The error for a non-2xx ``response`` whose body began with ``raw``, and its Retry-After."""
    body = redact(raw.decode("utf-8", "replace"))
    detail = error_message(raw)
    detail = redact(detail) if detail else response.reason_phrase or "no details"
    status = response.status_code
    request_id = response.headers.get("x-request-id") or response.headers.get("request-id")
    message = f"{provider}: HTTP {status}: {detail}"
    if request_id:
        message += f" (request id {request_id})"
    retry_after = parse_retry_after(response.headers)
    if status == 429:
        limited = RateLimited(
            message,
            status_code=status,
            body=body,
            request_id=request_id,
            retry_after=retry_after,
        )
        return limited, retry_after
    cls = ProviderAuthError if status in (401, 403) else ProviderStatusError
    return cls(message, status_code=status, body=body, request_id=request_id), retry_after
