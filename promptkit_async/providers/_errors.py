"""How an HTTP call to a provider fails, in our terms.

Every httpx exception maps to a :class:`ProviderError` subclass
(:func:`mapped_httpx_errors`, with a test that none escapes), and every non-2xx
reply to a :class:`ProviderStatusError` carrying the status, the provider's
own message, its request id and ``Retry-After`` (:func:`status_error`), and
whether retrying can help (:func:`quota_exhausted` says when it cannot). The
API key is redacted from every message built here.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import math
import time
from typing import TYPE_CHECKING, Any, Final

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

__all__ = [
    "error_message",
    "mapped_httpx_errors",
    "parse_retry_after",
    "quota_exhausted",
    "retryable_status",
    "status_error",
]

_RETRY_STATUSES: Final = frozenset({408, 409, 429})

# OpenAI: the ``code`` of a 429 whose ``type`` is ``insufficient_quota`` (older
# bodies say only the type). Sources: developers.openai.com/api/docs/guides/error-codes
# and help.openai.com/en/articles/6614457 (usage and spend limits).
_OPENAI_QUOTA_CODES: Final = frozenset(
    {
        "insufficient_quota",
        "credit_balance_exhausted",
        "organization_spend_limit_exceeded",
        "project_spend_limit_exceeded",
        "organization_usage_limit_exceeded",
    }
)
# Anthropic: ``error.details.error_code`` of a spend cap (SDK ``anthropic/_exceptions.py``
# ``APIStatusError.error_code``); these 429s come without ``retry-after``.
_ANTHROPIC_SPEND_CODES: Final = frozenset(
    {
        "enforced_spend_limit_reached",
        "contract_spend_limit_reached",
        "linked_organization_spend_limit_reached",
    }
)
# Lowercased phrases of billing messages that come with an ordinary error type:
# Anthropic's unfunded account is a 400 invalid_request_error; Gemini's depleted
# prepaid credits were a 429 before they became a 402.
_CREDIT_PHRASES: Final = ("credit balance is too low", "prepayment credits are depleted")


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


def _json_object(body: bytes | str) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def quota_exhausted(status_code: int, body: bytes | str) -> bool:
    """Whether an error reply says the quota or the credit is used up.

    Retrying such a reply cannot succeed before someone pays or the quota
    resets, so it is raised at once. An ordinary rate limit (also a 429) is
    not this. Recognised, from each provider's documented error bodies:

    - any 402 (Payment Required: only billing uses it);
    - OpenAI: ``error.type == "insufficient_quota"``, or a billing ``error.code``
      such as ``credit_balance_exhausted`` or ``project_spend_limit_exceeded``;
    - Anthropic: ``error.type == "billing_error"``, a spend-limit
      ``error.details.error_code``, or "credit balance is too low";
    - Gemini: ``RESOURCE_EXHAUSTED`` whose ``QuotaFailure`` names a per-day
      quota, or "prepayment credits are depleted".
    """
    if status_code == 402:
        return True
    if status_code not in (400, 429):
        return False
    data = _json_object(body)
    error = data.get("error") if data is not None else None
    if not isinstance(error, dict):
        return False
    if error.get("type") in ("insufficient_quota", "billing_error"):
        return True
    if error.get("code") in _OPENAI_QUOTA_CODES:
        return True
    details = error.get("details")
    if isinstance(details, dict) and details.get("error_code") in _ANTHROPIC_SPEND_CODES:
        return True
    if isinstance(details, list) and any(_per_day_quota(d) for d in details):
        return True
    message = error.get("message")
    return isinstance(message, str) and any(p in message.lower() for p in _CREDIT_PHRASES)


def _per_day_quota(detail: object) -> bool:
    """A google.rpc.QuotaFailure naming a daily quota (``...PerDay...`` quota id)."""
    if not isinstance(detail, dict):
        return False
    kind = detail.get("@type")
    if not isinstance(kind, str) or not kind.endswith("google.rpc.QuotaFailure"):
        return False
    violations = detail.get("violations")
    if not isinstance(violations, list):
        return False
    return any(isinstance(v, dict) and "PerDay" in str(v.get("quotaId", "")) for v in violations)


def retryable_status(status_code: int, body: bytes | str) -> bool:
    """Whether a reply with this status and body is worth sending again.

    408, 409, 429 and 5xx are, unless the body says the quota or credit is
    exhausted (:func:`quota_exhausted`).
    """
    if status_code not in _RETRY_STATUSES and status_code < 500:
        return False
    return not quota_exhausted(status_code, body)


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
) -> tuple[ProviderStatusError, float | None, bool]:
    """The error for a non-2xx ``response`` whose body began with ``raw``.

    Returns the error, the reply's Retry-After, and whether a retry can help.
    """
    body = redact(raw.decode("utf-8", "replace"))
    detail = error_message(raw)
    detail = redact(detail) if detail else response.reason_phrase or "no details"
    status = response.status_code
    request_id = response.headers.get("x-request-id") or response.headers.get("request-id")
    message = f"{provider}: HTTP {status}: {detail}"
    if request_id:
        message += f" (request id {request_id})"
    retry_after = parse_retry_after(response.headers)
    retryable = retryable_status(status, raw)
    if quota_exhausted(status, raw):
        message += " (quota or credit exhausted: not retried)"
    if status == 429:
        limited = RateLimited(
            message,
            status_code=status,
            body=body,
            request_id=request_id,
            retry_after=retry_after,
        )
        return limited, retry_after, retryable
    cls = ProviderAuthError if status in (401, 403) else ProviderStatusError
    error = cls(message, status_code=status, body=body, request_id=request_id)
    return error, retry_after, retryable
